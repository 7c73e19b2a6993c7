"""Shared by the DVC stages: argument parsing and the config (the MLflow run around a stage is
``ptv2.tracking.store.tracked``)."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ptv2.config import Config, load_config

for _k, _v in {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1"}.items():
    os.environ.setdefault(_k, _v)


def parse(argv: list[str] | None, task: bool = False) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser()
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", action="append", default=[])
    if task:
        p.add_argument("--task", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return load_config(args.params, args.set), args


def root_of(args: argparse.Namespace) -> Path:
    return Path(args.params).resolve().parent
