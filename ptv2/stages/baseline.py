"""DVC stage `baseline@<task>`: the frozen backbone's own answer to the task (no prompt; a head fitted on its
pooled features, selected on val; for bi-encoded similarity the cosine), tracked in MLflow. The export stage
bundles it (P = 0); the promotion gate's challenger must beat its dev predictions, beside the trivial
baseline's, and it is the candidate served where no trained model beats it."""
from __future__ import annotations

from pathlib import Path

from ptv2.files import write_json
from ptv2.stages.common import parse, root_of, run
from ptv2.tracking.store import tracked
from ptv2.model.spec import FROZEN
from ptv2.training import RUN_ID
from ptv2.training.driver import train


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, task=True, paths=("metrics",))
    out = Path(cfg.adapt.baseline_dir) / args.task
    with tracked(cfg, root_of(args), f"baseline@{args.task}", f"baseline-{args.task}") as (run, on_log):
        res = train(cfg, [args.task], out, on_log=on_log, frozen=True)
        for split, by_task in res.metrics.items():
            run.log_metrics({f"{split}/{k}": v for k, v in by_task[args.task].items()})
        run.log_artifacts(out / "model", "model")
        run_id = run.id
    write_json(out / RUN_ID, {"run_id": run_id})  # the frozen candidate's registered model is logged here
    write_json(args.metrics, {"task": args.task, "method": FROZEN,
                                                       **{s: m[args.task] for s, m in res.metrics.items()}})


if __name__ == "__main__":
    run(main)
