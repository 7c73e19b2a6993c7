"""The promotion gate: a new version is ``challenger``; it becomes ``champion`` only on evidence.

On the same dev examples, the challenger must beat (a) each of the task's baselines: the trivial one
(majority class, train mean, all "O") and the frozen backbone's (its own pooled features with a fitted
head; for similarity, the cosine), and (b) the current champion (re-scored on today's dev data; one that cannot
answer the task as params.yaml now defines it, ``ChampionUnfit``, is not compared), each by a one-sided paired
permutation test at level ``tracking.promote_alpha`` with margin ``tracking.promote_margin`` (metric points); its
ONNX export must have passed parity (checked at export; whether int8 may serve the task is decided there too, not
here). Per task: each task has its own registered model. Scores, the baseline, the test and its p-values are tagged
on the version.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ptv2.errors import TrackingError
from ptv2.model.spec import FROZEN
from ptv2.tracking import registry
from ptv2.evidence import paired_permutation, scale_free, too_few

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evidence:
    """What the gate weighs: the challenger's, each baseline's and the champion's dev metric and the p-values
    of "challenger beats it"; ``None`` where there is no champion or a check did not run.
    ``baselines``: name ("trivial", "frozen") -> (its metric, p of "challenger beats it")."""

    metric: str
    challenger: float
    baselines: dict[str, tuple[float, float]]
    champion: float | None = None
    p_champion: float | None = None
    parity_ok: bool | None = None
    test: str = ""
    unfit: str = ""  # why the champion could not be compared (it answers another form of the task)

    @property
    def strongest(self) -> str:
        """The baseline with the best metric: the one a user would otherwise deploy."""
        return max(self.baselines, key=lambda k: self.baselines[k][0])

    @property
    def baseline(self) -> float:
        return self.baselines[self.strongest][0]

    @property
    def p_baseline(self) -> float:
        """The largest p over the baselines: the challenger must beat every one."""
        return max(p for _, p in self.baselines.values())


class ChampionUnfit(Exception):
    """The champion cannot answer the task as params.yaml defines it now (its type or its texts changed since it
    was trained): there is nothing to compare, so the challenger is judged on the baselines alone."""


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    evidence: Evidence
    version: str = ""

    def tags(self) -> dict[str, str]:
        e = self.evidence
        num = lambda x: "" if x is None else f"{x:.4f}"  # noqa: E731
        per = {}
        for name, (score, p) in e.baselines.items():
            per |= {f"gate.{name}_metric": num(score), f"gate.p_vs_{name}": num(p)}
        return {"gate.promoted": str(self.promoted).lower(), "gate.reason": self.reason, "gate.metric": e.metric,
                "gate.challenger_metric": num(e.challenger), "gate.baseline_metric": num(e.baseline),
                "gate.baseline": e.strongest, "gate.champion_metric": num(e.champion),
                "gate.p_vs_baseline": num(e.p_baseline), "gate.p_vs_champion": num(e.p_champion),
                "gate.test": e.test, **per}


def decide(e: Evidence, alpha: float) -> Decision:
    """Pure gate over the evidence."""
    if e.parity_ok is False:
        return Decision(False, "ONNX parity check failed", e)
    for name, (score, p) in sorted(e.baselines.items(), key=lambda kv: -kv[1][0]):
        if p >= alpha:
            return Decision(False, f"not better than the {name} baseline: {e.challenger:.2f} vs {score:.2f}, "
                                   f"p = {p:.3f} >= {alpha}", e)
    beats = ", ".join(f"{name} {score:.2f} (p = {p:.3f})" for name, (score, p) in e.baselines.items())
    if e.champion is None:
        return Decision(True, f"{e.challenger:.2f} beats the baselines: {beats}; {e.unfit or 'no champion yet'}", e)
    if e.p_champion is not None and e.p_champion < alpha:
        return Decision(True, f"beats champion {e.champion:.2f} with {e.challenger:.2f} (p = {e.p_champion:.3f}) "
                              f"and the baselines: {beats}", e)
    return Decision(False, f"not shown better than champion: {e.challenger:.2f} vs {e.champion:.2f}, "
                           f"p = {e.p_champion:.3f} >= {alpha}", e)


@dataclass(frozen=True)
class GateData:
    """The dev examples both models are judged on, and how: gold labels, the challenger's and each
    baseline's predictions, the metric (points) and a way to get the champion's predictions."""

    metric: str
    score: Callable[[Sequence[Any], Sequence[Any]], float]  # (pred, gold) -> points
    gold: Sequence[Any]
    challenger: Sequence[Any]
    baselines: dict[str, Sequence[Any]]  # "trivial", "frozen" -> predictions
    champion_predictions: Callable[[str], Sequence[Any]]  # registered version -> its predictions


def register_and_gate(root: str | Path, name: str, run_id: str, artifact_path: str, data: GateData,
                      alpha: float, margin: float, samples: int, parity_ok: bool | None = None,
                      tags: dict[str, str] | None = None) -> Decision:
    """Register ``run_id``'s model as a new version (alias challenger) and apply the gate."""
    score = lambda p: data.score(p, data.gold)  # noqa: E731
    test = f"one-sided paired permutation test, {samples} random swaps over {len(data.gold)} dev examples, margin {margin}"
    std = scale_free(data.metric)  # correlations: each model's predictions standardized before swapping
    bases = {name: (score(pred), paired_permutation(data.score, data.gold, data.challenger, pred, margin, samples=samples,
                                                    standardize=std)[1])
             for name, pred in data.baselines.items()}
    ev = Evidence(data.metric, score(data.challenger), bases, parity_ok=parity_ok, test=test)
    if why := too_few(len(data.gold), alpha):
        log.warning("%s: dev has %s, so no model can be promoted on it: give the task more dev rows", name, why)
    with registry.gate_lock(root):  # another pipeline's gate on this store waits (see _versus_champion)
        version = registry.register_version(root, name, run_id, artifact_path,
                                            {"metric_name": data.metric, "metric": f"{ev.challenger:.6f}", **(tags or {})})
        ev = _versus_champion(root, name, data, ev, margin, samples)
        d = decide(ev, alpha)
        registry.set_alias(root, name, "challenger", version)
        if d.promoted:
            registry.set_alias(root, name, "champion", version)
    registry.tag_version(root, name, version, d.tags())
    what = " (the frozen baseline)" if (tags or {}).get("candidate") == FROZEN else ""  # else read as a trained one
    log.info("%s v%s%s: %s (%s)", name, version, what, "promoted to champion" if d.promoted else "not promoted",
             d.reason)
    return Decision(d.promoted, d.reason, ev, version)


