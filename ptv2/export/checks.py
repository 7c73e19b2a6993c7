"""Deployment checks on real dev data: a bundle's per-example predictions (fp32 or int8), gold labels in the
same form, and the task's metric as a function of them (what the paired tests of the gate resample)."""
from __future__ import annotations

from typing import Any

from ptv2.config import TaskSpec
from ptv2.data.tasks import TaskData
from ptv2.errors import DataError
from ptv2.serving.bundle import Bundle
from ptv2.training.metrics import compute


def gold(td: TaskData, split: str = "dev") -> list[Any]:
    """Per example: class id, float score, or the sentence's tag names."""
    ds = td.split(split)
    if td.spec.type == "token_classification":
        return [[td.labels[t] for t in tags] for tags in ds["tags"]]
    if td.spec.type == "regression":
        return [float(x) for x in ds["label"]]
    return [int(x) for x in ds["label"]]


def request_rows(td: TaskData, split: str = "dev") -> list[dict[str, Any]]:
    """``split`` of a task as bundle request rows ({"task", "text", ["text_pair" | "choices"]})."""
    ds = td.split(split)
    if td.spec.type == "multiple_choice":
        return [{"task": td.name, "text": a, "choices": list(c)} for a, c in zip(ds["text_a"], ds["choices"])]
    if td.spec.type == "token_classification":
        return [{"task": td.name, "text": " ".join(toks)} for toks in ds["tokens"]]
    return [{"task": td.name, "text": a, "text_pair": b or None} for a, b in zip(ds["text_a"], ds["text_b"])]


def bundle_predictions(bundle: Bundle, td: TaskData, split: str = "dev") -> list[Any]:
    """The bundle's predictions on ``split``, in the form of ``gold`` (the bundle micro-batches them). A class the
    task no longer has (a champion exported before ``labels`` changed) is id -1: it matches no gold label."""
    out, kind = bundle.predict(request_rows(td, split)), td.spec.type
    if kind == "token_classification":
        return [p["tags"] for p in out]
    if kind == "regression":
        return [float(p["score"]) for p in out]
    if kind == "multiple_choice":
        return [int(p["choice"]) for p in out]
    ids = {label: i for i, label in enumerate(td.labels)}
    return [ids.get(p["label"], -1) for p in out]


def form_change(was: dict[str, Any], task: TaskSpec) -> str:
    """How a bundle's task spec ``was`` (its manifest's) answers another form of the task than params.yaml's
    ``task`` now ("answers classification of one text, the task is pair_classification of a text pair now"), or ""."""
    now = {"type": task.type, "text_b": bool(task.text_b)}
    form = lambda s: f"{s['type']} of {'a text pair' if s['text_b'] else 'one text'}"  # noqa: E731
    return "" if all(was[k] == v for k, v in now.items()) else f"answers {form(was)}, the task is {form(now)} now"


def evaluate_bundle(bundle: Bundle, td: TaskData, split: str = "dev") -> dict[str, float]:
    """Every metric of the task on ``split``, from the bundle's answers (``ptv2 evaluate`` on an export:
    the deployed artifact scored as ``evaluate_saved`` scores a model folder)."""
    if td.name not in bundle.tasks:
        raise DataError(f"{bundle.path} does not serve task {td.name!r}; it serves {sorted(bundle.tasks)}")
    if change := form_change(bundle.specs[td.name], td.spec):  # its rows would be refused as a bad request
        raise DataError(f"{bundle.path} {change}: evaluate a model trained on the task as params.yaml defines it")
    if td.spec.type in ("classification", "pair_classification"):
        td.check_labels(bundle.specs[td.name].get("labels") or [], f"{bundle.path} was exported")
    return compute(list(td.spec.metrics), bundle_predictions(bundle, td, split), gold(td, split))


def train_labels_for_baseline(td: TaskData) -> list[Any]:
    """What ``evidence.baseline`` needs: train labels, or the dev sentences' lengths for token tasks."""
    if td.spec.type == "token_classification":
        return [len(t) for t in td.split("dev")["tokens"]]
    return list(td.split("train")["label"])
