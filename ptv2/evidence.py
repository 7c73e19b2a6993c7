"""Paired evidence on the same examples (numpy only): trivial baselines and paired tests.

Used by training (does a trained epoch beat step 0 on val?), the export checks (is int8 worse than fp32?)
and the promotion gate (does a challenger beat the baselines and the champion on dev?).

A difference of a few points on 56 examples (CB: one example is 1.8 points) is chance; these tests say
how likely a difference at least this large is when the two models are equally good:
- ``paired_permutation``: a paired randomization test on the task's own metric (accuracy, F1, MCC,
  correlations, entity F1), one-sided: does A beat B by more than a margin?
  The same test checks int8 against fp32 (is int8 significantly worse?), next to their agreement rate.
  Correlation metrics (``scale_free``) are blind to each model's scale, but a swap puts two models' values
  on one list: each model's predictions are standardized first (same metric, comparable values).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np


def baseline(task_type: str, train_labels: Sequence[Any], n: int) -> list[Any]:
    """The trivial model's predictions for ``n`` dev examples: the most frequent train label
    (classification; ties: the lowest id), the train mean (regression), all "O" (token tasks: pass the
    dev sentences' lengths as ``train_labels``), the first choice (multiple choice)."""
    if task_type == "regression":
        return [float(np.mean(train_labels))] * n
    if task_type == "token_classification":
        return [["O"] * k for k in train_labels]
    if task_type == "multiple_choice":
        return [0] * n
    counts = Counter(train_labels)
    top = max(counts.values())
    return [min(k for k, c in counts.items() if c == top)] * n


SCALE_FREE = ("pearson", "spearman")


def scale_free(metric: str) -> bool:
    """A metric unchanged when one model's predictions are shifted and scaled (correlations): the paired
    test must standardize each model's predictions before swapping them."""
    return metric in SCALE_FREE


def _standardized(x: Sequence[Any]) -> list[float]:
    """(n,) -> (n,) zero mean, unit variance (a constant, e.g. the trivial train-mean model, -> zeros)."""
    a = np.asarray(x, dtype=float)
    sd = a.std()
    return list((a - a.mean()) / (sd if sd > 0 else 1.0))


def paired_permutation(metric: Callable[[Sequence[Any], Sequence[Any]], float], gold: Sequence[Any],
                       a: Sequence[Any], b: Sequence[Any], margin: float = 0.0, *, samples: int,
                       seed: int = 0, standardize: bool = False) -> tuple[float, float]:
    """(metric(a) - metric(b), one-sided p-value of "a beats b by more than ``margin`` points").

    A paired randomization test: if the two models were equally good, which of the pair produced each
    example's prediction would not matter, so each example's two predictions are swapped at random and
    the metric difference recomputed; p = share of swaps at least as far above 0 as the observed
    difference minus the margin. For accuracy it is the exact sign test on the examples where the two
    disagree (3 of 3 on 56 examples: p = 1/8, not 0.05); it works for any metric. ``standardize`` (pass
    ``scale_free(metric)``): each model's predictions are z-scored first. Without it, swapping STS-B
    predictions of a model scaled to 0-5 with raw cosines (0-1) scrambled both: +0.22 pearson on 1,500 dev
    pairs read p = 0.48; standardized, p = 0.003."""
    n = len(gold)
    if not (n == len(a) == len(b)) or n == 0:
        raise ValueError(f"paired test needs aligned, non-empty predictions: {n}, {len(a)}, {len(b)}")
    if standardize:
        a, b = _standardized(a), _standardized(b)
    delta = metric(a, gold) - metric(b, gold)
    if delta <= margin:
        return delta, 1.0
    rng = np.random.default_rng(seed)
    xa, xb, xg = _arrays(a), _arrays(b), _arrays(gold)
    if (xa is None or xb is None) and hasattr(metric, "counts"):  # tag sequences: swap per-sentence counts
        return delta, _swapped_counts(metric, gold, a, b, delta - margin, samples, rng)
    g = gold if xg is None else xg
    hits = 0
    for _ in range(samples):
        swap = rng.random(n) < 0.5
        if xa is not None and xb is not None:  # numbers: swapped in numpy (a Python list per swap cost 2.1 s of
            pa, pb = np.where(swap, xb, xa), np.where(swap, xa, xb)  # 2,000 on STS-B dev; now 0.1 s)
        else:  # tag sequences
            pa = [y if s else x for x, y, s in zip(a, b, swap)]
            pb = [x if s else y for x, y, s in zip(a, b, swap)]
        hits += metric(pa, g) - metric(pb, g) >= delta - margin - 1e-9
    return delta, (hits + 1) / (samples + 1)


def too_few(n: int, alpha: float) -> str | None:
    """Why no paired test on ``n`` examples reaches ``alpha``, or None: the test swaps each example's pair, so its
    p-value is about 1/2^n at least (the observed assignment is one of 2^n, each as likely under the null)."""
    floor = 0.5 ** n if n < 1075 else 0.0
    if floor <= alpha:
        return None
    return f"{n} example(s): no paired test on them reaches p <= {alpha} (its smallest is about 1/2^{n} = {floor:.3g})"


def _swapped_counts(metric: Any, gold: Sequence[Any], a: Sequence[Any], b: Sequence[Any], observed: float,
                    samples: int, rng: np.random.Generator) -> float:
    """The paired test's p for a metric of summed per-example counts (``metrics.Decomposed``): the same swaps as
    rescoring each swapped pair of sequence lists, in numpy."""
    ca, cb = metric.counts(a, gold), metric.counts(b, gold)  # (n, k) each
    total = ca.sum(0) + cb.sum(0)
    hits = 0
    for _ in range(samples):
        swap = rng.random(len(gold)) < 0.5
        sa = np.where(swap[:, None], cb, ca).sum(0)
        hits += metric.of_counts(sa) - metric.of_counts(total - sa) >= observed - 1e-9
    return (hits + 1) / (samples + 1)


def _arrays(x: Sequence[Any]) -> np.ndarray | None:
    """(n,) numeric predictions or labels as an array; None for anything else (token tasks' tag lists)."""
    arr = np.asarray(x) if len(x) and isinstance(x[0], (int, float, np.integer, np.floating)) else None
    return arr if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iuf" else None


def agreement(a: Sequence[Any], b: Sequence[Any], tol: float = 0.0) -> float:
    """Share of examples with the same prediction (numbers: within ``tol``; tag sequences: all tags)."""
    if not a:
        return 1.0
    same = 0
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float):
            same += abs(x - y) <= tol
        else:
            same += x == y
    return same / len(a)
