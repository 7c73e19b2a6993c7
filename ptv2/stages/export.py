"""DVC stage `export`: one ONNX bundle for every adapted task + parity and int8 gates; and one for every task's
frozen-backbone baseline (P = 0, fitted head), the candidate served where no trained model beats it."""
from __future__ import annotations

from pathlib import Path

from ptv2.export.compose import bundle_for
from ptv2.export.deploy import export_and_check
from ptv2.model.spec import FROZEN
from ptv2.files import write_json
from ptv2.stages.common import parse, root_of, run
from ptv2.tracking.store import tracked


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, paths=("report", "frozen_report"))
    dirs = {t: Path(cfg.adapt.out_dir) / t / "model" for t in cfg.adapt.tasks}
    frozen = {t: Path(cfg.adapt.baseline_dir) / t / "model" for t in cfg.adapt.tasks}
    with tracked(cfg, root_of(args), "export", "export") as (run, _):
        frozen_report = export_and_check(cfg, frozen, cfg.export.frozen_dir, Path(cfg.export.checks_dir) / FROZEN)
        # the same backbone: the trained deep-prompt bundle copies the frozen bundle's encoder graphs
        report = export_and_check(cfg, dirs, cfg.export.out_dir, encoder_from=cfg.export.frozen_dir)
        for task, row in report.items():
            run.log_metrics({f"{task}/{k}": float(v) for k, v in row.items() if isinstance(v, (int, float, bool))})
        for b in dict.fromkeys(bundle_for(cfg.export.out_dir, task) for task in report):  # shared, or one per task
            run.log_artifacts(b / "manifest.json", None if b == Path(cfg.export.out_dir) else b.name)
    write_json(args.report, report)
    write_json(args.frozen_report, frozen_report)


if __name__ == "__main__":
    run(main)
