"""The method comparison: methods x tasks x seeds on real data -> one results table (markdown + JSON + plot).

Each finished run leaves ``<work>/<task>/<method>/seed<k>/metrics.json``; rerunning the same
command reuses them, so a killed comparison picks up where it stopped. The table is rewritten
after every run, so partial results are always on disk.
"""
from __future__ import annotations

import dataclasses
import logging
import statistics
from pathlib import Path
from typing import Any, get_args

from ptv2.config import Config, Method
from ptv2.errors import ConfigError
from ptv2.experiments.runs import dev_value, run_or_reuse
from ptv2.model.spec import FROZEN  # the table's first row: the bar every method must clear
from ptv2.experiments.tables import COMPARE_TITLE, check_table_target, command_line, count_range, markdown, mean_std
from ptv2.files import atomic_write_text, check_writable, write_json
from ptv2.training.build import check_method_runs_here

log = logging.getLogger(__name__)


def run_one(cfg: Config, task: str, method: str, seed: int, work: Path, isolate: bool = True,
            wait: bool = True) -> dict[str, Any] | None:
    """One (task, method, seed) cell: trained, or reused when finished with the same config; method
    ``frozen``: the task's frozen-backbone baseline."""
    if method == FROZEN:
        c = dataclasses.replace(cfg, seed=seed)
        return run_or_reuse(c, [task], work / task / FROZEN / f"seed{seed}", isolate=isolate, wait=wait, frozen=True)
    c = dataclasses.replace(with_method(cfg, method), seed=seed)
    return run_or_reuse(c, [task], work / task / method / f"seed{seed}", isolate=isolate, wait=wait)


def with_method(cfg: Config, method: str) -> Config:
    """``cfg`` training ``method``; a method without its learning rate or epoch count in ``train`` is one line
    naming the key (it was 'epochs = {...}' without its section, after the runs of the methods before it)."""
    try:
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, method=method))
    except ConfigError as e:
        raise ConfigError(f"train.{e}; add '{method}' to train.lr and train.epochs in params.yaml (or --set "
                          f"'train.epochs={{..., {method}: N}}') to compare it") from None


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
            rt = [r for r in rs if r["tasks"] == [t]]
            if rt:
                row["dev"][t] = [dev_value(r, t, cfg.task(t).metrics[0]) for r in rt]
                row["s_per_epoch"][t] = statistics.mean(r["train_seconds"] / max(1, r["epochs_run"]) for r in rt)
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
    body = []
    for r in rows:
        cells = [mean_std(r["dev"].get(t, [])) + (f" (n={len(r['dev'][t])})" if 0 < len(r["dev"].get(t, []))
                                                    < n_seeds.get(t, 0) else "") for t in tasks]
        avg = "—" if r["average"] is None else f"**{r['average']:.1f}**"
        art = f"{max(r['artifact_mb']):.2f}" if r["artifact_mb"] else "—"
        pct = f"{min(r['pct']):.2f}" + ("" if max(r["pct"]) - min(r["pct"]) < 5e-3 else f"–{max(r['pct']):.2f}")
        body.append([r["method"], count_range(r["trainable"]), pct, *cells, avg,
                     f"{sum(r['s_per_epoch'].values()):.0f}", mb(r["peak_mb"]), mb(r["extra_mb"]), art])
    per_task = [[r["method"]] + [f"{r['s_per_epoch'][t]:.0f}" if t in r["s_per_epoch"] else "—" for t in tasks]
                for r in rows]
    return (markdown(head, body) + "\n\nTrain time per epoch, per task (seconds):\n\n"
            + markdown(["method"] + [f"{t} s/epoch" for t in tasks], per_task) + "\n")


