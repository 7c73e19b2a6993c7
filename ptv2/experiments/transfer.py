"""The multi-task transfer table (the paper's question: does a prompt pretrained on a mixture help?).

(a) single-task from a random prompt, (b) pretrained on the mixture then adapted, (c) the mixture
model with no adaptation, (d) each held-out task in turn: pretrained on the mixture minus that task,
then adapted. Mean ± std over seeds of the dev metric; finished runs are reused (``runs.run_or_reuse``,
keyed by config + the start prompt's weights).
"""
from __future__ import annotations

import dataclasses
import logging
import statistics
from pathlib import Path

from ptv2.config import Config
from ptv2.errors import ConfigError
from ptv2.experiments.plots import plot_tasks
from ptv2.experiments.runs import dev_value, run_or_reuse
from ptv2.experiments.tables import TRANSFER_TITLE, check_table_target, command_line, markdown, mean_std
from ptv2.files import atomic_write_text, check_writable, write_json
from ptv2.model.prompted import DEEP, INPUT

log = logging.getLogger(__name__)
COLUMNS = {"f": "frozen backbone + fitted head", "a": "(a) single-task", "b": "(b) multi-task → adapted",
           "c": "(c) multi-task, no adaptation", "d": "(d) held out → adapted"}


def trained_with(cfg: Config) -> str:
    """What every run of the table trains, for its header (a table of `train.method: lora` read "prompt length 16"
    and no method): the method, and the prompt length where the method has a prompt."""
    m = cfg.train.method
    return f"method `{m}`" + (f", prompt length {cfg.prompt.length}" if m in DEEP + INPUT else "")


def transfer(cfg: Config, tasks: list[str], held_out: list[str], seeds: list[int], out_md: Path, work: Path) -> None:
    if not tasks or not seeds:
        raise ConfigError(f"transfer: tasks {tasks} / seeds {seeds}: name at least one of each (--tasks cb,rte "
                          f"--seeds 1,2,3)")
    for t in [*tasks, *held_out]:
        cfg.task(t)  # an unknown name fails now, not after minutes of pretraining
    stray = [h for h in held_out if h not in tasks]
    if stray:  # its pretraining without it would run, and no row would use it
        raise ConfigError(f"--held-out {','.join(stray)} is not one of --tasks {tasks}: (d) adapts each held-out "
                          f"task itself; add it to --tasks or leave it out of --held-out")
    full = list(cfg.pretrain.tasks)
    if [h for h in held_out if full == [h]]:  # its mixture without it is empty: found after pretrain_all ran
        raise ConfigError(f"--held-out {full[0]}: pretrain.tasks {full} without it leaves no mixture to pretrain "
                          f"(d) on; add tasks to pretrain.tasks, or leave {full[0]} out of --held-out")
    check_table_target(out_md)
    check_writable(work)
    pre_all = run_or_reuse(cfg, full, work / "pretrain_all", mixture=True)
    without: dict[str, list[str]] = {}
    for h in held_out:
        if h not in full:
            log.warning("%s is not in the mixture: its (b) already is a held-out transfer; no (d) run", h)
            continue
        without[h] = [t for t in full if t != h]
        run_or_reuse(cfg, without[h], work / f"pretrain_without_{h}", mixture=True)
    res: dict[str, dict[str, list[float]]] = {t: {k: [] for k in COLUMNS} for t in tasks}
    command = command_line("transfer")
    for t in tasks:
        metric = cfg.task(t).metrics[0]
        if t in pre_all["metrics"]["dev"]:
            res[t]["c"].append(dev_value(pre_all, t, metric))
        for s in seeds:
            c = dataclasses.replace(cfg, seed=s)
            starts = {"a": None, "b": work / "pretrain_all/model"}
            if t in without:
                starts["d"] = work / f"pretrain_without_{t}/model"
            for col, start in starts.items():
                rec = run_or_reuse(c, [t], work / t / f"{col}_seed{s}", init_from=start)
                res[t][col].append(dev_value(rec, t, metric))
            res[t]["f"].append(dev_value(run_or_reuse(c, [t], work / t / f"frozen_seed{s}", frozen=True), t, metric))
            _write(res, cfg, tasks, full, without, seeds, command, out_md)
    print(out_md.read_text(encoding="utf-8"))


def _write(res: dict[str, dict[str, list[float]]], cfg: Config, tasks: list[str], full: list[str],
           without: dict[str, list[str]], seeds: list[int], command: str, out_md: Path) -> None:
    rows, diffs = [], []
    for t in tasks:
        r = res[t]
        d = statistics.mean(r["b"]) - statistics.mean(r["a"]) if r["a"] and r["b"] else None
        if d is not None and len(r["b"]) == len(seeds):
            diffs.append(d)
        rows.append([t, cfg.task(t).metrics[0], *(mean_std(r[k]) for k in COLUMNS), "—" if d is None else f"{d:+.1f}"])
    if diffs:
        rows.append(["**average (b) − (a)**", "", *[""] * len(COLUMNS), f"{statistics.mean(diffs):+.1f}"])
    ho = "; ".join(f"without {h}: {rest}" for h, rest in without.items()) or "none"
    md = (f"{TRANSFER_TITLE} (dev)\n\nBackbone `{cfg.backbone.name}`, {trained_with(cfg)}, seeds {seeds} "
          f"(mean ± std). Mixture (b, c): {full}, strategy "
          f"{cfg.pretrain.strategy}, cap {cfg.pretrain.cap}, {cfg.pretrain.epochs} epochs, "
          f"{cfg.pretrain.batching} batches. (d), each task held out in turn: {ho}. Tasks outside the mixture "
          f"have no (c), and their (b) is itself a transfer to an unseen task. "
          f"Selection on a validation split carved from train; dev only reported.\n\nCommand: `{command}`\n\n"
          + markdown(["task", "metric", *COLUMNS.values(), "(b) − (a)"], rows)
          + f"\n\n![transfer]({out_md.with_suffix('.png').name})\n")
    atomic_write_text(out_md, md)
    write_json(out_md.with_suffix(".json"), res)
    plot_tasks({t: {name: statistics.mean(res[t][k]) if res[t][k] else None for k, name in COLUMNS.items()}
                for t in tasks}, out_md.with_suffix(".png"), title="Multi-task transfer (dev, mean over seeds)")
