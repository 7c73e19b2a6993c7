"""DVC stage `adapt@<task>`: tune one task from the pretrained prompt, tracked in MLflow."""
from __future__ import annotations

from pathlib import Path

from ptv2.files import write_json
from ptv2.procenv import is_main_rank
from ptv2.stages.common import parse, root_of, run
from ptv2.stages.launch import data_parallel
from ptv2.tracking.store import tracked
from ptv2.training import RUN_ID
from ptv2.training.driver import adapt


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, task=True, paths=("metrics",))
    data_parallel(cfg, __spec__.name, argv)
    out = Path(cfg.adapt.out_dir) / args.task
    if not is_main_rank():  # another rank of the group: train its shard, rank 0 logs and writes
        adapt(cfg, args.task, Path(cfg.pretrain.out_dir) / "model", out)
        return
    with tracked(cfg, root_of(args), f"adapt@{args.task}", f"adapt-{args.task}") as (run, on_log):
        res = adapt(cfg, args.task, Path(cfg.pretrain.out_dir) / "model", out, on_log=on_log)
        for split, by_task in res.metrics.items():
            run.log_metrics({f"{split}/{k}": v for k, v in by_task[args.task].items()})
        run.log_artifacts(out / "model", "model")
        run.log_artifacts(out / "metrics.json")
        run_id = run.id
    write_json(out / RUN_ID, {"run_id": run_id})
    write_json(args.metrics, {"task": args.task, "trainable_params": res.record["trainable_params"],
                                                     **{s: m[args.task] for s, m in res.metrics.items()}})


if __name__ == "__main__":
    run(main)
