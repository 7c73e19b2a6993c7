"""Dev scores of a grid of saved runs, with the gate's paired test, for the (a)/(b)/(d) transfer tables.

    python bench/transfer_runs.py --root DIR --tasks rte,mrpc --seeds 42,1,2 --out runs.json [--preds DIR]

DIR holds `ptv2 train` / `ptv2 adapt` / `ptv2 baseline` outputs named ``<task>_<kind>_s<seed>`` (kinds:
``frozen`` = the frozen backbone + fitted head, ``own`` = (a) the task's own start, ``from_mt`` = (b) adapted
from the default mixture, ``from_ho`` = (d) adapted from the mixture without that task, or any other name).
For each task and seed: every run's dev metric, the epoch it kept, the one-sided paired permutation test
(2,000 swaps, as the promotion gate) against the frozen run and against the ``own`` run, and the trivial
baseline; ``--preds`` also writes each run's dev predictions (to compare with runs made elsewhere).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ptv2.cli.common import folder, seed_list
from ptv2.config import load_config
from ptv2.data.tasks import load_task_data
from ptv2.errors import Ptv2Error
from ptv2.evidence import baseline, paired_permutation, scale_free
from ptv2.files import atomic_write_text
from ptv2.training import metrics
from ptv2.training.build import load_model
from ptv2.training.evaluate import predictions
from ptv2.training.splits import encode


def score_runs(root: Path, task: str, seed: int, params: str, preds_dir: Path | None) -> dict:
    """{kind: {dev, kept, p_vs_frozen, p_vs_own}, trivial: {dev}, metric} for one task and seed."""
    cfg = load_config(params, [f"seed={seed}"])
    td = load_task_data(cfg, task)
    pat = re.compile(rf"{re.escape(task)}_(.+)_s{seed}$")
    preds, row, gold, metric = {}, {}, None, cfg.task(task).metrics[0]
    for d in sorted(p for p in root.iterdir() if pat.match(p.name) and (p / "model/manifest.json").is_file()):
        kind = pat.match(d.name).group(1)
        model, tok, spec = load_model(d / "model")
        sp = encode(td, "dev", tok, spec.max_length, spec.tasks[task].pair_encoding)
        pred, gold = predictions(model, task, sp.feats, sp.ds, td.labels, tok.pad_token_id, 128)
        preds[kind] = pred
        rec = json.loads((d / "metrics.json").read_text())
        row[kind] = {"dev": metrics.compute([metric], pred, gold)[metric], "kept": rec.get("best_epoch")}
        if preds_dir is not None:
            atomic_write_text(preds_dir / f"{d.name}.json", json.dumps({"pred": pred, "gold": gold}, default=float))
    if gold is None:
        return {}
    triv = baseline(cfg.task(task).type, list(td.split("train")["label"]), len(gold))
    row["trivial"] = {"dev": metrics.compute([metric], triv, gold)[metric]}
    fn = metrics.scorer(metric)
    for kind in preds:
        for ref in ("frozen", "own"):
            if kind != ref and ref in preds and not (ref == "own" and kind == "frozen"):
                row[kind][f"p_vs_{ref}"] = paired_permutation(fn, gold, preds[kind], preds[ref], samples=2000,
                                                              standardize=scale_free(metric))[1]
    return {"metric": metric, **row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=folder, required=True, help="the folder holding the runs")
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--seeds", type=seed_list, required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preds", type=Path)
    a = ap.parse_args()
    seeds = a.seeds
    if a.preds is not None:
        a.preds.mkdir(parents=True, exist_ok=True)
    res = {}
    try:
        for t in a.tasks.split(","):
            for s in seeds:
                res[f"{t}/{s}"] = score_runs(a.root, t, s, a.params, a.preds)
                print(t, s, json.dumps(res[f"{t}/{s}"]), flush=True)
                atomic_write_text(a.out, json.dumps(res, indent=1))  # after each, so a cut-off run leaves what it scored
    except Ptv2Error as e:  # an unknown task, bad params, a tampered model folder: one line, exit 2
        ap.error(str(e))


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
