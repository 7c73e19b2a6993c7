"""Run keys: what a training run depends on, so a finished run is reused and a stale one is not.

A key covers the seed, data root, backbone, prompt, the train settings of the run's own method
(another method's learning rate does not invalidate it), the task specs, the epochs this run
trains, the mixture for pretraining, and for adaptation the start prompt's *weights* checksum
(not its path: re-pretraining invalidates what was adapted from it).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from ptv2.config import Config
from ptv2.files import sha256
from ptv2.training.artifacts import weights_sha


def run_key(cfg: Config, tasks: list[str], mixture: bool = False, init_from: str | Path | None = None) -> str:
    m = cfg.train.method
    # results do not depend on how many processes or threads computed them
    train = {k: v for k, v in asdict(cfg.train).items() if k not in ("lr", "epochs", "processes", "num_threads")}
    parts: dict[str, object] = {
        "seed": cfg.seed, "data_root": cfg.data_root, "backbone": asdict(cfg.backbone), "prompt": asdict(cfg.prompt),
        "train": train, "method": m, "lr": cfg.train.lr[m],
        "tasks": {t: {k: v for k, v in asdict(cfg.task(t)).items() if k != "epochs"} for t in tasks}}
    if mixture:
        parts["pretrain"] = {k: v for k, v in asdict(cfg.pretrain).items() if k not in ("out_dir", "tasks")}
    else:
        parts["epochs"] = cfg.epochs_for(tasks[0], init_from is not None)
    if init_from is not None:
        parts["init_head"] = cfg.adapt.init_head
        parts["init_sha"] = weights_sha(init_from)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def eval_data_sha(cfg: Config, task: str, split: str = "dev") -> str:
    """Fingerprint of the eval data: the split's file bytes + the task spec (how it is read)."""
    spec = cfg.task(task)
    h = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    if split in spec.files:
        h.update(sha256(cfg.data_path(spec.files[split])).encode())
    return h.hexdigest()[:16]
