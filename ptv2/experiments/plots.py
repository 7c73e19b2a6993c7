"""PNG plots with matplotlib (Agg): training curves and per-task comparisons; the curves
as CSV for DVC's plots. Atomic writes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ptv2.files import atomic_file, atomic_write_text


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (image files, no display). A user's MPLBACKEND is not read: matplotlib
    validates it on import, so a name this matplotlib lacks ended the report stage in "ValueError: Key backend:
    'x' is not a valid value for backend" (and a notebook's inline backend is no file writer either)."""
    os.environ.pop("MPLBACKEND", None)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_curves(histories: dict[str, list[dict[str, Any]]], path: Path, kept: dict[str, int] | None = None) -> None:
    """One panel per task: train loss and validation score per epoch; ``kept``: the epoch each task's model is
    (selection on val; 0 = the fitted heads before training), marked."""
    plt = _pyplot()
    fig = curves_figure(histories, kept)
    _save(fig, path)
    plt.close(fig)


def curves_figure(histories: dict[str, list[dict[str, Any]]], kept: dict[str, int] | None = None) -> Any:
    """``plot_curves``' figure. Constrained layout: each panel's second y axis (val score) and its label get their
    room, where a fixed grid drew them over the next panel's train-loss axis."""
    plt = _pyplot()
    n = max(1, len(histories))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.4), squeeze=False, layout="constrained")
    for ax, (task, hist) in zip(axes[0], histories.items()):
        ep = [h["epoch"] for h in hist]
        trained = [h for h in hist if h["train_loss"] is not None]  # epoch 0: fitted heads, no training yet
        ax.plot([h["epoch"] for h in trained], [h["train_loss"] for h in trained], "o-", color="tab:blue",
                label="train loss")
        ax.set_xlabel("epoch"); ax.set_ylabel("train loss", color="tab:blue"); ax.set_title(task)
        ax2 = ax.twinx()
        ax2.plot(ep, [h["val_score"] for h in hist], "s--", color="tab:orange", label="val score")
        ax2.set_ylabel("val score", color="tab:orange")
        if kept and task in kept:
            ax.axvline(kept[task], color="gray", linestyle=":", linewidth=1.2)
            ax.set_title(f"{task} (kept: epoch {kept[task]})")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Training curves (selection on val carved from train)")
    return fig


def write_curve_tables(histories: dict[str, list[dict[str, Any]]], folder: Path) -> None:
    """``folder/<task>.csv`` per task: epoch, val_score, train_loss (empty at epoch 0, the fitted heads before
    training): the data `dvc plots show` / `dvc plots diff` draw (dvc.yaml's top-level plots)."""
    import csv
    import io

    for task, hist in histories.items():
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["epoch", "val_score", "train_loss"])
        w.writerows([h["epoch"], h["val_score"], "" if h["train_loss"] is None else h["train_loss"]] for h in hist)
        atomic_write_text(folder / f"{task}.csv", buf.getvalue())


def plot_tasks(scores: dict[str, dict[str, float | None]], path: Path, title: str = "Dev metric per task") -> None:
    """Grouped bars: task x series (e.g. method or with/without adaptation)."""
    plt = _pyplot()
    fig = tasks_figure(scores, title)
    _save(fig, path)
    plt.close(fig)


def tasks_figure(scores: dict[str, dict[str, float | None]], title: str) -> Any:
    """``plot_tasks``' figure. The legend sits right of the bars: inside, it covered some (the report's
    tasks.png: SST-2's)."""
    plt = _pyplot()
    tasks = list(scores)
    series = list(dict.fromkeys(k for v in scores.values() for k in v))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(tasks) * max(1, len(series)) / 1.5), 3.8))
    for i, s in enumerate(series):
        xs = [j + i * width for j in range(len(tasks))]
        ys = [scores[t].get(s) for t in tasks]
        bars = ax.bar(xs, [float("nan") if y is None else y for y in ys], width, label=s)
        ax.bar_label(bars, labels=["" if y is None else f"{y:.1f}" for y in ys], fontsize=8)  # missing: no bar
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(tasks))], tasks)
    ax.set_ylabel("dev metric"); ax.set_title(title); ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def plot_comparison(rows: list[dict[str, Any]], tasks: list[str], metrics: dict[str, str], path: Path) -> None:
    """Three panels: dev metric per task and method; average vs % trainable (log x); cost per method."""
    plt = _pyplot()
    if not rows:
        return
    fig = comparison_figure(rows, tasks, metrics)
    _save(fig, path)
    plt.close(fig)


def comparison_figure(rows: list[dict[str, Any]], tasks: list[str], metrics: dict[str, str]) -> Any:
    """``plot_comparison``'s figure (``rows``: the comparison's, at least one)."""
    plt = _pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(17, 4.4), gridspec_kw={"width_ratios": [2.2, 1, 1.2]})
    width = 0.8 / len(rows)
    top = 0.0
    for i, r in enumerate(rows):
        ys = [sum(r["dev"][t]) / len(r["dev"][t]) if t in r["dev"] else float("nan") for t in tasks]
        a.bar([j + i * width for j in range(len(tasks))], ys, width, label=r["method"])
        top = max([top, *[y for y in ys if y == y]])
    a.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(tasks))], [f"{t}\n({metrics[t]})" for t in tasks])
    a.set_ylabel("dev metric (mean over seeds)"); a.set_title("Dev metric per task"); a.grid(axis="y", alpha=0.3)
    if top > 0:
        a.set_ylim(top=top * 1.2)  # room for the legend above the bars, which it covered
    a.legend(fontsize=7, ncol=min(4, len(rows)), loc="upper center")
    _quality_vs_share(b, rows)
    names = [r["method"] for r in rows]
    c.bar(names, [sum(r["s_per_epoch"].values()) for r in rows], color="tab:gray")
    c.set_ylabel("s / epoch, all tasks"); c.set_title("Cost per method"); c.tick_params(axis="x", rotation=45)
    c2 = c.twinx()
    c2.plot(names, [max(r["peak_mb"]) if r["peak_mb"] else float("nan") for r in rows], "o-", color="tab:red")
    c2.set_ylabel("peak RSS MB", color="tab:red")
    fig.tight_layout()
    return fig


def _quality_vs_share(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Average dev metric against % trainable, log x. Methods at the same point share one label (ptv2 and LoRA
    at r = 8 train the same count: their labels were drawn over each other); ticks at decades only, labelled
    plainly (minor labels of a narrow log range ran into each other)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    points: dict[tuple[float, float], list[tuple[int, str]]] = {}
    for i, r in enumerate(rows):
        if r["average"] is not None:
            points.setdefault((sum(r["pct"]) / len(r["pct"]), r["average"]), []).append((i, r["method"]))
    for (x, y), named in points.items():
        ax.scatter(x, y, s=40, color=f"C{named[0][0]}")  # the first method's colour in the bar panel
        ax.annotate(", ".join(n for _, n in named), (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.margins(y=0.15)
    ax.set_xscale("log")
    if points:
        xs = [x for x, _ in points]
        ax.set_xlim(min(xs) / 3, max(xs) * 3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("% of parameters trained (log)"); ax.set_ylabel("average dev metric")
    ax.set_title("Quality vs trainable share"); ax.grid(alpha=0.3)
