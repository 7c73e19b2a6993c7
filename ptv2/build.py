"""Build a PromptedModel from config, or rebuild one from a saved adapter."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ptv2.artifacts import read_adapter
from ptv2.config import Config
from ptv2.data.tasks import TaskData
from ptv2.errors import ArtifactError, ConfigError
from ptv2.model.backbone import load_backbone
from ptv2.model.prompted import ADAPTERS, PromptedModel


def task_info(td: TaskData) -> dict[str, Any]:
    """What a head needs, and what the artifact records about a task."""
    return {"type": td.spec.type, "labels": td.labels, "metrics": list(td.spec.metrics),
            "text_b": bool(td.spec.text_b), "n_out": max(1, len(td.labels))}


def model_meta(cfg: Config, tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"method": cfg.train.method, "backbone": asdict(cfg.backbone), "prompt": asdict(cfg.prompt),
            "head_dropout": cfg.train.head_dropout, "tasks": tasks}


def artifact_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The meta saved with an artifact: Prefix-Tuning is stored folded, as a plain P-Tuning v2 prompt."""
    if meta["method"] != "prefix_tuning":
        return meta
    return {**meta, "method": "ptv2", "trained_as": "prefix_tuning", "prompt": {**meta["prompt"], "reparam": False}}


def _method_options(meta: dict[str, Any], tokenizer: Any, seed: int, total_steps: int) -> dict[str, Any]:
    """Token ids and options the method needs (tokenizer look-ups stay out of the model code)."""
    p = meta["prompt"]
    extra: dict[str, Any] = {k: p.get(k) for k in ("init", "encoder", "lora_r", "lora_alpha", "lora_dropout",
                                                   "lora_targets") if p.get(k) is not None}
    extra.update(seed=seed, total_steps=total_steps)
    if meta["method"] == "prompt_tuning" and p.get("init") == "words":
        extra["init_ids"] = tokenizer(p.get("init_words", ""), add_special_tokens=False)["input_ids"]
    if meta["method"] == "ptuning_v1":
        template = (p.get("template") or " ".join(["[v]"] * p["length"])).split()
        extra["template"] = template
        extra["anchor_ids"] = {w: tokenizer(w, add_special_tokens=False)["input_ids"] for w in template if w != "[v]"}
    return extra


def model_from_meta(meta: dict[str, Any], backbone=None, tokenizer=None, seed: int = 0, total_steps: int = 1000):
    """(model, tokenizer) with fresh prompt/heads initialised from ``seed``."""
    method = meta["method"]
    if method == "qlora":
        backbone, tokenizer, method = _qlora_backbone(meta), tokenizer or load_backbone(meta["backbone"]["name"])[1], "lora"
    if backbone is None:
        backbone, tokenizer = load_backbone(meta["backbone"]["name"])
    torch.manual_seed(seed)
    p = meta["prompt"]
    model = PromptedModel(
        backbone, {n: (t["type"], t["n_out"]) for n, t in meta["tasks"].items()}, method=method,
        pooling=meta["backbone"]["pooling"], prompt_length=p["length"], reparam=p["reparam"],
        reparam_hidden=p["reparam_hidden"], prompt_dropout=p["dropout"], head_dropout=meta["head_dropout"],
        extra=_method_options(meta, tokenizer, seed, total_steps), task_rank=meta.get("task_rank", 0))
    return model, tokenizer


def _qlora_backbone(meta: dict[str, Any]):
    """4-bit base for QLoRA: needs a CUDA GPU and bitsandbytes; a clear error otherwise."""
    if not torch.cuda.is_available():
        raise ConfigError("method 'qlora' needs a CUDA GPU (4-bit bitsandbytes kernels); this machine has none. "
                          "Use method 'lora' on CPU")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import AutoModel, BitsAndBytesConfig
    except ImportError:
        raise ConfigError("method 'qlora' needs bitsandbytes: pip install bitsandbytes") from None
    from peft import prepare_model_for_kbit_training

    from ptv2.model.backbone import resolve

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    return prepare_model_for_kbit_training(AutoModel.from_pretrained(resolve(meta["backbone"]["name"]),
                                                                     quantization_config=q, device_map={"": 0}))


def reusable_backbone(model: PromptedModel):
    """The backbone object to share with another model, or None when the method changed it in place
    (peft injects its adapter layers into the backbone: a second model needs a fresh one)."""
    return None if model.method in ADAPTERS else model.backbone


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
    """Copy the pretrained shared parameters of the method (the deep prompt; input prompt, LoRA
    weights or whole backbone for the other methods) and ``task``'s head, when the mixture had it
    with the same labels, into ``model``. Returns the copied keys. Method, shapes, backbone must match."""
    state, pre = read_adapter(path)
    if pre["backbone"]["name"] != meta["backbone"]["name"]:
        raise ArtifactError(f"{path}: pretrained on backbone {pre['backbone']['name']!r}, "
                            f"but this run uses {meta['backbone']['name']!r}")
    if pre["method"] != meta["method"]:
        hint = " (a Prefix-Tuning prompt is stored folded: adapt it with method ptv2)" \
            if pre.get("trained_as") == "prefix_tuning" else ""
        raise ArtifactError(f"{path}: pretrained with method {pre['method']!r}, this run uses {meta['method']!r}; "
                            f"adapt with the pretrained method{hint}")
    if pre["prompt"] != meta["prompt"]:
        raise ArtifactError(f"{path}: prompt config {pre['prompt']} differs from params.yaml's {meta['prompt']}; "
                            f"adapt with the same prompt settings")
    keys = [k for k in state if not k.startswith(("heads.", "task_factors."))]  # what the mixture shared
    if pre.get("task_rank") and task in pre["tasks"] and "prompt.prefix" in state:
        # a mixture task starts from its own prompt: the shared one times its low-rank factor
        factor = state[f"task_factors.u.{task}"] @ state[f"task_factors.v.{task}"]
        state = {**state, "prompt.prefix": state["prompt.prefix"] * factor}
    same_head = task in pre["tasks"] and pre["tasks"][task]["labels"] == meta["tasks"][task]["labels"] \
        and pre["tasks"][task]["type"] == meta["tasks"][task]["type"]
    if init_head and same_head:
        keys += [k for k in state if k.startswith(f"heads.{task}.")]
    own = model.state_dict()
    bad = [k for k in keys if k not in own or own[k].shape != state[k].shape]
    if bad:
        raise ArtifactError(f"{path}: pretrained tensors {bad[:3]} do not fit this {meta['method']} model; "
                            f"adapt with the settings it was pretrained with")
    model.load_state_dict({**own, **{k: state[k] for k in keys}})
    return keys
