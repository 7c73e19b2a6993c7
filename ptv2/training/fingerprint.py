"""Run keys: what a training run depends on, so a finished run is reused and a stale one is not.

A key covers the seed, data root, backbone (its settings and its files' bytes: ``backbone_sha``), prompt, the
train settings of the run's own method (another method's learning rate does not invalidate it), the task specs
and their files' bytes, the training code, the epochs this run trains, the mixture for pretraining, and for
adaptation the start prompt's *weights* checksum (not its path: re-pretraining invalidates what was adapted from it).
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from ptv2.backbone_files import backbone_sha
from ptv2.config import Config, TrainConfig
from ptv2.files import sha256
from ptv2.training.artifacts import weights_sha


@functools.lru_cache(maxsize=1)
def code_sha() -> str:
    """The training code itself (data, model and training packages): a changed loop retrains."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for pkg in ("data", "model", "training"):
        for f in sorted((root / pkg).glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def data_sha(cfg: Config, task: str) -> str:
    """The bytes of the task's files (every split it lists, label files too)."""
    spec, h = cfg.task(task), hashlib.sha256()
    for split, rel in sorted({**spec.files, **{f"{k}-labels": v for k, v in spec.label_files.items()}}.items()):
        path = cfg.data_path(rel)
        h.update(split.encode() + (sha256(path) if path.is_file() else "missing").encode())
    return h.hexdigest()[:16]


def learning_rate(train: TrainConfig) -> float:
    """The configured method's rate: what the optimizer uses and the run key hashes, read one way (``qlora``
    trains as LoRA on a 4-bit base but reads ``lr.qlora``)."""
    return train.lr[train.method]


def run_key(cfg: Config, tasks: list[str], mixture: bool = False, init_from: str | Path | None = None,
            frozen: bool = False) -> str:
    m = cfg.train.method
    # results do not depend on how many processes or threads computed them
    train = {k: v for k, v in asdict(cfg.train).items() if k not in ("lr", "epochs", "processes", "num_threads")}
    parts: dict[str, object] = {
        "seed": cfg.seed, "data_root": cfg.data_root, "backbone": asdict(cfg.backbone),
        "backbone_sha": backbone_sha(cfg.backbone.name), "prompt": asdict(cfg.prompt),
        "train": train, "method": m, "lr": learning_rate(cfg.train),
        "tasks": {t: {k: v for k, v in asdict(cfg.task(t)).items() if k != "epochs"} for t in tasks},
        "data": {t: data_sha(cfg, t) for t in tasks}, "code": code_sha()}
    if mixture:
        parts["pretrain"] = {k: v for k, v in asdict(cfg.pretrain).items() if k not in ("out_dir", "tasks")}
    else:
        parts["epochs"] = 0 if frozen else cfg.epochs_for(tasks[0], init_from is not None)
    if init_from is not None:
        parts["init_head"] = cfg.adapt.init_head
        parts["init_sha"] = weights_sha(init_from)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

