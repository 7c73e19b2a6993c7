"""Multi-task prompt pretraining (one shared deep prompt, one head per task) and adaptation.

Pretraining reuses the single training loop (``ptv2.train.fit``) with a mixture planner; the
artifact is the ordinary adapter format, with the mixture described in its config. Only train
splits enter the mixture; selection uses each task's carved ``val``; labelled test splits are
never loaded here.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ptv2.build import load_model, model_from_meta, model_meta, reusable_backbone, task_info
from ptv2.config import Config
from ptv2.data.mixture import mixture_planner, mixture_rates
from ptv2.errors import ConfigError
from ptv2.evaluate import evaluate
from ptv2.model.backbone import load_backbone
from ptv2.model.prompted import count_parameters
from ptv2.run import TaskRun, encode, load_task_data, train_task
from ptv2.train import TrainResult, fit, write_json

log = logging.getLogger(__name__)


def pretrain(cfg: Config, out_dir: str | Path | None = None, tasks: list[str] | None = None,
             on_log=None) -> tuple[TrainResult, dict[str, dict[str, dict[str, float]]]]:
    """Train the shared prompt on the mixture; returns (result, split -> task -> metrics)."""
    p = cfg.pretrain
    tasks = tasks or p.tasks
    if len(tasks) < 1:
        raise ConfigError("pretrain.tasks is empty: list the tasks of the mixture in params.yaml")
    out_dir = Path(out_dir or p.out_dir)
    data = {t: load_task_data(cfg, t) for t in tasks}
    backbone, tok = load_backbone(cfg.backbone.name)
    sizes = {t: len(d.split("train")) for t, d in data.items()}
    rates = mixture_rates(sizes, p.strategy, p.cap, p.temperature, p.weights)
    mixture = {"tasks": tasks, "sizes": sizes, "rates": rates, "strategy": p.strategy, "cap": p.cap,
               "temperature": p.temperature, "weights": p.weights, "batching": p.batching}
    if p.task_rank and (cfg.train.method != "ptv2" or cfg.prompt.reparam):
        raise ConfigError(f"pretrain.task_rank = {p.task_rank} needs train.method ptv2 without prompt.reparam "
                          f"(got {cfg.train.method}, reparam {cfg.prompt.reparam}); set pretrain.task_rank: 0")
    meta = dict(model_meta(cfg, {t: task_info(d) for t, d in data.items()}), mixture=mixture)
    if p.task_rank:
        meta["task_rank"] = mixture["task_rank"] = p.task_rank
    model, tok = model_from_meta(meta, backbone, tok, seed=cfg.seed)
    L = cfg.backbone.max_length
    train = {t: encode(d, "train", tok, L) for t, d in data.items()}
    val = {t: encode(d, "val", tok, L) for t, d in data.items()}
    capped = sum(min(n, p.cap) if p.cap else n for n in sizes.values())
    n_batches = p.batches_per_epoch or max(1, capped // cfg.train.batch_size)
    trainable, total = count_parameters(model)
    log.info("pretraining on %s: rates %s, %d batches/epoch, %d trainable params",
             tasks, {t: round(r, 3) for t, r in rates.items()}, n_batches, trainable)
    planner = mixture_planner({t: s.lengths for t, s in train.items()}, cfg.train.batch_size, rates, n_batches,
                              cfg.train.length_grouping, mixed=p.batching == "mixed")
    result = fit(model, train, val, planner, cfg.train, cfg.seed, tok.pad_token_id, out_dir, meta,
                 epochs=p.epochs, on_log=on_log)
    best, _, _ = load_model(out_dir / "model", backbone=reusable_backbone(model), tokenizer=tok)
    metrics: dict[str, dict[str, dict[str, float]]] = {"val": result.history[result.best_epoch - 1]["val"], "dev": {}}
    for t, d in data.items():
        if "dev" in d.splits:
            s = encode(d, "dev", tok, L)
            metrics["dev"][t] = evaluate(best, t, s.feats, s.ds, s.labels, s.metrics, tok.pad_token_id,
                                         cfg.train.eval_batch_size)
    write_json(out_dir / "metrics.json", {"mixture": mixture, "metrics": metrics, "best_epoch": result.best_epoch,
                                          "train_seconds": round(result.seconds, 1), "history": result.history,
                                          "pretrain": asdict(p)})
    return result, metrics


def adapt(cfg: Config, task: str, pretrained: str | Path | None = None, out_dir: str | Path | None = None,
          on_log=None) -> TaskRun:
    """Tune ``task`` on its own data, starting from the pretrained prompt (and head if it has one)."""
    pretrained = Path(pretrained or Path(cfg.pretrain.out_dir) / "model")
    out_dir = Path(out_dir or Path(cfg.adapt.out_dir) / task)
    return train_task(cfg, task, out_dir, on_log=on_log, init_from=pretrained)


def mixture_of(model_dir: str | Path) -> dict[str, Any]:
    """The mixture description stored with a pretrained prompt."""
    from ptv2.artifacts import read_adapter

    _, meta = read_adapter(model_dir, verify=False)
    return meta.get("mixture", {})
