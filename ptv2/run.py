"""High-level jobs the CLI, DVC stages and flows share: train a task, evaluate, predict."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ptv2.build import init_from_pretrained, load_model, model_from_meta, model_meta, reusable_backbone, task_info
from ptv2.config import Config
from ptv2.data.collate import encode_split
from ptv2.data.tasks import TaskData, load_task
from ptv2.errors import DataError
from ptv2.evaluate import evaluate
from ptv2.model.backbone import load_backbone
from ptv2.model.prompted import count_parameters
from ptv2.train import Split, TrainResult, fit, single_task_planner, write_json

log = logging.getLogger(__name__)


@dataclass
class TaskRun:
    result: TrainResult
    metrics: dict[str, dict[str, float]]  # split -> metric -> value
    trainable: int
    total: int
    model_dir: Path


def load_task_data(cfg: Config, name: str) -> TaskData:
    spec = cfg.task(name)
    max_train = spec.max_train_examples if spec.max_train_examples is not None else cfg.train.max_train_examples
    return load_task(name, spec, cfg.data_root, cfg.seed, cfg.train.val_fraction, cfg.train.val_max, max_train)


def encode(td: TaskData, split: str, tokenizer: Any, max_length: int) -> Split:
    ds = td.split(split)
    if len(ds) == 0:
        raise DataError(f"task {td.name!r}: split {split!r} is empty")
    return Split(encode_split(ds, td.spec.type, tokenizer, max_length), ds, td.labels, list(td.spec.metrics))


def train_task(cfg: Config, name: str, out_dir: str | Path, report_splits: tuple[str, ...] = ("dev",),
               on_log=None, init_from: str | Path | None = None) -> TaskRun:
    """Train ``cfg.train.method`` on one task; select on ``val``; report on ``report_splits``.
    ``init_from``: a pretrained (multi-task) model folder to start from (adaptation)."""
    out_dir = Path(out_dir)
    td = load_task_data(cfg, name)
    backbone, tok = load_backbone(cfg.backbone.name)
    meta = model_meta(cfg, {name: task_info(td)})
    steps = cfg.epochs_for(name, init_from is not None) * -(-len(td.split("train")) // cfg.train.batch_size)
    model, tok = model_from_meta(meta, backbone, tok, seed=cfg.seed, total_steps=steps // cfg.train.grad_accum)
    if init_from is not None:
        keys = init_from_pretrained(model, meta, init_from, name, cfg.adapt.init_head)
        # lineage in the artifact; also keeps a checkpoint from another pretrained prompt from being resumed
        meta["adapted_from"] = {"path": str(init_from), "weights_sha256": weights_sha(init_from)}
        log.info("adapting from %s: %d tensors copied (head %s)", init_from, len(keys),
                 "copied" if any(k.startswith("heads.") for k in keys) else "fresh")
    trainable, total = count_parameters(model)
    loaded_mb = rss_mb()
    log.info("task %s: %d train / %d val rows; %s trains %d of %d params (%.3f%%)", name, len(td.split("train")),
             len(td.split("val")), cfg.train.method, trainable, total, 100 * trainable / total)
    L = cfg.backbone.max_length
    train = {name: encode(td, "train", tok, L)}
    val = {name: encode(td, "val", tok, L)}
    planner = single_task_planner(name, train[name].lengths, cfg.train.batch_size, cfg.train.length_grouping)
    result = fit(model, train, val, planner, cfg.train, cfg.seed, tok.pad_token_id, out_dir, meta,
                 epochs=cfg.epochs_for(name, init_from is not None), on_log=on_log)
    best, _, _ = load_model(out_dir / "model", backbone=reusable_backbone(model), tokenizer=tok)
    metrics = {"val": result.history[result.best_epoch - 1]["val"][name]}
    for split in report_splits:
        if split in td.splits:
            s = encode(td, split, tok, L)
            metrics[split] = evaluate(best, name, s.feats, s.ds, s.labels, s.metrics, tok.pad_token_id,
                                      cfg.train.eval_batch_size)
    write_json(out_dir / "metrics.json", {"task": name, "method": cfg.train.method, "metrics": metrics,
                                          "config_sha": config_sha(cfg, name, init_from is not None), "init_from": str(init_from or ""),
                                          "trainable_params": trainable, "total_params": total,
                                          "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                                          "train_seconds": round(result.seconds, 1), "history": result.history,
                                          "loaded_rss_mb": loaded_mb, "peak_rss_mb": rss_mb("VmHWM"),
                                          "artifact_bytes": sum(f.stat().st_size for f in (out_dir / "model").iterdir())})
    return TaskRun(result, metrics, trainable, total, out_dir / "model")


def rss_mb(field: str = "VmRSS") -> float | None:
    """This process's resident memory (``VmHWM``: its peak so far) in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def weights_sha(model_dir: str | Path) -> str:
    from ptv2.artifacts import read_adapter

    return read_adapter(model_dir, verify=False)[1]["weights_sha256"]


