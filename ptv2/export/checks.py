"""Deployment checks on real dev data: a bundle's metric (fp32 or int8) next to PyTorch's."""
from __future__ import annotations

from typing import Any

from ptv2.training import metrics
from ptv2.data.tasks import TaskData
from ptv2.serving.bundle import Bundle


def bundle_metrics(bundle: Bundle, td: TaskData, split: str = "dev", batch_size: int = 64) -> dict[str, float]:
    """The task's metrics computed from the bundle's predictions (onnxruntime) on ``split``."""
    ds = td.split(split)
    task, kind = td.name, td.spec.type
    if kind == "multiple_choice":
        raise ValueError(f"task {task!r}: multiple_choice is not served by the bundle")
    if kind == "token_classification":
        rows = [{"task": task, "text": " ".join(toks)} for toks in ds["tokens"]]
    else:
        rows = [{"task": task, "text": a, "text_pair": b} for a, b in zip(ds["text_a"], ds["text_b"])]
    preds: list[dict[str, Any]] = []
    for s in range(0, len(rows), batch_size):
        preds += bundle.predict(rows[s:s + batch_size])
    if kind == "token_classification":
        gold = [[td.labels[t] for t in tags] for tags in ds["tags"]]
        return metrics.compute(td.spec.metrics, [p["tags"] for p in preds], gold)
    if kind == "regression":
        return metrics.compute(td.spec.metrics, [p["score"] for p in preds], list(ds["label"]))
    return metrics.compute(td.spec.metrics, [td.labels.index(p["label"]) for p in preds], list(ds["label"]))
