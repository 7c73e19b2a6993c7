"""Serve the scheduled retraining deployment (needs `prefect server start` running):

    prefect server start &            # schedules run only on a real server
    python flows/serve.py             # cron from params.yaml flows.retrain_cron
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import serve  # noqa: E402
from prefect.schedules import Cron  # noqa: E402

from flows.pipeline import ROOT, retrain  # noqa: E402
from ptv2.config import load_config  # noqa: E402
from ptv2.errors import exit_2_on_user_error  # noqa: E402


def retrain_deployment(root: Path = ROOT, cron: str | None = None):
    # a cron from the command line is checked as flows.retrain_cron is (one line, not Prefect's traceback)
    cfg = load_config(root / "params.yaml", [f"flows.retrain_cron={json.dumps(cron)}"] if cron else [])
    schedule = Cron(cfg.flows.retrain_cron, timezone=cfg.flows.timezone)
    return retrain.to_deployment(
        name="scheduled-retrain", schedules=[schedule], parameters={"root": str(root)},
        concurrency_limit=1, tags=["ptv2"], description="dvc repro + registry promotion gate")


if __name__ == "__main__":
    with exit_2_on_user_error():
        deployment = retrain_deployment(cron=sys.argv[1] if len(sys.argv) > 1 else None)
    serve(deployment)
