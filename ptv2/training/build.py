"""ModelSpec from the config, PromptedModel from a ModelSpec, and back from a saved folder."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ptv2.backbone_files import backbone_sha
from ptv2.config import Config
from ptv2.data.collate import pad_rows
from ptv2.data.tasks import TaskData
from ptv2.errors import ArtifactError, ConfigError
from ptv2.model.backbone import BackboneUnavailable, load_backbone
from ptv2.model.prompted import ADAPTERS, DEEP, MethodInputs, PromptedModel, ptuning_template
from ptv2.model.spec import HeadSpec, ModelSpec
from ptv2.training.artifacts import read_adapter


def head_spec(cfg: Config, td: TaskData) -> HeadSpec:
    """What a head needs, and what the artifact records about a task."""
    return HeadSpec(type=td.spec.type, labels=list(td.labels), metrics=list(td.spec.metrics),
                    text_b=bool(td.spec.text_b), pair_encoding=cfg.pair_encoding(td.name))


def spec_from_config(cfg: Config, tasks: dict[str, HeadSpec], task_rank: int = 0) -> ModelSpec:
    """The one place config values become model settings."""
    b = cfg.backbone
    return ModelSpec(method=cfg.train.method, backbone=b.name, pooling=b.pooling, normalize=b.normalize,
                     max_length=b.max_length,
                     head_dropout=cfg.train.head_dropout, prompt=cfg.prompt_for(list(tasks)), tasks=tasks,
                     task_rank=task_rank, backbone_sha=backbone_sha(b.name))


def check_backbone_files(spec: ModelSpec, path: str | Path) -> None:
    """The backbone folder a saved model names still holds the files it was trained on; else one ArtifactError
    (a prompt and heads trained on other weights answer wrongly, with nothing to show it). Not checked: a model
    saved before this was recorded, or on a hub name."""
    now = backbone_sha(spec.backbone) if spec.backbone_sha else ""
    if now and now != spec.backbone_sha:
        raise ArtifactError(f"{path}: trained on backbone {spec.backbone!r}, whose files have changed since (sha256 "
                            f"{spec.backbone_sha[:12]} then, {now[:12]} now); retrain it on these weights (the "
                            f"pipeline's models: ./scripts/run.sh; your own: ptv2 train), or put the original "
                            f"backbone back")


def method_inputs(spec: ModelSpec, tokenizer: Any, seed: int, total_steps: int,
                  quiet: list[list[int]] | None = None) -> MethodInputs:
    """Token ids a method needs (tokenizer look-ups stay out of the model code). ``quiet``: sample training
    texts' token ids, for ``prompt.init: quiet`` (its margin is ``spec.prompt.quiet_margin``)."""
    init_ids: list[int] = []
    anchors: dict[str, list[int]] = {}
    if spec.method == "prompt_tuning" and spec.prompt.init == "words":
        init_ids = tokenizer(spec.prompt.init_words, add_special_tokens=False)["input_ids"]
    if spec.method == "ptuning_v1":
        anchors = {w: tokenizer(w, add_special_tokens=False)["input_ids"] for w in ptuning_template(spec) if w != "[v]"}
    context, positions = deep_prompt_tokens(spec, tokenizer, seed)
    ids, mask = _quiet_batch(spec, tokenizer, quiet)
    return MethodInputs(seed=seed, total_steps=total_steps, init_ids=init_ids, anchor_ids=anchors,
                        kv_context=context, kv_positions=positions, quiet_ids=ids, quiet_mask=mask)


def _quiet_batch(spec: ModelSpec, tokenizer: Any, quiet: list[list[int]] | None):
    """(ids, mask) of ``prompt.init: quiet``, padded to one batch; empty when not asked for (other
    inits, a saved model rebuilt: its weights replace any start). Which prompts can start quiet is the
    model's call (``PromptedModel``: plain deep prompts; the others start random, as params.yaml says)."""
    if spec.prompt.init != "quiet" or not quiet:
        return [], []
    ids, mask = pad_rows(quiet, tokenizer.pad_token_id or 0)
    return ids.tolist(), mask.tolist()


