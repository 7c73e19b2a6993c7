"""Use a saved model folder: evaluate it on a task split, or label texts (PyTorch; the ONNX path is ptv2.serving)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ptv2.config import Config
from ptv2.data.collate import encode_split
from ptv2.errors import DataError
from ptv2.model.spec import ModelSpec
from ptv2.spans import entities
from ptv2.training.build import load_model
from ptv2.data.tasks import load_task_data
from ptv2.training.splits import encode
from ptv2.training.evaluate import decode, evaluate, predict_logits


def evaluate_saved(cfg: Config, model_dir: str | Path, task: str | None, split: str = "dev") -> dict[str, float]:
    """Evaluate a saved model on a split of a task from params.yaml (``task``: None for the model's only one)."""
    model, tok, spec = load_model(model_dir)
    task = model_task(spec, task)
    td = load_task_data(cfg, task)
    td.check_labels(spec.tasks[task].labels, f"model {model_dir} was trained")
    s = encode(td, split, tok, spec.max_length, spec.tasks[task].pair_encoding)
    return evaluate(model, task, s.feats, s.ds, td.labels, s.metrics, tok.pad_token_id, cfg.train.eval_batch_size)


def model_task(spec: ModelSpec, task: str | None) -> str:
    """The task a model is asked about: ``task``, which it must have, or its only one (a multi-task model, such
    as a pretrained mixture, must be told which: answering as its first task would be a silent guess)."""
    if task is None and len(spec.tasks) != 1:
        raise DataError(f"this model serves {sorted(spec.tasks)}: pass --task")
    task = task or next(iter(spec.tasks))
    if task not in spec.tasks:
        raise DataError(f"model has no task {task!r}; it has {sorted(spec.tasks)}")
    return task


@torch.no_grad()
def predict_texts(model_dir: str | Path, texts: list[str], pairs: list[str] | None = None,
                  task: str | None = None, *, batch_size: int) -> list[dict[str, Any]]:
    """Text(s) in, label + score out (sequence tasks), or entities' tags (token tasks)."""
    import datasets

    model, tok, spec = load_model(model_dir)
    task = model_task(spec, task)
    info, L = spec.tasks[task], spec.max_length
    if pairs and not info.text_b:  # as the bundle answers: a pair would have been encoded as one silently
        raise DataError(f"task {task!r} takes one text; pass no pairs")
    if info.type == "token_classification":
        ds = datasets.Dataset.from_dict({"tokens": [t.split() for t in texts], "tags": [[0] * len(t.split()) for t in texts]})
    elif info.type == "multiple_choice":
        raise DataError(f"task {task!r} is multiple choice: export the model (ptv2 export) and predict from the bundle "
                        f"with --choice per choice, or score it with 'ptv2 evaluate'")
    else:
        if info.text_b and (not pairs or len(pairs) != len(texts)):
            raise DataError(f"task {task!r} takes a text pair per text: pass as many pairs as texts")
        ds = datasets.Dataset.from_dict({"text_a": texts, "text_b": pairs or [""] * len(texts), "label": [0] * len(texts)})
    feats = encode_split(ds, info.type, tok, L, info.pair_encoding)
    logits = predict_logits(model, task, feats, tok.pad_token_id, batch_size, progress=f"labelling {len(texts)} texts")
    out = []
    for text, lg, pred in zip(texts, logits, decode(info.type, logits, feats, info.labels)):
        if info.type == "regression":
            out.append({"task": task, "score": float(pred)})
        elif info.type == "token_classification":  # as the server answers: words, their tags (words cut off by
            words = text.split()                   # max_length: "O"), the entities
            tags = list(pred) + ["O"] * (len(words) - len(pred))
            out.append({"task": task, "tokens": words, "tags": tags, "entities": entities(words, tags)})
        else:
            p = torch.softmax(lg, -1)
            out.append({"task": task, "label": info.labels[int(pred)], "score": float(p[int(pred)])})
    return out
