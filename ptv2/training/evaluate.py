"""Batched inference and evaluation on an encoded split."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ptv2.training import metrics
from ptv2.data.collate import IGNORE, Collator, eval_batches, feature_length
from ptv2.model.prompted import PromptedModel
from ptv2.progress import progress_bar


@torch.no_grad()
def predict_logits(model: PromptedModel, task: str, feats: list[dict[str, Any]], pad_id: int,
                   batch_size: int, device: torch.device | str | None = None, progress: str = "") -> list[torch.Tensor]:
    """Logits per example, in input order: (n_labels,), (), (C,) or (T_i, n_labels) each. Batches go to
    ``device``, by default the model's own (a model on CUDA fed CPU batches failed ``ptv2 train``'s dev report).
    ``progress``: a progress bar on stderr with that label, when there is more than one batch."""
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    task_type = model.task_types[task]
    collate = Collator(pad_id, task_type)
    out: list[torch.Tensor | None] = [None] * len(feats)
    lengths = [feature_length(f) for f in feats]
    batches = list(eval_batches(lengths, batch_size))
    for idx in progress_bar(batches, progress, "batch"):
        batch = {k: v.to(device) for k, v in collate([feats[i] for i in idx]).items()}
        logits = model(batch, task).float().cpu()
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(feats[i]["input_ids"])] if task_type == "token_classification" else logits[row]
    model.train(was_training)
    return out  # type: ignore[return-value]


def decode(task_type: str, logits: list[torch.Tensor], feats: list[dict[str, Any]], labels: list[str]):
    """Logits -> predictions: ids, floats, or tag-name sequences (truncated words tagged 'O')."""
    if task_type == "regression":
        return np.array([float(x) for x in logits])
    if task_type != "token_classification":
        return np.array([int(x.argmax()) for x in logits])
    seqs = []
    for lg, f in zip(logits, feats):
        first = [j for j, y in enumerate(f["label"]) if y != IGNORE]
        tags = [labels[int(lg[j].argmax())] for j in first]
        seqs.append(tags + ["O"] * (f["n_words"] - len(tags)))
    return seqs


def gold(task_type: str, feats: list[dict[str, Any]], labels: list[str], split_ds=None):
    if task_type == "token_classification":
        return [[labels[t] for t in tags] for tags in list(split_ds["tags"])]
    return np.array([f["label"] for f in feats])


def predictions(model: PromptedModel, task: str, feats: list[dict[str, Any]], split_ds, labels: list[str],
                pad_id: int, batch_size: int, device=None) -> tuple[list[Any], list[Any]]:
    """(predictions, gold) of ``model`` on one encoded split, as JSON-able lists in input order: label ids,
    floats, or tag sequences."""
    task_type = model.task_types[task]
    return labelled(task_type, predict_logits(model, task, feats, pad_id, batch_size, device), feats, split_ds, labels)


def labelled(task_type: str, logits: list[torch.Tensor], feats: list[dict[str, Any]], split_ds,
             labels: list[str]) -> tuple[list[Any], list[Any]]:
    """(predictions, gold) from per-example ``logits`` in input order (what ``predict_logits`` gives)."""
    pred = decode(task_type, logits, feats, labels)
    ref = gold(task_type, feats, labels, split_ds)
    return [_plain(x) for x in pred], [_plain(x) for x in ref]


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def evaluate(model: PromptedModel, task: str, feats: list[dict[str, Any]], split_ds, labels: list[str],
             metric_names: list[str], pad_id: int, batch_size: int, device=None) -> dict[str, float]:
    """Metrics (percent) of ``model`` on one encoded split."""
    return metrics.compute(metric_names, *predictions(model, task, feats, split_ds, labels, pad_id, batch_size, device))

