"""Training checkpoints: what a killed run resumes from (``<out>/checkpoint``).

A checkpoint holds the trainable tensors (``trainable.safetensors``), the optimizer and schedule state
(``optim.pt``, read with ``weights_only=True``) and ``state.json``: the loop's state, the run key it belongs to
and the sha256 of both files. It is written atomically and verified before any of it is loaded. One from
another config, or damaged (a file changed, truncated or missing, its state unreadable), is dropped with a
warning and the run starts fresh: a checkpoint only saves time, it never decides a result. So is one whose
model folder beside it (``<out>/model``, the best epoch so far, which the checkpoint does not hold) is missing
or fails its manifest.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ptv2.errors import ArtifactError
from ptv2.files import atomic_dir, sha256
from ptv2.model.prompted import PromptedModel
from ptv2.training.artifacts import verify_model_dir

log = logging.getLogger(__name__)

WEIGHTS, OPTIM, STATE = "trainable.safetensors", "optim.pt", "state.json"


def fresh_state() -> dict[str, Any]:
    """The loop's state before epoch 0."""
    return {"epoch": 0, "best_score": -math.inf, "top_score": -math.inf, "best_epoch": 0, "bad_epochs": 0,
            "history": [], "seconds": 0.0}


def is_checkpoint(path: Path) -> bool:
    """A folder ``save_checkpoint`` wrote (what a rerun may replace)."""
    return (path / STATE).is_file()


def save_checkpoint(ck: Path, model: PromptedModel, opt, sched, state: dict[str, Any], fingerprint: str) -> None:
    """Write ``ck`` whole or not at all, with each file's sha256 in its state."""
    with atomic_dir(ck, is_checkpoint, "a training checkpoint") as tmp:
        trainable = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state(fold=False).items()}
        save_file(trainable, str(tmp / WEIGHTS))
        torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp / OPTIM)
        files = {name: sha256(tmp / name) for name in (WEIGHTS, OPTIM)}
        (tmp / STATE).write_text(json.dumps({"state": state, "fingerprint": fingerprint, "files": files}))


def resume(ck: Path, model: PromptedModel, opt, sched, fingerprint: str) -> dict[str, Any]:
    """The state saved in ``ck``, with ``model``, ``opt`` and ``sched`` loaded from it; a fresh state where there
    is no checkpoint, or one that is not this run's or fails its check (then it is removed, with a warning)."""
    if not is_checkpoint(ck):
        return fresh_state()
    saved, why = _verified(ck, fingerprint)
    if saved is None:
        log.warning("checkpoint %s %s; starting fresh", ck, why)
        shutil.rmtree(ck, ignore_errors=True)
        return fresh_state()
    optim = torch.load(ck / OPTIM, weights_only=True)
    try:  # before the model: a checkpoint that does not fit leaves nothing half-loaded
        opt.load_state_dict(optim["opt"])
    except ValueError as e:  # its parameter groups are another version's (a regression head's own group, session 38)
        log.warning("checkpoint %s does not fit this run's optimizer (%s); starting fresh", ck, e)
        shutil.rmtree(ck, ignore_errors=True)
        return fresh_state()
    model.load_state_dict(load_file(str(ck / WEIGHTS)), strict=False)
    sched.load_state_dict(optim["sched"])
    log.info("resumed from %s after epoch %d", ck, saved["state"]["epoch"])
    return saved["state"]


def _verified(ck: Path, fingerprint: str) -> tuple[dict[str, Any] | None, str]:
    """(the saved state, "") if ``ck`` is this run's and whole, else (None, why not)."""
    try:
        saved = json.loads((ck / STATE).read_text())
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        return None, f"is damaged ({STATE} unreadable: {e})"
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        return None, "is from a different config"
    files = saved.get("files")
    if not isinstance(files, dict) or set(files) != {WEIGHTS, OPTIM} or not isinstance(saved.get("state"), dict):
        return None, f"is damaged ({STATE} does not list its files and state)"
    for name, digest in files.items():
        path = ck / name
        if not path.is_file():
            return None, f"is damaged ({name} is missing)"
        if sha256(path) != digest:
            return None, f"is damaged ({name} does not match its sha256)"
    if saved["state"].get("best_score", -math.inf) > -math.inf:  # an epoch was kept: its weights are the model folder's
        try:
            verify_model_dir(ck.parent / "model")
        except ArtifactError as e:  # resumed, the run ended by reading it back: the checksum error for good
            return None, f"continues a model folder that is damaged ({e})"
    return saved, ""
