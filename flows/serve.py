"""Serve the scheduled retraining deployment (needs `prefect server start` running):

    prefect server start &            # schedules run only on a real server
    python flows/serve.py             # cron from params.yaml flows.retrain_cron
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptv2.procenv import exit_2_on_missing_package  # noqa: E402

with exit_2_on_missing_package():  # run by a Python outside the project's venv: one line, not a traceback
    from flows.pipeline import ROOT, check_prefect_api, retrain  # (first: it sets Prefect's environment)
    from prefect import serve
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron
    from ptv2.config import load_config
    from ptv2.errors import ConfigError, exit_2_on_user_error
    from ptv2.orchestration.dvc_graph import check_remote


def deployment_name(root: Path) -> str:
    """The project's own deployment name: every project named it "scheduled-retrain", so two projects on one
    Prefect server shared one deployment, and one project's runner ran the runs the other had scheduled (their
    pipeline, in its folder). The folder's name for people, a hash of its path to keep two folders apart."""
    import hashlib
    import re

    where = Path(root).resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", where.name).strip("-.")[:40] or "project"
    return f"retrain-{slug}-{hashlib.sha256(str(where).encode()).hexdigest()[:8]}"


def retrain_deployment(root: Path = ROOT, cron: str | None = None):
    # a cron from the command line is checked as flows.retrain_cron is (one line, not Prefect's traceback)
    cfg = load_config(root / "params.yaml", [f"flows.retrain_cron={json.dumps(cron)}"] if cron else [])
    check_remote(root, cfg.flows.dvc_remote)  # each scheduled run would push there
    schedule = Cron(cfg.flows.retrain_cron, timezone=cfg.flows.timezone)
    # one run at a time; a run that comes due while one is still going is cancelled, not queued: queued, a
    # 1-minute cron under a 10-minute pipeline grew a backlog without end (each a no-op once its turn came)
    one = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    return retrain.to_deployment(
        name=deployment_name(root), schedules=[schedule], parameters={"root": str(root)},
        concurrency_limit=one, tags=["ptv2"], description="dvc repro + registry promotion gate")


def check_prefect_server(url: str | None) -> None:
    """A schedule needs a Prefect server of its own at ``url`` (PREFECT_API_URL) that answers: without one
    Prefect starts a temporary server that runs no scheduler (the cron never fires, silently)."""
    if not url:
        raise ConfigError("a schedule needs a Prefect server: run `prefect server start` and export "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api (without it Prefect starts a temporary server "
                          "that runs no scheduler, so the cron would never fire)")
    check_prefect_api(url, "start it (prefect server start) or fix the URL")


if __name__ == "__main__":
    import argparse

    from prefect.settings import PREFECT_API_URL

    p = argparse.ArgumentParser(prog="python flows/serve.py", description="Serve the scheduled retraining "
                                "deployment (dvc repro + the promotion gate) on the Prefect server at PREFECT_API_URL.")
    p.add_argument("cron", nargs="?", help="a 5-field cron string, e.g. '0 3 * * *' (default: params.yaml "
                   "flows.retrain_cron)")
    cron = p.parse_args().cron  # `--help` was read as the cron ("flows.retrain_cron = '--help' is not allowed")
    with exit_2_on_user_error():
        deployment = retrain_deployment(cron=cron)
        check_prefect_server(PREFECT_API_URL.value())
    serve(deployment)
