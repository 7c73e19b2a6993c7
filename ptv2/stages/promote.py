"""DVC stage `promote@<task>`: log the task's ONNX bundle as an MLflow pyfunc model, register it
(alias challenger) and apply the gate (dev metric vs champion, ONNX parity, int8 drop)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ptv2.export.deploy import bundle_for
from ptv2.export.onnx_export import subset_bundle
from ptv2.files import write_json
from ptv2.stages.common import parse, root_of
from ptv2.tracking import registry
from ptv2.tracking import store as tracking
from ptv2.training.fingerprint import eval_data_sha
from ptv2.training.inference import evaluate_saved


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, task=True)
    root, task = root_of(args), args.task
    out = Path(cfg.adapt.out_dir) / task
    metric_name = cfg.task(task).metrics[0]
    value = json.loads((out / "metrics.json").read_text())["metrics"]["dev"][task][metric_name]
    run_id = json.loads((out / "mlflow.json").read_text())["run_id"]
    checks = json.loads(Path("metrics/export.json").read_text()).get(task, {})
    name = f"{cfg.tracking.registry_prefix}{task}"
    with tempfile.TemporaryDirectory() as tmp:
        bundle = subset_bundle(bundle_for(cfg.export.out_dir, task), [task], Path(tmp) / "bundle")
        uri = tracking.log_bundle_model(root, run_id, bundle, {"adapter": out / "model"})

    def rescore(version: str) -> float:  # the champion, on today's eval data
        with tempfile.TemporaryDirectory() as tmp:
            path = tracking.download_version(root, name, version, tmp)
            return evaluate_saved(cfg, path / "artifacts" / "model", task, "dev")[metric_name]

    d = registry.register_and_gate(root, name, run_id, value, metric_name, eval_data_sha(cfg, task),
                                   cfg.tracking.promote_margin, parity_ok=checks.get("parity_ok"),
                                   int8_ok=checks.get("int8_ok"), rescore_champion=rescore, artifact_path=uri)
    write_json(f"metrics/promote/{task}.json", {"task": task, "version": d.version, "promoted": d.promoted,
                                                 "reason": d.reason, "challenger": d.challenger,
                                                 "champion_before": d.champion, "deploy_checks": checks})


if __name__ == "__main__":
    main()
