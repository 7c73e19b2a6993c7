"""Methods x tasks x seeds on real data -> one results table (markdown + JSON).

Each finished run leaves ``<work>/<task>/<method>/seed<k>/metrics.json``; rerunning the same
command reuses them, so a killed comparison picks up where it stopped. The table is rewritten
after every run, so partial results are always on disk.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from ptv2.artifacts import atomic_write_text
from ptv2.config import Config

log = logging.getLogger(__name__)


def run_one(cfg: Config, task: str, method: str, seed: int, work: Path) -> dict[str, Any]:
    from ptv2.run import train_task

    from ptv2.run import config_sha

    out = work / task / method / f"seed{seed}"
    c = dataclasses.replace(cfg, seed=seed, train=dataclasses.replace(cfg.train, method=method))
    if (out / "metrics.json").is_file():
        done = json.loads((out / "metrics.json").read_text())
        if done.get("config_sha") == config_sha(c, task):
            return done  # finished earlier with the same config
    train_task(c, task, out)
    return json.loads((out / "metrics.json").read_text())


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(results: list[dict[str, Any]], cfg: Config, tasks: list[str], methods: list[str]) -> str:
    """Markdown: one row per task, dev metric (first metric of the task) per method, and trainable %."""
    head = ["task", "metric"] + [f"{m} dev" for m in methods] + [f"{m} % trainable" for m in methods] + \
           [f"{m} s/epoch" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    avg: dict[str, list[float]] = {m: [] for m in methods}
    for t in tasks:
        metric = cfg.task(t).metrics[0]
        cells, pct, speed = [], [], []
        for m in methods:
            rs = [r for r in results if r["task"] == t and r["method"] == m]
            vals = [r["metrics"]["dev"][metric] for r in rs]
            cells.append(_cell(vals) + (f" (n={len(vals)})" if len(vals) > 1 else ""))
            pct.append(f"{100 * rs[0]['trainable_params'] / rs[0]['total_params']:.2f}" if rs else "—")
            speed.append(f"{statistics.mean(r['train_seconds'] / r['epochs_run'] for r in rs):.0f}" if rs else "—")
            if vals:
                avg[m].append(statistics.mean(vals))
        lines.append("| " + " | ".join([t, metric] + cells + pct + speed) + " |")
    done = [t for t in tasks if all(any(r["task"] == t and r["method"] == m for r in results) for m in methods)]
    if done:
        means = []
        for m in methods:
            vals = [statistics.mean(r["metrics"]["dev"][cfg.task(t).metrics[0]] for r in results
                                    if r["task"] == t and r["method"] == m) for t in done]
            means.append(f"{statistics.mean(vals):.1f}")
        lines.append("| " + " | ".join([f"**average** ({len(done)} tasks)", ""] + means + [""] * (2 * len(methods))) + " |")
    return "\n".join(lines) + "\n"


def _plot(results: list[dict[str, Any]], cfg: Config, tasks: list[str], methods: list[str], path: Path) -> None:
    from ptv2.plots import plot_tasks

    scores = {}
    for t in tasks:
        metric = cfg.task(t).metrics[0]
        by = {m: [r["metrics"]["dev"][metric] for r in results if r["task"] == t and r["method"] == m] for m in methods}
        if any(by.values()):
            scores[f"{t}\n({metric})"] = {m: statistics.mean(v) if v else None for m, v in by.items()}
    if scores:
        plot_tasks(scores, path, title="Dev metric per task and method")


def compare(cfg: Config, tasks: list[str], methods: list[str], seeds: list[int], out_md: Path, work: Path) -> None:
    for t in tasks:
        cfg.task(t)  # fail early on unknown tasks
    results: list[dict[str, Any]] = []
    command = "ptv2 " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ptv2") else "ptv2 compare"
    for t in tasks:
        for m in methods:
            for s in seeds:
                log.info("== %s / %s / seed %d", t, m, s)
                results.append(run_one(cfg, t, m, s, work))
                md = (f"# Dev results: {', '.join(methods)}\n\nBackbone `{cfg.backbone.name}` "
                      f"(pooling {cfg.backbone.pooling}), prompt length {cfg.prompt.length}. Model selection on a "
                      f"validation split carved from train; dev is only reported. Seeds: {seeds}.\n\n"
                      f"Command: `{command}`\n\n" + table(results, cfg, tasks, methods))
                atomic_write_text(out_md, md)
                atomic_write_text(out_md.with_suffix(".json"), json.dumps(
                    [{k: v for k, v in r.items() if k != "history"} for r in results], indent=2))
                _plot(results, cfg, tasks, methods, out_md.with_suffix(".png"))
    print(out_md.read_text())


def _cached_train(cfg: Config, task: str, out: Path, init_from: Path | None = None) -> dict[str, Any]:
    from ptv2.run import config_sha, train_task

    sha = config_sha(cfg, task) + (f":{init_from}" if init_from else "")
    if (out / "metrics.json").is_file():
        done = json.loads((out / "metrics.json").read_text())
        if done.get("config_sha", "") + (f":{done['init_from']}" if done.get("init_from") else "") == sha:
            return done
    train_task(cfg, task, out, init_from=init_from)
    return json.loads((out / "metrics.json").read_text())


def _cached_pretrain(cfg: Config, tasks: list[str], out: Path) -> dict[str, Any]:
    from ptv2.multitask import pretrain

    key = json.dumps({"cfg": cfg.to_dict(), "tasks": tasks}, sort_keys=True, default=str)
    if (out / "metrics.json").is_file() and (out / "key.json").is_file() and (out / "key.json").read_text() == key:
        return json.loads((out / "metrics.json").read_text())
    pretrain(cfg, out, tasks)
    atomic_write_text(out / "key.json", key)
    return json.loads((out / "metrics.json").read_text())


def transfer(cfg: Config, tasks: list[str], held_out: list[str], seeds: list[int], out_md: Path, work: Path) -> None:
    """The multi-task table: (a) single-task from a random prompt, (b) pretrained on the mixture then
    adapted, (c) the multi-task model with no adaptation, (d) pretrained on the mixture minus
    ``held_out`` then adapted (transfer to unseen tasks). Mean ± std over seeds, dev metric."""
    full = cfg.pretrain.tasks
    rest = [t for t in full if t not in held_out]
    pre_all = _cached_pretrain(cfg, full, work / "pretrain_all")
    pre_ho = _cached_pretrain(cfg, rest, work / "pretrain_heldout") if held_out else None
    res: dict[str, dict[str, list[float]]] = {t: {"a": [], "b": [], "c": [], "d": []} for t in tasks}
    command = "ptv2 " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ptv2") else "ptv2 transfer"
    for t in tasks:
        metric = cfg.task(t).metrics[0]
        if t in pre_all["metrics"]["dev"]:
            res[t]["c"].append(pre_all["metrics"]["dev"][t][metric])
        for s in seeds:
            c = dataclasses.replace(cfg, seed=s)
            res[t]["a"].append(_cached_train(c, t, work / t / f"a_seed{s}")["metrics"]["dev"][metric])
            res[t]["b"].append(_cached_train(c, t, work / t / f"b_seed{s}", work / "pretrain_all/model")
                               ["metrics"]["dev"][metric])
            if t in held_out:
                res[t]["d"].append(_cached_train(c, t, work / t / f"d_seed{s}", work / "pretrain_heldout/model")
                                   ["metrics"]["dev"][metric])
            _write_transfer(res, cfg, tasks, full, rest, seeds, command, out_md)
    print(out_md.read_text())


def _write_transfer(res, cfg: Config, tasks, full, rest, seeds, command, out_md: Path) -> None:
    lines = ["| task | metric | (a) single-task | (b) multi-task → adapted | (c) multi-task, no adaptation | "
             "(d) held out → adapted | (b) − (a) |", "|---|---|---|---|---|---|---|"]
    diffs = []
    for t in tasks:
        r = res[t]
        d = statistics.mean(r["b"]) - statistics.mean(r["a"]) if r["a"] and r["b"] else None
        if d is not None and len(r["b"]) == len(seeds):
            diffs.append(d)
        lines.append(f"| {t} | {cfg.task(t).metrics[0]} | {_cell(r['a'])} | {_cell(r['b'])} | {_cell(r['c'])} | "
                     f"{_cell(r['d'])} | {'—' if d is None else f'{d:+.1f}'} |")
    if diffs:
        lines.append(f"| **average (b) − (a)** | | | | | | {statistics.mean(diffs):+.1f} |")
    md = (f"# Multi-task prompt pretraining → adaptation (dev)\n\nBackbone `{cfg.backbone.name}`, prompt length "
          f"{cfg.prompt.length}, seeds {seeds} (mean ± std). Mixture (b, c): {full}, strategy "
          f"{cfg.pretrain.strategy}, cap {cfg.pretrain.cap}, {cfg.pretrain.epochs} epochs. Mixture (d): {rest}. "
          f"Selection on a validation split carved from train; dev only reported.\n\nCommand: `{command}`\n\n"
          + "\n".join(lines) + "\n")
    atomic_write_text(out_md, md)
    atomic_write_text(out_md.with_suffix(".json"), json.dumps(res, indent=2))
