"""DVC stage `pretrain`: multi-task prompt pretraining on the mixture, tracked in MLflow."""
from __future__ import annotations

from pathlib import Path

from ptv2.config import Config
from ptv2.errors import ConfigError
from ptv2.files import write_json
from ptv2.procenv import is_main_rank
from ptv2.stages.common import parse, root_of, run
from ptv2.stages.launch import data_parallel
from ptv2.tracking.store import tracked
from ptv2.training.driver import pretrain


def check_adaptable(cfg: Config) -> None:
    """The pipeline's adapt stages continue this stage's prompt with ``train.method``: Prefix-Tuning saves its prompt
    folded (the MLP it trains through dropped), which no prefix_tuning run can continue; they refused it only once
    pretraining had run (`ptv2 pretrain` alone keeps it, and `ptv2 adapt` continues it as ptv2)."""
    if cfg.train.method == "prefix_tuning":
        raise ConfigError("train.method = 'prefix_tuning': the pipeline adapts its pretrained prompt per task, and "
                          "Prefix-Tuning saves that prompt folded (its MLP dropped), so no adapt stage could continue "
                          "it; for Prefix-Tuning through the pipeline set train.method ptv2 with prompt.reparam true "
                          "(the same MLP-made prefixes, saved unfolded so that adaptation continues them)")


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, paths=("metrics",))
    check_adaptable(cfg)  # before the pretraining, not after it
    data_parallel(cfg, __spec__.name, argv)
    out = Path(cfg.pretrain.out_dir)
    if not is_main_rank():  # another rank of the group: train its shard, rank 0 logs and writes
        pretrain(cfg, out)
        return
    with tracked(cfg, root_of(args), "pretrain", "pretrain") as (run, on_log):
        res = pretrain(cfg, out, on_log=on_log)
        for split, by_task in res.metrics.items():
            for task, ms in by_task.items():
                run.log_metrics({f"{split}/{task}/{k}": v for k, v in ms.items()})
        run.log_artifacts(out / "model", "model")
    write_json(args.metrics, {"best_epoch": res.record["best_epoch"], **res.metrics})


if __name__ == "__main__":
    run(main)
