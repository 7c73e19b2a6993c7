"""What the Prefect flows call: run the DVC graph (serialized), and read what it decided.

DVC owns the graph and the cache (dvc.yaml); this module only asks it to reproduce, holding a
file lock so two runs never overlap (two `dvc repro` at once fail on DVC's own lock)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def pipeline_lock(root: Path) -> Iterator[None]:
    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    with open(root / ".dvc" / "tmp" / "ptv2-pipeline.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # waits for a running pipeline instead of failing
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def reproduce(root: str | Path, targets: list[str] | None = None) -> list[str]:
    """``dvc repro`` in-process; returns the names of the stages that actually ran."""
    from dvc.repo import Repo

    from ptv2.tracking import store as tracking
    from ptv2.config import load_config

    root = Path(root).resolve()
    cfg = load_config(root / "params.yaml")
    tracking.init_store(root, cfg.tracking.experiment)  # create the DB before any stage runs
    with pipeline_lock(root), contextlib.chdir(root):  # DVC resolves targets against the cwd
        with Repo(str(root)) as repo:
            stages = repo.reproduce(targets=targets or None)
    ran = [s.addressing for s in stages]
    log.info("dvc repro ran %d stage(s): %s", len(ran), ran or "nothing (up to date)")
    return ran


def promotions(root: str | Path, ran: list[str]) -> list[dict[str, Any]]:
    """Registry decisions of the promote stages that ran in this reproduce."""
    root = Path(root)
    out = []
    for name in ran:
        if name.startswith("promote@"):
            out.append(json.loads((root / "metrics/promote" / f"{name.split('@', 1)[1]}.json").read_text()))
    return out
