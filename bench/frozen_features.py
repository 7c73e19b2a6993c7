"""Which frozen features give a pair task's linear probe the most? (issue 23: RTE >= 60 with no training?)

For each seed, the task as params.yaml loads it (train, the val carved from it, dev), each text alone (bi) and the
pair as one row (cross) through the frozen backbone, mean-pooled at every layer; scikit-learn's logistic
regression with C picked on val by log loss; dev accuracy reported (mean ± std over seeds).

    python bench/frozen_features.py --tasks rte,cb,mrpc --seeds 42,1,2 > reports/frozen_features_s25.md
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from ptv2.cli.common import seed_list
from ptv2.config import load_config
from ptv2.data.tasks import load_task_data
from ptv2.model.backbone import load_backbone

KINDS = {  # name -> (bi layers, cross layers); bi vectors enter as [u, v, |u-v|, u*v], every vector L2-normalised
    "bi (last layer; the frozen baseline's features)": ([6], []),
    "cross (last layer)": ([], [6]),
    "bi + cross (last layer)": ([6], [6]),
    "bi, layers 5-6": ([5, 6], []),
    "bi, layers 4-6": ([4, 5, 6], []),
    "bi + cross, layers 4-6": ([6], [4, 5, 6]),
}


@torch.no_grad()
def pooled(model, tok, a: list[str], b: list[str] | None, max_length: int) -> np.ndarray:
    """Mean-pooled hidden states of every layer: (N, layers + 1, H), L2-normalised."""
    out = []
    for i in range(0, len(a), 64):
        x = tok(a[i:i + 64], b[i:i + 64] if b else None, padding=True, truncation=True, max_length=max_length,
                return_tensors="pt")
        m = x["attention_mask"].unsqueeze(-1).float()
        hs = model(**x, output_hidden_states=True).hidden_states
        out.append(torch.nn.functional.normalize(torch.stack([(h * m).sum(1) / m.sum(1) for h in hs], 1), dim=-1))
    return torch.cat(out).numpy()


def features(f: dict[str, np.ndarray], kind: str) -> np.ndarray:
    bi, cross = KINDS[kind]
    u, v = f["u"], f["v"]
    parts = [np.concatenate([u[:, k], v[:, k], np.abs(u[:, k] - v[:, k]), u[:, k] * v[:, k]], -1) for k in bi]
    return np.concatenate(parts + [f["c"][:, k] for k in cross], -1)


def probe(feats: dict[str, dict[str, np.ndarray]], kind: str) -> float:
    """Dev accuracy of the logistic regression whose C wins on val."""
    (xt, yt), (xv, yv), (xd, yd) = ((features(feats[s], kind), feats[s]["y"]) for s in ("train", "val", "dev"))
    fits = [LogisticRegression(C=c, max_iter=3000).fit(xt, yt) for c in (0.1, 0.3, 1, 3, 10, 30, 100)]
    best = min(fits, key=lambda m: log_loss(yv, m.predict_proba(xv), labels=m.classes_))
    return 100 * float((best.predict(xd) == yd).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="rte,cb,mrpc"); ap.add_argument("--seeds", type=seed_list, default="42,1,2")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    seeds, tasks = args.seeds, args.tasks.split(",")
    for task in tasks:  # an unknown task: its one line before the table's head, not under it
        load_config(args.params).task(task)
    print("| task | features | dev acc, mean ± std | per seed |\n|---|---|---|---|")
    for task in tasks:
        scores: dict[str, list[float]] = {k: [] for k in KINDS}
        for seed in seeds:
            cfg = load_config(args.params, [f"seed={seed}"])
            model, tok = load_backbone(cfg.backbone.name)
            td = load_task_data(cfg, task)
            feats = {}
            for s in ("train", "val", "dev"):
                ds = td.split(s)
                feats[s] = {"u": pooled(model.eval(), tok, ds["text_a"], None, cfg.backbone.max_length),
                            "v": pooled(model, tok, ds["text_b"], None, cfg.backbone.max_length),
                            "c": pooled(model, tok, ds["text_a"], ds["text_b"], cfg.backbone.max_length),
                            "y": np.array(ds["label"])}
            for k in KINDS:
                scores[k].append(probe(feats, k))
        for k, v in scores.items():
            print(f"| {task} | {k} | {np.mean(v):.2f} ± {np.std(v):.2f} | {' / '.join(f'{x:.2f}' for x in v)} |",
                  flush=True)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
