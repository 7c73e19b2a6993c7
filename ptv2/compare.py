"""Methods x tasks x seeds on real data -> one results table (markdown + JSON).

Each finished run leaves ``<work>/<task>/<method>/seed<k>/metrics.json``; rerunning the same
command reuses them, so a killed comparison picks up where it stopped. The table is rewritten
after every run, so partial results are always on disk.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

from ptv2.artifacts import atomic_write_text
from ptv2.config import Config

log = logging.getLogger(__name__)


def _train_in_child(cfg: Config, task: str, out: Path) -> None:
    """Entry point of the per-run process (spawned: fresh memory, so its peak RSS is this run's)."""
    from ptv2.run import train_task

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_task(cfg, task, out)


def run_one(cfg: Config, task: str, method: str, seed: int, work: Path, isolate: bool = True,
            wait: bool = True) -> dict[str, Any] | None:
    """Train one (task, method, seed), or reuse its finished run when the config is unchanged.
    ``isolate`` runs it in a fresh process, so peak memory is measured per run. Two processes may
    share ``work``: a run another process is training is waited for, or skipped (None) if not ``wait``."""
    import multiprocessing

    from ptv2.run import config_sha

    out = work / task / method / f"seed{seed}"
    c = dataclasses.replace(cfg, seed=seed, train=dataclasses.replace(cfg.train, method=method))
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent / f".{out.name}.lock", wait) as mine:
        if not mine:
            return None
        if (out / "metrics.json").is_file():
            done = json.loads((out / "metrics.json").read_text())
            if done.get("config_sha") == config_sha(c, task):
                return done  # finished earlier (or by the other process) with the same config
        if not isolate:
            _train_in_child(c, task, out)
        else:
            proc = multiprocessing.get_context("spawn").Process(target=_train_in_child, args=(c, task, out))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"{task}/{method}/seed{seed} failed (exit code {proc.exitcode}); its log is "
                                   f"above. Rerun the same command to resume: finished runs are kept")
    return json.loads((out / "metrics.json").read_text())


