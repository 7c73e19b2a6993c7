"""Prefect flows: the full pipeline (DVC graph), pretrain, the adapt fan-out, and retraining.

Retries come from params.yaml (``flows.retries``, ``flows.retry_delay_s``); the DVC graph is
dvc.yaml's, run through ``ptv2.tracking.orchestrate``."""
from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger, task

from ptv2.config import load_config
from ptv2.tracking.orchestrate import promotions, reproduce

ROOT = Path(os.environ.get("PTV2_ROOT", Path(__file__).resolve().parents[1]))


@task
def dvc_reproduce(root: str, targets: list[str] | None = None) -> list[str]:
    return reproduce(root, targets)


def _retrying(root: str):
    """``dvc_reproduce`` with the retry policy of the project's params.yaml."""
    f = load_config(Path(root) / "params.yaml").flows
    return dvc_reproduce.with_options(retries=f.retries, retry_delay_seconds=f.retry_delay_s)


@flow(name="ptv2-pipeline")
def pipeline(root: str = str(ROOT), targets: list[str] | None = None) -> list[str]:
    """Run the DVC pipeline (no-op when data, params and code are unchanged)."""
    return _retrying(root)(root, targets)


@flow(name="ptv2-pretrain")
def pretrain(root: str = str(ROOT)) -> list[str]:
    """Multi-task prompt pretraining (the DVC `pretrain` stage and what it needs)."""
    return _retrying(root)(root, ["pretrain"])


@flow(name="ptv2-adapt")
def adapt(root: str = str(ROOT), tasks: list[str] | None = None) -> dict[str, list[str]]:
    """Fan out over tasks (one DVC stage each). The task runner comes from flows.task_runner;
    DVC's repo lock serializes the stages themselves on one machine."""
    names = tasks or load_config(Path(root) / "params.yaml").adapt.tasks
    one = _retrying(root)
    futures = {t: one.submit(root, [f"adapt@{t}"]) for t in names}
    return {t: f.result() for t, f in futures.items()}


def task_runner(kind: str, max_workers: int):
    """Thread pool by default; Dask or Ray through prefect-dask / prefect-ray when installed."""
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner()
    if kind == "ray":
        from prefect_ray import RayTaskRunner

        return RayTaskRunner()
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max_workers)


def configured_adapt(root: str = str(ROOT), tasks: list[str] | None = None) -> dict[str, list[str]]:
    """The adapt fan-out with the task runner named in params.yaml."""
    f = load_config(Path(root) / "params.yaml").flows
    return adapt.with_options(task_runner=task_runner(f.task_runner, f.max_workers))(root, tasks)


@flow(name="ptv2-retrain")
def retrain(root: str = str(ROOT)) -> dict:
    """Scheduled retraining: reproduce (no-op when nothing changed), register what changed,
    apply the promotion gate (in the promote stages), report what happened."""
    logger = get_run_logger()
    ran = _retrying(root)(root)
    decisions = promotions(root, ran)
    for d in decisions:
        logger.info("%s: v%s %s (%s)", d["task"], d["version"], "PROMOTED" if d["promoted"] else "kept champion",
                    d["reason"])
    if not ran:
        logger.info("nothing changed: no stage ran, no new model version")
    return {"ran": ran, "promotions": decisions}
