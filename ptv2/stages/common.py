"""Shared by the DVC stages: argument parsing and the config (the MLflow run around a stage is
``ptv2.tracking.store.tracked``)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable

from ptv2.config import Config, load_config, params_folder
from ptv2.errors import exit_2_on_user_error
from ptv2.procenv import reopen_closed_streams, set_quiet_defaults, sigterm_as_interrupt, stdout_written

set_quiet_defaults(HF_HUB_OFFLINE="1")


def parse(argv: list[str] | None, task: bool = False, paths: tuple[str, ...] = ()) -> tuple[Config, argparse.Namespace]:
    """The config and the arguments. ``paths``: the files and folders the stage reads or writes besides
    params.yaml's, each a required ``--<name>`` given by its command in dvc.yaml (one home: dvc.yaml)."""
    p = argparse.ArgumentParser()
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", action="append", default=[])
    if task:
        p.add_argument("--task", required=True)
    for name in paths:
        p.add_argument(f"--{name.replace('_', '-')}", required=True, type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return load_config(args.params, args.set), args


def root_of(args: argparse.Namespace) -> Path:
    return params_folder(args.params)


def run(main: Callable[[], None]) -> None:
    """A stage's entry point: a user error (config, data, artifact, tracking store) is one line on stderr
    and exit code 2, which ``dvc repro`` reports as the failed stage, never a traceback."""
    reopen_closed_streams()
    with exit_2_on_user_error(), sigterm_as_interrupt(), stdout_written():
        main()
