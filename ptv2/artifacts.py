"""Save/load what a method trains (safetensors + JSON, like a PEFT adapter), atomically.

A saved model is a folder: ``adapter.safetensors`` (prompt + heads; the whole backbone too for
``finetune``) and ``adapter_config.json`` (backbone name, method, prompt and head shapes, label
sets, and the sha256 of the weights). Folders are built under a temp name and renamed into
place, so a killed run never leaves a half-written model.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ptv2.errors import ArtifactError
from ptv2.files import atomic_write_text, sha256  # noqa: F401  (re-exported)

WEIGHTS, CONFIG = "adapter.safetensors", "adapter_config.json"
FORMAT = "ptv2-adapter/1"


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written ``tmp`` folder into ``target`` (old one removed after the swap)."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_adapter(out: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write weights + config into ``out`` atomically; returns the folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS))
    cfg = dict(meta, format=FORMAT, weights_sha256=sha256(tmp / WEIGHTS))
    (tmp / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True))
    replace_dir(tmp, out)
    return out


def read_adapter(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load (state, meta); a missing, foreign or tampered folder raises ArtifactError."""
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise ArtifactError(f"{str(path)!r} is not a ptv2 model folder (needs {CONFIG} and {WEIGHTS}); "
                            f"train one with 'ptv2 train'")
    meta = json.loads((path / CONFIG).read_text())
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if verify and sha256(path / WEIGHTS) != meta.get("weights_sha256"):
        raise ArtifactError(f"{path / WEIGHTS}: checksum mismatch (file changed or truncated); retrain or restore it")
    return load_file(str(path / WEIGHTS)), meta