@contextlib.contextmanager
def _locked(path: Path, wait: bool = True):
    """Yields True holding an exclusive lock on ``path``; False at once when busy and not ``wait``."""
    import fcntl

    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _command(verb: str) -> str:
    """The command line that made a report, quoted so it can be pasted back into a shell."""
    import shlex

    return "ptv2 " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ptv2") else f"ptv2 {verb}"


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _fmt_count(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    f = lambda n: f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"  # noqa: E731
    return f(lo) if f(lo) == f(hi) else f"{f(lo)}–{f(hi)}"


def summarize(results: list[dict[str, Any]], cfg: Config, tasks: list[str], methods: list[str]) -> list[dict[str, Any]]:
    """One row per method: trainable params, dev metric per task (values over seeds), cost."""
    rows = []
    for m in methods:
        rs = [r for r in results if r["method"] == m]
        if not rs:
            continue
        row: dict[str, Any] = {"method": m, "trainable": [r["trainable_params"] for r in rs],
                               "pct": [100 * r["trainable_params"] / r["total_params"] for r in rs],
                               "dev": {}, "s_per_epoch": {}, "peak_mb": [], "extra_mb": [], "artifact_mb": []}
        for t in tasks:
            rt = [r for r in rs if r["task"] == t]
            if rt:
                row["dev"][t] = [r["metrics"]["dev"][cfg.task(t).metrics[0]] for r in rt]
                row["s_per_epoch"][t] = statistics.mean(r["train_seconds"] / r["epochs_run"] for r in rt)
        for r in rs:
            if r.get("peak_rss_mb"):
                row["peak_mb"].append(r["peak_rss_mb"])
                row["extra_mb"].append(r["peak_rss_mb"] - r["loaded_rss_mb"])
            if r.get("artifact_bytes"):
                row["artifact_mb"].append(r["artifact_bytes"] / 2**20)
        row["average"] = statistics.mean(statistics.mean(v) for v in row["dev"].values()) \
            if len(row["dev"]) == len(tasks) else None
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], cfg: Config, tasks: list[str], n_seeds: dict[str, int] | None = None) -> str:
    """Markdown: one row per method; dev metric per task (mean ± std over seeds), average, cost columns.
    ``n_seeds``: seeds planned per task; a cell with fewer finished says so (n=k)."""
    n_seeds = n_seeds or {}
    mb = lambda v: f"{max(v):.0f}" if v else "—"  # noqa: E731
    head = (["method", "trainable params", "% trainable"] + [f"{t} ({cfg.task(t).metrics[0]})" for t in tasks] +
            ["average", "s/epoch (all tasks)", "peak RSS MB", "peak − loaded MB", "artifact MB"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r["dev"].get(t, [])) + (f" (n={len(r['dev'][t])})" if 0 < len(r["dev"].get(t, []))
                                                  < n_seeds.get(t, 0) else "") for t in tasks]
        avg = "—" if r["average"] is None else f"**{r['average']:.1f}**"
        speed = f"{sum(r['s_per_epoch'].values()):.0f}"
        art = f"{max(r['artifact_mb']):.2f}" if r["artifact_mb"] else "—"
        pct = f"{min(r['pct']):.2f}" + ("" if max(r["pct"]) - min(r["pct"]) < 5e-3 else f"–{max(r['pct']):.2f}")
        lines.append("| " + " | ".join([r["method"], _fmt_count(r["trainable"]), pct] + cells +
                                        [avg, speed, mb(r["peak_mb"]), mb(r["extra_mb"]), art]) + " |")
    per_task = ["| method | " + " | ".join(f"{t} s/epoch" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for r in rows:
        per_task.append(f"| {r['method']} | " + " | ".join(
            f"{r['s_per_epoch'][t]:.0f}" if t in r["s_per_epoch"] else "—" for t in tasks) + " |")
    return "\n".join(lines) + "\n\nTrain time per epoch, per task (seconds):\n\n" + "\n".join(per_task) + "\n"


def write_report(results: list[dict[str, Any]], cfg: Config, tasks: list[str], methods: list[str], seeds: list[int],
                 one_seed: tuple[str, ...], command: str, out_md: Path) -> None:
    from ptv2.plots import plot_comparison

    rows = summarize(results, cfg, tasks, methods)
    seeds_note = f"seeds {seeds}" + (f" ({', '.join(one_seed)}: seed {seeds[0]} only)" if one_seed else "")
    md = (f"# Method comparison on dev: {', '.join(methods)}\n\nBackbone `{cfg.backbone.name}` "
          f"(pooling {cfg.backbone.pooling}), prompt length {cfg.prompt.length}, {seeds_note}; cells are mean ± std "
          f"over seeds. Model selection on a validation split carved from train; dev is only reported. "
          f"Each run is its own process: *peak RSS* is that process's high-water mark (backbone, data, activations, "
          f"gradients, optimizer state), *peak − loaded* what training added to the loaded model. "
          f"*s/epoch (all tasks)* sums one epoch of every task.\n\nCommand: `{command}`"
          + (f" with the budget of `compare.overrides` in params.yaml: {', '.join(f'`{o}`' for o in cfg.compare.overrides)}"
             if cfg.compare.overrides else "") + "\n\n"
          + table(rows, cfg, tasks, {t: 1 if t in one_seed else len(seeds) for t in tasks})
          + f"\n![comparison]({out_md.with_suffix('.png').name})\n")
    atomic_write_text(out_md, md)
    atomic_write_text(out_md.with_suffix(".json"), json.dumps(
        {"rows": rows, "runs": [{k: v for k, v in r.items() if k != "history"} for r in results]}, indent=2))
    plot_comparison(rows, tasks, {t: cfg.task(t).metrics[0] for t in tasks}, out_md.with_suffix(".png"))


def compare(cfg: Config, tasks: list[str], methods: list[str], seeds: list[int], out_md: Path, work: Path,
            one_seed: tuple[str, ...] = (), isolate: bool = True, track: bool = False) -> list[dict[str, Any]]:
    """Train every method on every task (``seeds`` each; tasks in ``one_seed`` get the first seed only),
    seed by seed so a complete one-seed table exists early; the table is rewritten after every run.
    ``track``: log one MLflow parent run with a child per method x task at the end."""
    from typing import get_args

    from ptv2.config import Method
    from ptv2.errors import ConfigError

    if not tasks or not methods:
        raise ConfigError(f"compare: tasks {tasks} / methods {methods}: name at least one of each "
                          f"(compare.tasks and compare.methods in params.yaml, or --tasks / --methods)")
    for t in tasks:
        cfg.task(t)  # fail early on unknown tasks
    for m in methods:
        if m not in get_args(Method):
            raise ConfigError(f"compare: unknown method {m!r}; expected some of {list(get_args(Method))}")
    results: list[dict[str, Any]] = []
    command = _command("compare")
    todo = [(t, m, s) for k, s in enumerate(seeds) for t in tasks if not (k and t in one_seed) for m in methods]
    busy = []
    for wait, items in ((False, todo), (True, busy)):  # runs another process holds: skipped, then waited for
        for t, m, s in items:
            log.info("== %s / %s / seed %d", t, m, s)
            r = run_one(cfg, t, m, s, work, isolate, wait)
            if r is None:
                log.info("   %s / %s / seed %d is being trained by another process: later", t, m, s)
                busy.append((t, m, s))
                continue
            results.append(dict(r, seed=s))
            write_report(results, cfg, tasks, methods, seeds, one_seed, command, out_md)
    if track:
        from ptv2 import tracking

        params = {"tasks": tasks, "methods": methods, "seeds": seeds, "one_seed": list(one_seed), "command": command,
                  "backbone": cfg.backbone.name, "prompt_length": cfg.prompt.length}
        run_id = tracking.log_comparison(Path.cwd(), cfg.tracking.experiment, params, results,
                                         {t: cfg.task(t).metrics[0] for t in tasks},
                                         [out_md, out_md.with_suffix(".json"), out_md.with_suffix(".png")])
        log.info("logged to MLflow: parent run %s with %d child runs", run_id, len({(r["method"], r["task"]) for r in results}))
    print(out_md.read_text())
    return results


def _cached_train(cfg: Config, task: str, out: Path, init_from: Path | None = None) -> dict[str, Any]:
    from ptv2.run import weights_sha, config_sha, train_task

    # keyed by the pretrained weights, not their path: a rerun pretraining invalidates what was adapted from it
    key = json.dumps({"config_sha": config_sha(cfg, task, init_from is not None),
                      "init_sha": weights_sha(init_from) if init_from else ""})
    return _reuse_or_run(out, key, lambda: train_task(cfg, task, out, init_from=init_from))


def pretrain_key(cfg: Config, tasks: list[str]) -> str:
    """What a pretraining depends on: not the per-task or single-task epoch counts it never reads."""
    d = cfg.to_dict()
    train = {k: v for k, v in d["train"].items() if k != "epochs"}
    specs = {t: {k: v for k, v in d["tasks"][t].items() if k != "epochs"} for t in tasks}
    return json.dumps({"seed": d["seed"], "data_root": d["data_root"], "backbone": d["backbone"],
                       "prompt": d["prompt"], "train": train, "pretrain": d["pretrain"], "tasks": tasks,
                       "specs": specs}, sort_keys=True, default=str)


def _cached_pretrain(cfg: Config, tasks: list[str], out: Path) -> dict[str, Any]:
    from ptv2.multitask import pretrain

    return _reuse_or_run(out, pretrain_key(cfg, tasks), lambda: pretrain(cfg, out, tasks))


def _reuse_or_run(out: Path, key: str, run: Callable[[], Any]) -> dict[str, Any]:
    """``out/metrics.json`` of a finished run with the same ``key`` (``out/key.json``), else ``run()`` it."""
    if (out / "metrics.json").is_file() and (out / "key.json").is_file() and (out / "key.json").read_text() == key:
        return json.loads((out / "metrics.json").read_text())
    run()
    atomic_write_text(out / "key.json", key)
    return json.loads((out / "metrics.json").read_text())


def transfer(cfg: Config, tasks: list[str], held_out: list[str], seeds: list[int], out_md: Path, work: Path) -> None:
    """The multi-task table: (a) single-task from a random prompt, (b) pretrained on the mixture then
    adapted, (c) the multi-task model with no adaptation, (d) each task of ``held_out`` in turn:
    pretrained on the mixture minus that task, then adapted (transfer to an unseen task).
    Mean ± std over seeds, dev metric. Finished runs are reused (keyed by config + init weights)."""
    full = cfg.pretrain.tasks
    pre_all = _cached_pretrain(cfg, full, work / "pretrain_all")
    without: dict[str, list[str]] = {}
    for h in held_out:
        cfg.task(h)
        if h not in full:
            log.warning("%s is not in the mixture: its (b) already is a held-out transfer; no (d) run", h)
            continue
        without[h] = [t for t in full if t != h]
        _cached_pretrain(cfg, without[h], work / f"pretrain_without_{h}")
    res: dict[str, dict[str, list[float]]] = {t: {"a": [], "b": [], "c": [], "d": []} for t in tasks}
    command = _command("transfer")
    for t in tasks:
        metric = cfg.task(t).metrics[0]
        if t in pre_all["metrics"]["dev"]:
            res[t]["c"].append(pre_all["metrics"]["dev"][t][metric])
        for s in seeds:
            c = dataclasses.replace(cfg, seed=s)
            res[t]["a"].append(_cached_train(c, t, work / t / f"a_seed{s}")["metrics"]["dev"][metric])
            res[t]["b"].append(_cached_train(c, t, work / t / f"b_seed{s}", work / "pretrain_all/model")
                               ["metrics"]["dev"][metric])
            if t in without:
                res[t]["d"].append(_cached_train(c, t, work / t / f"d_seed{s}", work / f"pretrain_without_{t}/model")
                                   ["metrics"]["dev"][metric])
            _write_transfer(res, cfg, tasks, full, without, seeds, command, out_md)
    print(out_md.read_text())


def _write_transfer(res, cfg: Config, tasks, full, without, seeds, command, out_md: Path) -> None:
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
    ho = "; ".join(f"without {h}: {rest}" for h, rest in without.items()) or "none"
    md = (f"# Multi-task prompt pretraining → adaptation (dev)\n\nBackbone `{cfg.backbone.name}`, prompt length "
          f"{cfg.prompt.length}, seeds {seeds} (mean ± std). Mixture (b, c): {full}, strategy "
          f"{cfg.pretrain.strategy}, cap {cfg.pretrain.cap}, {cfg.pretrain.epochs} epochs, "
          f"{cfg.pretrain.batching} batches. (d), each task held out in turn: {ho}. Tasks outside the mixture "
          f"have no (c), and their (b) is itself a transfer to an unseen task. "
          f"Selection on a validation split carved from train; dev only reported.\n\nCommand: `{command}`\n\n"
          + "\n".join(lines) + "\n")
    atomic_write_text(out_md, md)
    atomic_write_text(out_md.with_suffix(".json"), json.dumps(res, indent=2))