def write_report(results: list[dict[str, Any]], cfg: Config, tasks: list[str], methods: list[str], seeds: list[int],
                 one_seed: tuple[str, ...], command: str, out_md: Path) -> None:
    from ptv2.experiments.plots import plot_comparison

    rows = summarize(results, cfg, tasks, methods)
    seeds_note = f"seeds {seeds}" + (f" ({', '.join(one_seed)}: seed {seeds[0]} only)" if one_seed else "")
    pooling = cfg.backbone.pooling + (", normalised" if cfg.backbone.normalize else "")
    md = (f"{COMPARE_TITLE}: {', '.join(methods)}\n\nBackbone `{cfg.backbone.name}` "
          f"(pooling {pooling}), prompt length {cfg.prompt.length}, {seeds_note}; cells are mean ± std "
          f"over seeds. Model selection on a validation split carved from train; dev is only reported. "
          f"Each run is its own process: *peak RSS* is that process's high-water mark (backbone, data, activations, "
          f"gradients, optimizer state), *peak − loaded* what training added to the loaded model. "
          f"*s/epoch (all tasks)* sums one epoch of every task.\n\nCommand: `{command}`"
          + (f" with the budget of `compare.overrides` in params.yaml: {', '.join(f'`{o}`' for o in cfg.compare.overrides)}"
             " (the command's own `--set`s come after them)" if cfg.compare.overrides else "") + "\n\n"
          + table(rows, cfg, tasks, {t: 1 if t in one_seed else len(seeds) for t in tasks})
          + f"\n![comparison]({out_md.with_suffix('.png').name})\n")
    atomic_write_text(out_md, md)
    write_json(out_md.with_suffix(".json"), {"rows": rows, "runs": [{k: v for k, v in r.items() if k != "history"}
                                                                   for r in results]})
    plot_comparison(rows, tasks, {t: cfg.task(t).metrics[0] for t in tasks}, out_md.with_suffix(".png"))


def compare(cfg: Config, tasks: list[str], methods: list[str], seeds: list[int], out_md: Path, work: Path,
            one_seed: tuple[str, ...] = (), isolate: bool = True, track: bool = False) -> list[dict[str, Any]]:
    """Train every method on every task (``seeds`` each; tasks in ``one_seed`` get the first seed only),
    seed by seed so a complete one-seed table exists early; the table is rewritten after every run.
    ``track``: log one MLflow parent run with a child per method x task at the end."""
    if not tasks or not methods:
        raise ConfigError(f"compare: tasks {tasks} / methods {methods}: name at least one of each "
                          f"(compare.tasks and compare.methods in params.yaml, or --tasks / --methods)")
    for t in tasks:
        cfg.task(t)  # fail early on unknown tasks
    check_table_target(out_md)  # not after the runs
    check_writable(work)
    if track:  # a store that cannot take the comparison fails now, not after every run
        from ptv2.tracking.store import check_tracking

        check_tracking(Path.cwd())
    for m in methods:
        if m not in get_args(Method) and m != FROZEN:
            raise ConfigError(f"compare: unknown method {m!r}; expected some of {list(get_args(Method))}")
        check_method_runs_here(m)  # not after the runs before it (qlora on a CPU machine)
        if m != FROZEN:
            with_method(cfg, m)  # its rate and epochs: not after the runs before it either
    results: list[dict[str, Any]] = []
    command = command_line("compare")
    methods = [FROZEN] + [m for m in methods if m != FROZEN]
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
        from ptv2.tracking import store as tracking

        params = {"tasks": tasks, "methods": methods, "seeds": seeds, "one_seed": list(one_seed), "command": command,
                  "backbone": cfg.backbone.name, "prompt_length": cfg.prompt.length}
        run_id = tracking.log_comparison(Path.cwd(), cfg.tracking.experiment, params, results,
                                         {t: cfg.task(t).metrics[0] for t in tasks},
                                         [out_md, out_md.with_suffix(".json"), out_md.with_suffix(".png")])
        log.info("logged to MLflow: parent run %s with %d child runs", run_id, len({(r["method"], r["tasks"][0]) for r in results}))
    print(out_md.read_text(encoding="utf-8"))
    return results