def deep_prompt_tokens(spec: ModelSpec, tokenizer: Any, seed: int) -> tuple[list[int], list[int]]:
    """Deep prompts with ``prompt.init`` words / vocab start as those tokens' keys and values: the tokenized
    text (with its special tokens) and the positions of the tokens to copy; ([], []) for random init."""
    p = spec.prompt
    if spec.method not in DEEP or p.init not in ("words", "vocab") or p.reparam or not p.length:
        return [], []
    if p.init == "words":
        words = tokenizer(p.init_words, add_special_tokens=False)["input_ids"]
        if not words:
            raise ConfigError("prompt.init 'words' needs prompt.init_words (text whose tokens start the prompt)")
    else:  # vocab: sampled rows (skip the first 1000 ids: special and rare tokens)
        g = torch.Generator().manual_seed(seed)
        words = torch.randint(min(1000, len(tokenizer) - 1), len(tokenizer), (p.length,), generator=g).tolist()
    first = [i for i in (tokenizer.cls_token_id,) if i is not None]  # BERT [CLS], RoBERTa <s>
    last = [i for i in (tokenizer.sep_token_id,) if i is not None]
    return first + words + last, list(range(len(first), len(first) + len(words)))


def model_from_spec(spec: ModelSpec, backbone=None, tokenizer=None, seed: int = 0, total_steps: int = 1000,
                    quiet: list[list[int]] | None = None):
    """(model, tokenizer) with fresh prompt/heads initialised from ``seed`` (``quiet``: see ``method_inputs``).
    Built around a given ``backbone``, the model lives on that backbone's device (CUDA, reused after training)."""
    device = next(backbone.parameters()).device if backbone is not None and spec.method != "qlora" else None
    if spec.method == "qlora":
        backbone, tokenizer = _qlora_backbone(spec), tokenizer or load_backbone(spec.backbone)[1]
        spec = dataclasses.replace(spec, method="lora")
    if backbone is None:
        backbone, tokenizer = load_backbone(spec.backbone)
    torch.manual_seed(seed)
    model = PromptedModel(backbone, spec, method_inputs(spec, tokenizer, seed, total_steps, quiet))
    return (model if device is None else model.to(device)), tokenizer


def check_method_runs_here(method: str) -> None:
    """A ConfigError for a method this machine cannot train (QLoRA without a CUDA GPU), before any work."""
    if method == "qlora" and not torch.cuda.is_available():
        raise ConfigError("method 'qlora' needs a CUDA GPU (4-bit bitsandbytes kernels); this machine has none. "
                          "Use method 'lora' on CPU")


def _qlora_backbone(spec: ModelSpec):
    """4-bit base for QLoRA: needs a CUDA GPU and bitsandbytes; a clear error otherwise."""
    check_method_runs_here("qlora")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import AutoModel, BitsAndBytesConfig
    except ImportError:
        raise ConfigError("method 'qlora' needs bitsandbytes: pip install bitsandbytes") from None
    from peft import prepare_model_for_kbit_training

    from ptv2.backbone_files import model_folder

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    return prepare_model_for_kbit_training(AutoModel.from_pretrained(model_folder(spec.backbone),
                                                                     quantization_config=q, device_map={"": 0}))


def reusable_backbone(model: PromptedModel):
    """The backbone object to share with another model, or None when the method changed it in place
    (peft injects its adapter layers into the backbone: a second model needs a fresh one)."""
    return None if model.method in ADAPTERS else model.backbone


def load_model(path: str | Path, backbone=None, tokenizer=None):
    """Rebuild (model, tokenizer, spec) from a saved folder; weights must match exactly."""
    state, spec = read_adapter(path)
    check_backbone_files(spec, path)
    try:
        model, tokenizer = model_from_spec(spec, backbone, tokenizer)
    except BackboneUnavailable as e:  # "set backbone.name" cannot help: the folder names its own backbone
        raise ArtifactError(f"{path}: its backbone {spec.backbone!r} cannot be loaded here ({e.reason}); a model "
                            f"folder holds only its prompt and heads: put that backbone at that path, or serve the "
                            f"model's ONNX bundle (`ptv2 export` where the backbone is; a bundle carries its "
                            f"encoder)") from None
    own, expected = model.state_dict(), set(model.trainable_state())
    unexpected = sorted(set(state) - set(own))
    bad_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(expected & set(state))
                 if own[k].shape != state[k].shape]
    if unexpected or expected - set(state) or bad_shape:
        raise ArtifactError(f"{path}: weights do not fit the spec: missing {sorted(expected - set(state))[:3]}, "
                            f"unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]}; retrain the model")
    model.load_state_dict(state, strict=False)
    model.eval()
    return model, tokenizer, spec