def config_sha(cfg: Config, task: str, adapting: bool = False) -> str:
    """Fingerprint of what one run of ``task`` under ``cfg.train.method`` depends on (to reuse finished
    runs safely). Other methods' learning rates and epoch counts are left out: tuning one method keeps
    the others' finished runs. ``adapting``: the run starts from a pretrained prompt (adapt settings count)."""
    import hashlib
    import json
    from dataclasses import asdict

    m = cfg.train.method
    train = {k: v for k, v in asdict(cfg.train).items() if k not in ("lr", "epochs")}
    spec = {k: v for k, v in asdict(cfg.task(task)).items() if k != "epochs"}
    parts = {"seed": cfg.seed, "backbone": asdict(cfg.backbone), "prompt": asdict(cfg.prompt), "train": train,
             "lr": cfg.train.lr[m], "epochs": cfg.epochs_for(task, adapting), "task": spec, "data_root": cfg.data_root}
    if adapting:
        parts["init_head"] = cfg.adapt.init_head
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def eval_data_sha(cfg: Config, task: str, split: str = "dev") -> str:
    """Fingerprint of the eval data: the split's file bytes + the task spec (how it is read)."""
    import hashlib
    import json
    from dataclasses import asdict

    from ptv2.artifacts import sha256

    spec = cfg.task(task)
    h = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    if split in spec.files:
        h.update(sha256(cfg.data_path(spec.files[split])).encode())
    return h.hexdigest()[:16]


def evaluate_saved(cfg: Config, model_dir: str | Path, task: str, split: str = "dev") -> dict[str, float]:
    """Evaluate a saved model on a split of a task from params.yaml."""
    model, tok, meta = load_model(model_dir)
    if task not in meta["tasks"]:
        raise DataError(f"model {model_dir} has no head for task {task!r}; it has {sorted(meta['tasks'])}")
    td = load_task_data(cfg, task)
    s = encode(td, split, tok, meta["backbone"]["max_length"])
    return evaluate(model, task, s.feats, s.ds, meta["tasks"][task]["labels"] or td.labels, s.metrics,
                    tok.pad_token_id, cfg.train.eval_batch_size)


@torch.no_grad()
def predict_texts(model_dir: str | Path, texts: list[str], pairs: list[str] | None = None,
                  task: str | None = None) -> list[dict[str, Any]]:
    """Text(s) in, label + score out (sequence tasks), or entities' tags (token tasks)."""
    import datasets

    from ptv2.evaluate import decode, predict_logits

    model, tok, meta = load_model(model_dir)
    task = task or next(iter(meta["tasks"]))
    if task not in meta["tasks"]:
        raise DataError(f"model has no task {task!r}; it has {sorted(meta['tasks'])}")
    info, L = meta["tasks"][task], meta["backbone"]["max_length"]
    if info["type"] == "token_classification":
        ds = datasets.Dataset.from_dict({"tokens": [t.split() for t in texts], "tags": [[0] * len(t.split()) for t in texts]})
    elif info["type"] == "multiple_choice":
        raise DataError("predict for multiple_choice tasks takes a context and choices; use 'ptv2 evaluate'")
    else:
        if info["text_b"] and not pairs:
            raise DataError(f"task {task!r} takes a text pair: pass --text-pair")
        ds = datasets.Dataset.from_dict({"text_a": texts, "text_b": pairs or [""] * len(texts), "label": [0] * len(texts)})
    feats = encode_split(ds, info["type"], tok, L)
    logits = predict_logits(model, task, feats, tok.pad_token_id)
    out = []
    for lg, pred, f in zip(logits, decode(info["type"], logits, feats, info["labels"]), feats):
        if info["type"] == "regression":
            out.append({"task": task, "score": float(pred)})
        elif info["type"] == "token_classification":
            out.append({"task": task, "tags": pred})
        else:
            p = torch.softmax(lg, -1)
            out.append({"task": task, "label": info["labels"][int(pred)], "score": float(p[int(pred)])})
    return out
