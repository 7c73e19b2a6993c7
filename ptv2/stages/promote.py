"""DVC stage `promote@<task>`: register the adapted model (alias challenger) and apply the gate."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ptv2 import registry, tracking
from ptv2.run import eval_data_sha, evaluate_saved
from ptv2.stages.common import parse, root_of
from ptv2.train import write_json


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, task=True)
    root, task = root_of(args), args.task
    out = Path(cfg.adapt.out_dir) / task
    metric_name = cfg.task(task).metrics[0]
    value = json.loads((out / "metrics.json").read_text())["metrics"]["dev"][metric_name]
    run_id = json.loads((out / "mlflow.json").read_text())["run_id"]
    name = registry.model_name(cfg.tracking.registry_prefix, task)

    def rescore(version: str) -> float:  # the champion, on today's eval data
        with tempfile.TemporaryDirectory() as tmp:
            path = tracking.download_version(root, name, version, tmp)
            return evaluate_saved(cfg, path, task, "dev")[metric_name]

    d = registry.register_and_gate(root, name, run_id, value, metric_name, eval_data_sha(cfg, task),
                                   cfg.tracking.promote_margin, rescore_champion=rescore)
    write_json(f"metrics/promote/{task}.json", {"task": task, "version": d.version, "promoted": d.promoted,
                                                 "reason": d.reason, "challenger": d.challenger,
                                                 "champion_before": d.champion})


if __name__ == "__main__":
    main()
