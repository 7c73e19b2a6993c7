"""One task's promotion (what the `promote@<task>` stage runs): log its ONNX bundle as an MLflow pyfunc
model, register it, and gate it on evidence: its per-example dev predictions (from the export checks)
against the trivial baseline and against the champion's bundle re-run on the same examples."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ptv2.config import Config
from ptv2.data.tasks import load_task_data
from ptv2.errors import ArtifactError
from ptv2.export.checks import bundle_predictions, scorer, train_labels_for_baseline
from ptv2.export.deploy import bundle_for
from ptv2.export.compose import subset_bundle
from ptv2.serving.bundle import Bundle, int8_serves
from ptv2.tracking import store
from ptv2.tracking.evidence import baseline
from ptv2.tracking.registry import GateData, register_and_gate


def served_in(cfg: Config, checks: dict[str, Any]) -> str:
    """Which encoder the registered model serves the task with: "int8" or "fp32" (``serving.int8`` and
    ``serving.int8_min_agreement`` applied to the export's int8 checks)."""
    return "int8" if cfg.serving.int8 and int8_serves(checks, cfg.serving.int8_min_agreement) else "fp32"


def promote_task(cfg: Config, root: Path, task: str) -> dict[str, Any]:
    out = Path(cfg.adapt.out_dir) / task
    checks_file = Path(cfg.export.checks_dir) / f"{task}.json"
    if not checks_file.is_file():
        raise ArtifactError(f"{checks_file} is missing: the export stage did not check task {task!r}; "
                            f"run `dvc repro export`")
    pred = json.loads(checks_file.read_text())
    checks = json.loads(Path("metrics/export.json").read_text()).get(task, {})
    run_id = json.loads((out / "mlflow.json").read_text())["run_id"]
    td = load_task_data(cfg, task)
    name = f"{cfg.tracking.registry_prefix}{task}"
    with tempfile.TemporaryDirectory() as tmp:
        bundle = subset_bundle(bundle_for(cfg.export.out_dir, task), [task], Path(tmp) / "bundle")
        uri = store.log_bundle_model(root, run_id, bundle, {"adapter": out / "model"},
                                     serving=cfg.serving)

    def champion_predictions(version: str) -> list[Any]:  # the champion's own bundle, on today's dev data
        with tempfile.TemporaryDirectory() as tmp:
            return bundle_predictions(Bundle(store.download_bundle(root, name, version, tmp)), td)

    data = GateData(pred["metric"], scorer(pred["metric"]), pred["gold"], pred["fp32"],
                    baseline(td.spec.type, train_labels_for_baseline(td), len(pred["gold"])), champion_predictions)
    t = cfg.tracking
    d = register_and_gate(root, name, run_id, uri, data, t.promote_alpha, t.promote_margin, t.permutation_samples,
                          parity_ok=checks.get("parity_ok"),
                          tags={"int8_agreement": str(checks.get("int8_agreement", "")),
                                "served": served_in(cfg, checks)})
    e = d.evidence
    return {"task": task, "version": d.version, "promoted": d.promoted, "reason": d.reason, "metric": e.metric,
            "challenger": e.challenger, "baseline": e.baseline, "p_vs_baseline": e.p_baseline,
            "champion_before": e.champion, "p_vs_champion": e.p_champion, "test": e.test, "deploy_checks": checks}