def check_pretrained(spec: ModelSpec, pre: ModelSpec, path: str | Path) -> None:
    """A pretrained model (spec ``pre``, saved at ``path``) can start a model of ``spec``: same backbone,
    method and prompt settings; else one ArtifactError naming the difference."""
    if pre.backbone != spec.backbone:
        raise ArtifactError(f"{path}: pretrained on backbone {pre.backbone!r}, but this run uses {spec.backbone!r}")
    check_backbone_files(pre, path)
    if pre.method != spec.method:
        hint = " (a Prefix-Tuning prompt is stored folded: adapt it with method ptv2)" \
            if pre.trained_as == "prefix_tuning" else ""
        raise ArtifactError(f"{path}: pretrained with method {pre.method!r}, this run uses {spec.method!r}; "
                            f"adapt with the pretrained method{hint}")
    theirs, ours = _prompt_settings(pre), _prompt_settings(spec)
    diff = sorted(k for k, v in theirs.items() if ours[k] != v)
    if "prompt.length" in diff and pre.prompt.length == 0:  # "other prompt settings (['prompt.length'])" said no more
        raise ArtifactError(f"{path} has no prompt to start from (prompt.length 0 there, {ours['prompt.length']} "
                            f"here: a frozen baseline?): adapt from a pretrained prompt (ptv2 pretrain's model, "
                            f"pretrain.out_dir/model)")
    if diff:
        what = ", ".join(f"{k} {theirs[k]!r} there, {ours[k]!r} here" for k in diff)
        raise ArtifactError(f"{path}: pretrained with other prompt settings ({what}); adapt with the same "
                            f"settings in params.yaml")


def init_from_pretrained(model: PromptedModel, path: str | Path, task: str, init_head: bool = True) -> list[str]:
    """Copy the pretrained shared parameters of the method (the deep prompt; input prompt, LoRA
    weights or whole backbone for the other methods) and ``task``'s head, when the mixture had it
    with the same labels, into ``model``. Returns the copied keys. Method, shapes, backbone must match."""
    state, pre = read_adapter(path)
    spec = model.spec
    check_pretrained(spec, pre, path)
    keys = [k for k in state if not k.startswith(("heads.", "task_factors."))]  # what the mixture shared
    if pre.task_rank and task in pre.tasks and "prompt.prefix" in state:
        # a mixture task starts from its own prompt: the shared one times its low-rank factor
        factor = state[f"task_factors.u.{task}"] @ state[f"task_factors.v.{task}"]
        state = {**state, "prompt.prefix": state["prompt.prefix"] * factor}
    same = task in pre.tasks and (pre.tasks[task].type, pre.tasks[task].labels) == (spec.tasks[task].type,
                                                                                  spec.tasks[task].labels)
    if init_head and same:
        keys += [k for k in state if k.startswith(f"heads.{task}.")]
    own = model.state_dict()
    bad = [k for k in keys if k not in own or own[k].shape != state[k].shape]
    if bad:
        raise ArtifactError(f"{path}: pretrained tensors {bad[:3]} do not fit this {spec.method} model; "
                            f"adapt with the settings it was pretrained with")
    model.load_state_dict({**own, **{k: state[k] for k in keys}})
    return keys


def _prompt_settings(spec: ModelSpec) -> dict[str, Any]:
    """The settings a pretrained prompt and its adaptation must share (not the heads, lineage or sequence length)."""
    skip = ("tasks", "task_rank", "trained_as", "mixture", "adapted_from", "head_dropout", "pooling", "max_length",
            "prompt", "backbone_sha")  # the backbone's files: check_backbone_files
    top = {k: v for k, v in spec.to_dict().items() if k not in skip}
    # quiet_margin only shapes a start, which the pretrained weights replace
    return {**top, **{f"prompt.{k}": v for k, v in dataclasses.asdict(spec.prompt).items() if k != "quiet_margin"}}
