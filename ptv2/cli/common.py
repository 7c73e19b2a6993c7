"""What every command shares: its config, loaded once, and how a run's result is printed."""
from __future__ import annotations

import argparse
import json


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
