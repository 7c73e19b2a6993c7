"""DVC stage `report`: one metrics table (markdown) and PNG plots a person would rather look at."""
from __future__ import annotations

import json
from pathlib import Path

from ptv2.experiments.plots import plot_curves, plot_tasks, write_curve_tables
from ptv2.experiments.tables import markdown
from ptv2.files import atomic_write_text
from ptv2.stages.common import parse, run


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, paths=("pretrain", "baselines", "promote", "publish", "out"))
    pre = json.loads(args.pretrain.read_text())
    rows, curves = [], {}
    for task in cfg.adapt.tasks:
        m = json.loads((Path(cfg.adapt.out_dir) / task / "metrics.json").read_text())
        metric = cfg.task(task).metrics[0]
        no_adapt = pre.get("dev", {}).get(task, {}).get(metric)
        frozen = json.loads((args.baselines / f"{task}.json").read_text())["dev"][metric]
        rows.append((task, metric, m["method"], m["metrics"]["dev"][task][metric], no_adapt, frozen,
                     m["best_epoch"], m["train_seconds"], m.get("start", "pretrained")))
        curves[task] = m["history"]
    # the method says which of the family this project trained (`dvc exp run -S train.method=lora` ran the same graph)
    table = markdown(["task", "metric", "method", "adapted (dev)", "pretrained, no adaptation (dev)",
                      "frozen backbone + fitted head (dev)", "best epoch (0 = fitted head only)", "train s",
                      "started from"],
                     [[t, metric, meth, f"{dev:.1f}", "—" if na is None else f"{na:.1f}", f"{fz:.1f}", be,
                       f"{secs:.0f}", st] for t, metric, meth, dev, na, fz, be, secs, st in rows])
    out = args.out
    gate = gate_section(cfg.adapt.tasks, args.promote, json.loads(args.publish.read_text()),
                        cfg.tracking.multitask_model)
    atomic_write_text(out / "metrics.md", "# Pipeline metrics (dev)\n\n" + table + "\n\n" + gate)
    plot_curves(curves, out / "curves.png", kept={t: be for t, _, _, _, _, _, be, *_ in rows})
    write_curve_tables(curves, out / "curves")
    plot_tasks({t: {"frozen backbone": fz, "adapted": dev, "no adaptation": na} for t, _, _, dev, na, fz, *_ in rows},
               out / "tasks.png")
    print(table + "\n\n" + gate)


def gate_section(tasks: list[str], promote: Path, publish: dict, model: str) -> str:
    """Each task's promotion decision (the gate's own reason) and what the multi-task ``model`` serves for it:
    the trained model, the frozen baseline (nothing trained beat it) or an earlier champion."""
    rows = []
    for task in tasks:
        d = json.loads((promote / f"{task}.json").read_text())
        served = publish.get("tasks", {}).get(task)
        frozen = d.get("frozen_candidate") or {}
        if served is None:
            why = publish.get("excluded", {}).get(task)
            if why is None and frozen and not frozen.get("promoted"):  # "not published" alone hid the reason
                why = f"no champion: the frozen baseline v{frozen['version']} was refused too ({frozen['reason']})"
            what = "not served: " + (why or "not published")
        elif served == d["version"]:
            what = f"v{served}, the trained model"
        elif served == frozen.get("version"):
            what = f"v{served}, the frozen baseline"
        elif publish.get("candidates", {}).get(task) == "frozen":  # this run's gate kept it: say what it is
            what = f"v{served}, the frozen baseline (an earlier champion)"
        else:
            what = f"v{served}, an earlier champion"
        rows.append([task, f"{d['challenger']:.2f} (v{d['version']})", "yes" if d["promoted"] else "no", d["reason"],
                     what])
    head = (f"## Promotion gate, and what `{model}` serves\n\nA trained model is promoted only if it beats the "
            f"trivial and the frozen baselines by the one-sided paired permutation test on dev; where it does not, "
            f"the frozen baseline is a candidate of its own.\n\n")
    dropped = publish.get("dropped") or []
    gone = (f"\nNo longer served by `{model}` (taken out of adapt.tasks): {', '.join(dropped)}; each stays "
            f"registered on its own model (`@champion`).\n" if dropped else "")
    return head + markdown(["task", "trained (dev)", "promoted", "the gate's reason", "served"], rows) + "\n" + gone


if __name__ == "__main__":
    run(main)
