"""Task metrics, in percent (x100). Pure numpy/scipy/seqeval."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean() * 100)


def f1(pred: np.ndarray, gold: np.ndarray, positive: int = 1) -> float:
    """Binary F1 of the positive class (as GLUE reports for MRPC); for two-label tasks (the config checks)."""
    tp = float(((pred == positive) & (gold == positive)).sum())
    denom = float((pred == positive).sum() + (gold == positive).sum())
    return float(2 * tp / denom * 100) if denom else 0.0


def f1_macro(pred: np.ndarray, gold: np.ndarray) -> float:
    """Mean F1 over the classes in gold or pred (SuperGLUE's CB). It once stood in for ``f1`` when an array held an
    id above 1, so the same task's F1 was binary on a split with no third class and macro on another."""
    return float(np.mean([f1(pred, gold, int(c)) for c in np.union1d(gold, pred)])) if len(gold) else 0.0


def mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation over K classes (Gorodkin's R_K: the binary MCC at K = 2); 0 when undefined (a constant
    predictor). The binary formula alone read a 3-class task as class 1 against class 0, ignoring the rest."""
    classes = np.union1d(gold, pred)
    p = np.array([(pred == c).sum() for c in classes], float)
    t = np.array([(gold == c).sum() for c in classes], float)
    n, correct = float(len(gold)), float((pred == gold).sum())
    denom = np.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float((correct * n - p @ t) / denom * 100) if denom else 0.0


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """(n,), (n,) -> Pearson's r in [-1, 1]: what ``scipy.stats.pearsonr`` computes (centred, normalised, dot;
    equal to it within 1e-12), without its checks, which cost ~0.6 ms a call: the paired test calls it 4,000
    times on STS-B dev."""
    xm, ym = x - x.mean(), y - y.mean()
    r = float(np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym)))
    return r if math.isnan(r) else max(-1.0, min(1.0, r))  # min(1.0, nan) is 1.0: NaN predictions read 100


def _corr(fn: Callable[[np.ndarray, np.ndarray], float], pred: np.ndarray, gold: np.ndarray) -> float:
    """A correlation in points; 0 for a constant input (np.std of equal floats can be 1e-16, not 0, so
    compare the range; scipy would answer nan) and for a NaN one (a diverged model)."""
    if np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return 0.0
    r = float(fn(pred, gold) * 100)
    return 0.0 if np.isnan(r) else r


def entity_counts(pred_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> np.ndarray:
    """n sentences -> (n, 3): entities predicted right, predicted, gold, per sentence, as seqeval chunks them
    (its ``get_entities``; it joins sentences with an "O", so no entity spans two). Their sums decide entity F1:
    the paired test swaps these rows instead of rescoring 3,250 CoNLL sentences with seqeval 4,000 times (0.08 s
    a call here: a token task's promote stage spent minutes in it)."""
    from seqeval.metrics.sequence_labeling import get_entities

    out = np.zeros((len(gold_tags), 3))
    for i, (p, g) in enumerate(zip(pred_tags, gold_tags)):
        ps, gs = set(get_entities(list(p))), set(get_entities(list(g)))
        out[i] = (len(ps & gs), len(ps), len(gs))
    return out


def f1_of_counts(c: np.ndarray) -> float:
    """(3,) summed (right, predicted, gold) -> micro entity F1 in points (seqeval's f1_score; 0 with no entities)."""
    right, pred, gold = (float(x) for x in c)
    return 200 * right / (pred + gold) if pred + gold else 0.0


@dataclass(frozen=True)
class Decomposed:
    """A metric that is a function of per-example counts, summed (entity F1): ``evidence.paired_permutation``
    swaps count rows rather than rescoring sequences."""

    counts: Callable[[Any, Any], np.ndarray]  # (pred, gold) -> (n, k)
    of_counts: Callable[[np.ndarray], float]  # (k,) -> points

    def __call__(self, pred: Any, gold: Any) -> float:
        return self.of_counts(self.counts(pred, gold).sum(0))


ENTITY_F1 = Decomposed(entity_counts, f1_of_counts)  # seqeval's micro entity F1, in points


def compute(names: list[str], pred, gold) -> dict[str, float]:
    """``pred``/``gold``: arrays of ids (classification), floats (regression), or tag sequences."""
    out: dict[str, float] = {}
    for n in names:
        if n == "accuracy":
            out[n] = accuracy(np.asarray(pred), np.asarray(gold))
        elif n == "f1":
            out[n] = f1(np.asarray(pred), np.asarray(gold))
        elif n == "f1_macro":
            out[n] = f1_macro(np.asarray(pred), np.asarray(gold))
        elif n == "mcc":
            out[n] = mcc(np.asarray(pred), np.asarray(gold))
        elif n == "pearson":
            out[n] = _corr(_pearson, np.asarray(pred, float), np.asarray(gold, float))
        elif n == "spearman":
            from scipy import stats  # here, not at the top: scipy.stats costs every stage process ~1 s to import

            out[n] = _corr(lambda x, y: stats.spearmanr(x, y)[0], np.asarray(pred, float), np.asarray(gold, float))
        elif n == "entity_f1":
            out[n] = ENTITY_F1(pred, gold)
        else:
            raise ValueError(f"unknown metric {n!r}")
    return out


def scorer(metric: str) -> Callable[[Any, Any], float]:
    """(pred, gold) -> one metric in points: what the paired tests compare."""
    if metric == "entity_f1":
        return ENTITY_F1
    return lambda pred, gold: compute([metric], pred, gold)[metric]