def _versus_champion(root: str | Path, name: str, data: GateData, ev: Evidence, margin: float,
                     samples: int) -> Evidence:
    """``ev`` with the champion's score and the p-value of "the challenger beats it" (unchanged: no champion). The
    champion is read again after the comparison: on a tracking server, which no lock here covers, another
    pipeline's gate may have moved it meanwhile, and the challenger is then compared with the new one."""
    std = scale_free(data.metric)  # correlations: each model's predictions standardized before swapping
    champ = registry.alias_version(root, name, "champion")
    for _ in range(5):
        if champ is None:
            return ev
        try:
            preds = data.champion_predictions(champ[0])  # re-scored on today's dev examples
        except ChampionUnfit as why:
            scored = dataclasses.replace(ev, unfit=f"champion v{champ[0]} {why}")
        else:
            _, p_champ = paired_permutation(data.score, data.gold, data.challenger, preds, margin, samples=samples,
                                            standardize=std)
            scored = dataclasses.replace(ev, champion=data.score(preds, data.gold), p_champion=p_champ)
        now = registry.alias_version(root, name, "champion")
        if now is not None and now[0] == champ[0]:
            if scored.unfit:
                log.warning("%s: %s; judged on the baselines alone", name, scored.unfit)
            return scored
        log.warning("%s: the champion moved from v%s to %s while this gate compared (another pipeline on this "
                    "store); comparing again", name, champ[0], f"v{now[0]}" if now else "none")
        champ = now
    raise TrackingError(f"{name}: the champion kept moving while this gate compared (other pipelines promoting on "
                        f"this store); rerun the promote stage once they are done")
