"""Build a PromptedModel from config, or rebuild one from a saved adapter."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ptv2.artifacts import read_adapter
from ptv2.config import Config
from ptv2.data.tasks import TaskData
from ptv2.errors import ArtifactError
from ptv2.model.backbone import load_backbone
from ptv2.model.prompted import PromptedModel


def task_info(td: TaskData) -> dict[str, Any]:
    """What a head needs, and what the artifact records about a task."""
    return {"type": td.spec.type, "labels": td.labels, "metrics": list(td.spec.metrics),
            "text_b": bool(td.spec.text_b), "n_out": max(1, len(td.labels))}


def model_meta(cfg: Config, tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"method": cfg.train.method, "backbone": asdict(cfg.backbone), "prompt": asdict(cfg.prompt),
            "head_dropout": cfg.train.head_dropout, "tasks": tasks}


def model_from_meta(meta: dict[str, Any], backbone=None, tokenizer=None, seed: int = 0):
    """(model, tokenizer) with fresh prompt/heads initialised from ``seed``."""
    if backbone is None:
        backbone, tokenizer = load_backbone(meta["backbone"]["name"])
    torch.manual_seed(seed)
    p = meta["prompt"]
    model = PromptedModel(
        backbone, {n: (t["type"], t["n_out"]) for n, t in meta["tasks"].items()}, method=meta["method"],
        pooling=meta["backbone"]["pooling"], prompt_length=p["length"], reparam=p["reparam"],
        reparam_hidden=p["reparam_hidden"], prompt_dropout=p["dropout"], head_dropout=meta["head_dropout"])
    return model, tokenizer


def load_model(path: str | Path, backbone=None, tokenizer=None):
    """Rebuild (model, tokenizer, meta) from a saved folder; weights must match exactly."""
    state, meta = read_adapter(path)
    model, tokenizer = model_from_meta(meta, backbone, tokenizer)
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected = set(model.trainable_state())
    if unexpected or expected - set(state):
        raise ArtifactError(f"{path}: weights do not fit the model: missing {sorted(expected - set(state))[:5]}, "
                            f"unexpected {sorted(unexpected)[:5]}")
    model.eval()
    return model, tokenizer, meta


def init_from_pretrained(model: PromptedModel, meta: dict[str, Any], path: str | Path, task: str,
                         init_head: bool = True) -> list[str]:
    """Copy the pretrained shared prompt (and ``task``'s head, when the mixture had it with the same
    labels) into ``model``. Returns the copied keys. Shapes and backbone must match."""
    state, pre = read_adapter(path)
    if pre["backbone"]["name"] != meta["backbone"]["name"]:
        raise ArtifactError(f"{path}: pretrained on backbone {pre['backbone']['name']!r}, "
                            f"but this run uses {meta['backbone']['name']!r}")
    if pre["prompt"] != meta["prompt"]:
        raise ArtifactError(f"{path}: prompt config {pre['prompt']} differs from params.yaml's {meta['prompt']}; "
                            f"adapt with the same prompt settings")
    keys = [k for k in state if k.startswith("prompt.")]
    same_head = task in pre["tasks"] and pre["tasks"][task]["labels"] == meta["tasks"][task]["labels"] \
        and pre["tasks"][task]["type"] == meta["tasks"][task]["type"]
    if init_head and same_head:
        keys += [k for k in state if k.startswith(f"heads.{task}.")]
    own = model.state_dict()
    model.load_state_dict({**own, **{k: state[k] for k in keys}})
    return keys
