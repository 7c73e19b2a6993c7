"""The training commands: ``train``, ``baseline``, ``pretrain``, ``adapt``, ``compare``, ``transfer``."""
from __future__ import annotations

import argparse
from pathlib import Path

import logging
import os

from ptv2.cli.common import config_of, names as _names, report, seeds as _seeds
from ptv2.config import Config
from ptv2.errors import ConfigError


def _config(args: argparse.Namespace) -> Config:
    """``config_of(args)``, with a word where ``train.processes`` > 1 asks for data parallelism that only the DVC
    stages launch themselves: `ptv2 train --set train.processes=4` ran one process, silently."""
    cfg = config_of(args)
    n = cfg.train.processes
    if n > 1 and "WORLD_SIZE" not in os.environ:  # not already one of torchrun's / accelerate's processes
        logging.getLogger("ptv2").warning(
            "train.processes = %d: the pipeline's stages launch that many processes; `ptv2 %s` runs as this one "
            "(for data parallel: torchrun --standalone --nproc_per_node %d -m ptv2 %s ...)", n, args.command, n,
            args.command)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from ptv2.training.driver import train

    cfg = _config(args)
    task = args.task or cfg.run.task
    out = Path(args.out or Path(cfg.run.out_dir) / task / cfg.train.method)
    report(train(cfg, [task], out))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from ptv2.model.spec import FROZEN
    from ptv2.training.driver import train

    cfg = _config(args)
    task = args.task or cfg.run.task
    out = Path(args.out or Path(cfg.run.out_dir) / task / FROZEN)
    report(train(cfg, [task], out, frozen=True))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ptv2.training.driver import pretrain

    cfg = _config(args)
    report(pretrain(cfg, args.out, _names("--tasks", args.tasks, []) or None))
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from ptv2.training.driver import adapt

    cfg = _config(args)
    report(adapt(cfg, args.task, getattr(args, "from"), args.out))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ptv2.experiments.compare import compare

    cfg = config_of(args)
    c = cfg.compare
    tasks = _names("--tasks", args.tasks, c.tasks)
    one_seed = _names("--one-seed", args.one_seed, c.one_seed)
    stray = [t for t in one_seed if t not in tasks] if args.one_seed is not None else []
    if stray:  # a misspelt large task would otherwise run every seed, in silence (params.yaml's list is checked)
        raise ConfigError(f"--one-seed {','.join(stray)} is not one of the tasks {tasks}: name tasks that run")
    compare(cfg, tasks, _names("--methods", args.methods, c.methods), _seeds(args.seeds, c.seeds),
            Path(args.out or c.out), Path(args.work or c.work), one_seed=tuple(one_seed), track=not args.no_track)
    return 0


DEFAULT_HELD_OUT = ("rte", "cb")  # transfer's (d) by default: the NLI pair, where a mixture could help most


def cmd_transfer(args: argparse.Namespace) -> int:
    from ptv2.experiments.transfer import transfer

    cfg = config_of(args)
    tasks = _names("--tasks", args.tasks, [])
    held_out = (_names("--held-out", args.held_out, []) if args.held_out is not None
                else [t for t in DEFAULT_HELD_OUT if t in tasks])
    transfer(cfg, tasks, held_out, _seeds(args.seeds, []), Path(args.out), Path(args.work))
    return 0
