"""Export to ONNX, quantize to int8, write a verified deployment bundle, check parity.

Bundle layout (every file's sha256 in ``manifest.json``, verified on load):
  encoder.onnx           frozen backbone, deep prompt as input ``prefix`` (L, 2, B, H, P, D);
                         for merged LoRA/AdaLoRA or fine-tuned models: the task's own weights, no prefix;
                         for Prompt Tuning / P-Tuning v1: the task's input prompt as a constant, no prefix
  encoder.int8.onnx      the same, dynamic int8 weights
  tokenizer/             tokenizer files (served with the ``tokenizers`` library, no torch)
  tasks/<task>.safetensors  prompt (L, 2, H, P, D; deep-prompt bundles) + head weight/bias (numpy-readable)
  tasks/<task>.json      type, labels, pooling, max_length, whether it takes a text pair
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptv2.files import atomic_dir
from ptv2.export.graph import BakedTaskModel, InputPromptEncoder, PromptInputEncoder, batch_prefix, prompt_tensor
from ptv2.model.inject import attention
from ptv2.model.prompted import PromptedModel
from ptv2.model.spec import HeadSpec
from ptv2.serving.manifest import SERVED_POOLING, BundleError, is_bundle, verify, write_manifest

log = logging.getLogger(__name__)
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17


def _dummy(batch: int = 2, length: int = 8) -> tuple[torch.Tensor, ...]:
    ids = torch.full((batch, length), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[-1, length // 2:] = 0  # a padded row, so tracing keeps the attention mask
    return ids, mask, torch.zeros_like(ids)


def _export(wrapper: torch.nn.Module, backbone: torch.nn.Module, extra: dict[str, torch.Tensor], output: str,
            out_axes: dict[int, str], path: str | Path, attention_impl: str = "eager") -> Path:
    """Trace ``wrapper`` on padded dummy ids (+ ``extra`` inputs) into ``path``: batch and sequence axes
    dynamic; ``eval()`` on the wrapper, since the exporter restores the train mode it finds; ``backbone``
    (the wrapper's) traced with ``attention_impl`` (eager: see ``inject.attention``)."""
    wrapper = wrapper.eval()
    ids, mask, types = _dummy()
    axes = {k: {0: "batch", 1: "seq"} for k in INPUTS} | {output: out_axes}
    axes |= {"prefix": {2: "batch", 4: "prefix_len"}} if "prefix" in extra else {}
    with warnings.catch_warnings(), attention(backbone, attention_impl):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (ids, mask, types, *extra.values()), str(path), input_names=INPUTS + list(extra),
                          output_names=[output], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return Path(path)


def export_encoder(model: PromptedModel, path: str | Path) -> Path:
    """One graph for every task: prompt as input, dynamic batch, sequence and prefix length. A model
    without a deep prompt (merged adapters, fine-tuned, an input prompt) gets a graph of its own without the
    ``prefix`` input."""
    if model.input_prompt is not None:  # its prompt is a constant of the graph: one task's own encoder
        return _export(InputPromptEncoder(model.eval()), model.backbone, {}, "hidden", {0: "batch", 1: "seq"}, path)
    if model.prompt is None:
        merged = model.merged()
        return _export(PromptInputEncoder(merged), merged.backbone, {}, "hidden", {0: "batch", 1: "seq"}, path)
    prompt = prompt_tensor(model)
    if prompt.shape[3] == 0:  # the frozen baseline (P = 0): trace with one dummy slot, the graph takes any P
        prompt = torch.randn(*prompt.shape[:3], 1, prompt.shape[4]) * 0.02
    prefix = batch_prefix([prompt] * _dummy()[0].shape[0])
    return _export(PromptInputEncoder(model), model.backbone, {"prefix": prefix}, "hidden", {0: "batch", 1: "seq"},
                   path)


def export_baked(model: PromptedModel, task: str, path: str | Path) -> Path:
    """Single-task variant: prompt and head baked in as constants -> ``logits``."""
    return _export(BakedTaskModel(model, task), model.backbone, {}, "logits", {0: "batch"}, path)


class _RootInfo(logging.Filter):
    """Drops INFO records logged on the root logger itself: onnxruntime's quantizer reports each tensor
    it skips with ``logging.info`` (~40 lines per encoder), which buried the export's own lines. Also its
    WARNING advising shape-inference pre-processing (a root "WARNING" in every export stage's log): the int8
    encoder is judged by what it does instead (its agreement with fp32 on dev, checked by the export)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not str(record.msg).startswith(
            "Please consider to run pre-processing before quantization")


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root, quiet = logging.getLogger(), _RootInfo()
    root.addFilter(quiet)  # a logger's filters see only its own records, not its children's: ptv2's lines stay
    try:
        # per-channel weight scales: per-tensor int8 changed 5.4 % of SST-2 dev predictions and cost 1.5 points
        # (significant on 872 examples); per-channel kept 97.9 % of them and the accuracy (measured, see README)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(quiet)
    return Path(dst)


def task_files(model: PromptedModel, task: str, out_dir: Path) -> None:
    """``<task>.safetensors`` (prompt + head) and ``<task>.json`` (how to read its outputs) into ``out_dir``."""
    from safetensors.numpy import save_file

    linear = model.heads[task].linear
    tensors = {"head_weight": linear.weight.detach().numpy().astype(np.float32),
               "head_bias": linear.bias.detach().numpy().astype(np.float32)}
    if model.prompt is not None:
        tensors["prompt"] = prompt_tensor(model, task).numpy().astype(np.float32)
    save_file(tensors, str(out_dir / f"{task}.safetensors"))
    head: HeadSpec = model.spec.tasks[task]
    spec = {"type": head.type, "labels": head.labels, "text_b": head.text_b, "pooling": model.spec.pooling,
            "normalize": model.spec.normalize, "max_length": model.spec.max_length, "pair_encoding": head.pair_encoding}
    (out_dir / f"{task}.json").write_text(json.dumps(spec, indent=2, sort_keys=True))


def copy_encoder(src: Path, dst: Path, int8: bool) -> None:
    """Copy ``src``'s encoder graphs (verified against its manifest) into the folder ``dst``: every deep-prompt
    bundle of one backbone holds the same graphs, byte for byte (the prompt is an input), so a second bundle of
    the same backbone needs no second export and quantization (7 s: the export stage's frozen and trained bundles).
    Whether each task's prompt fits the copied graph is checked when the new bundle is loaded."""
    import shutil

    files = verify(src)["files"]
    for name in ["encoder.onnx"] + (["encoder.int8.onnx"] if int8 else []):
        if name not in files:
            raise BundleError(f"{src}: has no {name} to share; export this bundle's encoder itself")
        shutil.copyfile(src / name, dst / name)


def write_bundle(models: dict[str, PromptedModel], tokenizer: Any, out: str | Path, int8: bool = True,
                 encoder_from: str | Path | None = None) -> Path:
    """``models``: task -> model with that task's head. All must share one backbone and one prompt shape;
    the encoder graph is exported once, or copied from the bundle ``encoder_from``, which the caller wrote from
    the same backbone (deep-prompt bundles only). Merged adapters and fine-tuned models change the encoder's
    weights, an input prompt is a constant of its graph: their bundle holds one task."""
    out = Path(out)
    first = next(iter(models.values()))
    for task, model in models.items():  # refused here, before the export, not served differently later
        if model.spec.pooling not in SERVED_POOLING and model.heads[task].kind != "token":
            raise BundleError(f"task {task!r} was trained with pooling {model.spec.pooling!r}; bundles serve "
                              f"{list(SERVED_POOLING)} pooling of the encoder's hidden states (the ONNX graph has "
                              f"no pooler layer): retrain it with backbone.pooling cls or mean")
    if first.prompt is None and len(models) > 1:
        raise ValueError(f"tasks {sorted(models)}: a {first.method} model carries its own encoder (its weights, or "
                         f"an input prompt in its graph); "
                         f"export one bundle per task (only deep-prompt tasks share one encoder)")
    with atomic_dir(out, is_bundle, "an ONNX bundle") as tmp:
        if encoder_from is not None and first.prompt is not None:
            copy_encoder(Path(encoder_from), tmp, int8)
        else:
            export_encoder(first, tmp / "encoder.onnx")
            if int8:
                quantize_int8(tmp / "encoder.onnx", tmp / "encoder.int8.onnx")
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "tasks").mkdir()
        for task, model in models.items():
            task_files(model, task, tmp / "tasks")
        write_manifest(tmp)
    return out


@torch.no_grad()
def parity(model: PromptedModel, task: str, bundle: Any, batch_sizes: tuple[int, ...], lengths: tuple[int | None, ...],
           seed: int = 0) -> dict[str, Any]:
    """max |ORT - PyTorch| over logits, on padded random batches of each size x length
    (None = the model's max_length; a bi-encoded pair task reads rows 2i, 2i+1 as one pair, so odd sizes
    round up). ``bundle``: a loaded ``ptv2.serving.Bundle``."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    max_len = bundle.tasks[task].spec["max_length"]
    vocab = model.backbone.config.vocab_size
    worst, cases = 0.0, 0
    pair = 2 if model.spec.tasks[task].pair_encoding == "bi" else 1
    # each (size, length) once: 0 / None and max_length, or 1 and 2 rows of a bi pair, are one case (the default
    # lengths [1, 40, 128, 0] ran the 128-token batches twice: 11 of the export's 26 s of parity)
    shapes = dict.fromkeys((B + B % pair, min(T or max_len, max_len)) for B in batch_sizes for T in lengths)
    for B, T in shapes:
        ids = torch.randint(5, vocab, (B, T), generator=g)
        mask = torch.ones_like(ids)
        for i in range(1, B):  # varied lengths: every row but the first is padded
            mask[i, max(1, T - (i * T) // (B + 1)):] = 0
        ids = ids * mask
        types = torch.zeros_like(ids)
        batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if model.spec.tasks[task].type == "multiple_choice":  # each row one (context, choice): (B, 1) scores
            batch["n_choices"] = torch.tensor(1)
        ref = model(batch, task).float().numpy()
        hid = bundle.hidden({"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                             "token_type_ids": types.numpy()}, [task] * B)
        vecs = [bundle.pool(hid[i], mask[i].numpy(), task) for i in range(B)]
        for i in range(B // pair):
            got = bundle.head(task, vecs[i * pair:(i + 1) * pair])
            n = int(mask[i].sum())
            want, got = (ref[i][:n], got[:n]) if got.ndim == 2 else (ref[i], got)
            worst = max(worst, float(np.abs(np.asarray(want).reshape(-1) - got.reshape(-1)).max()))
        cases += 1
    return {"task": task, "max_abs_diff": worst, "cases": cases}
