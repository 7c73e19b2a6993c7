"""Shared by the DVC stages: argument parsing, config, and the MLflow run around a stage."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

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


@contextlib.contextmanager
def tracked(cfg: Config, root: Path, stage: str, name: str) -> Iterator[tuple[Any, Callable[[dict], None]]]:
    """An MLflow run with the resolved config as params and lineage tags; yields (run, on_log)."""
    from ptv2 import tracking

    with tracking.start_run(root, cfg.tracking.experiment, name, cfg.to_dict(),
                            tracking.lineage_tags(root, stage)) as run:
        steps = {"n": 0}

        def on_log(row: dict[str, Any]) -> None:
            if "step_loss" in row:
                steps["n"] += 1
                run.log_metrics({"train/step_loss": row["step_loss"]}, step=steps["n"])
                return
            flat = {"train/epoch_loss": row["train_loss"], "val/score": row["val_score"]}
            for task, ms in row["val"].items():
                flat.update({f"val/{task}/{k}": v for k, v in ms.items()})
            run.log_metrics(flat, step=row["epoch"])

        yield run, on_log
