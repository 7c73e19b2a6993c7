"""What every command shares: its config, loaded once, how a run's result is printed, and how list and count
options are read (the bench scripts read theirs the same way)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ptv2.config.schema import check_seed
from ptv2.errors import ConfigError


def config_of(args: argparse.Namespace):
    """The command's config, loaded once (``main`` loads it before any command imports torch: a bad key is
    reported in well under a second)."""
    if getattr(args, "cfg", None) is None:
        from ptv2.config import comparison_config, load_config

        args.cfg = (comparison_config if args.command == "compare" else load_config)(args.params, args.set)
    return args.cfg


def summary(run) -> dict:
    r = run.record
    return {"tasks": r["tasks"], "model": str(run.model_dir), "metrics": r["metrics"], "best_epoch": r["best_epoch"],
            "trainable_pct": round(100 * r["trainable_params"] / r["total_params"], 3)}


def report(run) -> None:
    if run.main:  # under torchrun only rank 0 holds the results
        print(json.dumps(summary(run), indent=2))


def names(flag: str, value: str | None, default: list) -> list[str]:
    """A comma-separated option, each name once, or the params.yaml default when it is not given."""
    if value is None:
        return [str(x) for x in default]
    given = [x.strip() for x in value.split(",") if x.strip()]
    if not given:  # "," or " , ": taken as the option left out, `pretrain --tasks ,` ran the default mixture
        raise ConfigError(f"{flag} {value!r} names nothing: give comma-separated names, or leave the option out")
    twice = sorted({x for x in given if given.count(x) > 1})
    if twice:
        raise ConfigError(f"{flag} {value!r} names {twice[0]!r} twice: list each once")
    return given


def seeds(value: str | None, default: list) -> list[int]:
    """--seeds as integers: one line naming the value otherwise."""
    given = names("--seeds", value, default)
    if not given or not all(x.lstrip("-").isdigit() for x in given):
        raise ConfigError(f"--seeds {value!r} is not a comma-separated list of integers; e.g. --seeds 1,2,3")
    if len({int(x) for x in given}) != len(given):  # 1,01
        raise ConfigError(f"--seeds {value!r} names a seed twice: list each once")
    for x in given:  # before any run starts (a negative seed failed at its run, after the runs before it)
        check_seed("--seeds", int(x))
    return [int(x) for x in given]


def seed_list(value: str) -> list[int]:
    """An argparse type: ``seeds`` of a bench script's ``--seeds`` (argparse's one line, exit 2)."""
    try:
        return seeds(value, [])
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def count(value: str) -> int:
    """An argparse type: an integer ≥ 1 (rows, steps, repeats, a batch); 0 divided by zero or reshaped nothing."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer: give one ≥ 1") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is below 1: give an integer ≥ 1")
    return n


def counts(value: str) -> list[int]:
    """An argparse type: comma-separated integers ≥ 1 (the values a bench script tries), each once."""
    try:
        given = names("the list", value, [])
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return [count(x) for x in given]


def folder(value: str) -> Path:
    """An argparse type: a folder that exists (a project, or the runs a script reads), ``~`` expanded."""
    path = Path(value).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a folder: give an existing one")
    return path


def positive(value: str) -> float:
    """An argparse type: a finite number above 0 (a duration in seconds)."""
    x = _finite(value, "above 0")
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not above 0: give a number above 0, e.g. 30")
    return x


def non_negative(value: str) -> float:
    """An argparse type: a finite number, 0 or above (where 0 means "find it out")."""
    x = _finite(value, "0 or above")
    if x < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is below 0: give 0 or a number above it")
    return x


def _finite(value: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number: give one {what}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number: give one {what}")
    return x
