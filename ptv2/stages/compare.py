"""DVC stage `compare` (comparison/dvc.yaml): every method of params.yaml's compare section on its
tasks and seeds -> one table + plot + MLflow parent run. Finished runs in compare.work are reused."""
from __future__ import annotations

from pathlib import Path

from ptv2.experiments.compare import compare
from ptv2.config import comparison_config
from ptv2.stages.common import parse, run


def main(argv: list[str] | None = None) -> None:
    _, args = parse(argv)
    cfg = comparison_config(args.params, args.set)
    c = cfg.compare
    compare(cfg, c.tasks, c.methods, c.seeds, Path(c.out), Path(c.work), one_seed=tuple(c.one_seed), track=True)


if __name__ == "__main__":
    run(main)
