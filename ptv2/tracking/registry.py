"""Promotion gate: a new version is ``challenger``; it becomes ``champion`` only when it is at
least as good as the current champion on the same eval data (plus a margin) and, when an ONNX
parity result is given, parity passed. Per task: each task has its own registered model.
The decision, both numbers and the reason are tagged on the version."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ptv2.tracking import store as tracking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    challenger: float
    champion: float | None
    version: str = ""

    def tags(self) -> dict[str, str]:
        return {"gate.promoted": str(self.promoted).lower(), "gate.reason": self.reason,
                "gate.challenger_metric": f"{self.challenger:.4f}",
                "gate.champion_metric": "" if self.champion is None else f"{self.champion:.4f}"}


def decide(challenger: float, champion: float | None, margin: float = 0.0, parity_ok: bool | None = None,
           int8_ok: bool | None = None) -> Decision:
    """Pure gate. ``champion`` None means there is none yet; None for a check means not run."""
    if parity_ok is False:
        return Decision(False, "ONNX parity check failed", challenger, champion)
    if int8_ok is False:
        return Decision(False, "int8 dev metric dropped more than export.max_int8_drop", challenger, champion)
    if champion is None:
        return Decision(True, "no champion yet", challenger, None)
    if challenger >= champion + margin:
        return Decision(True, f"{challenger:.2f} >= champion {champion:.2f} + margin {margin}", challenger, champion)
    return Decision(False, f"{challenger:.2f} < champion {champion:.2f} + margin {margin}", challenger, champion)


def register_and_gate(root: str | Path, name: str, run_id: str, metric: float, metric_name: str, eval_sha: str,
                      margin: float = 0.0, parity_ok: bool | None = None, int8_ok: bool | None = None,
                      rescore_champion: Callable[[str], float] | None = None,
                      artifact_path: str = "model") -> Decision:
    """Register ``run_id``'s model as a new version (alias challenger) and apply the gate.
    When the champion was scored on other eval data, ``rescore_champion(version)`` re-scores it."""
    version = tracking.register_version(root, name, run_id, artifact_path,
                                        {"metric_name": metric_name, "metric": f"{metric:.6f}", "eval_sha": eval_sha})
    champ = tracking.alias_version(root, name, "champion")
    champ_metric = None
    if champ is not None:
        cv, ctags = champ
        if ctags.get("eval_sha") == eval_sha or rescore_champion is None:
            champ_metric = float(ctags["metric"])
        else:
            champ_metric = rescore_champion(cv)  # same eval data for both
            log.info("champion v%s re-scored on the current eval data: %.3f", cv, champ_metric)
    d = decide(metric, champ_metric, margin, parity_ok, int8_ok)
    tracking.set_alias(root, name, "challenger", version)
    if d.promoted:
        tracking.set_alias(root, name, "champion", version)
    tracking.tag_version(root, name, version, d.tags())
    log.info("%s v%s: %s (%s)", name, version, "promoted to champion" if d.promoted else "not promoted", d.reason)
    return Decision(d.promoted, d.reason, d.challenger, d.champion, version)
