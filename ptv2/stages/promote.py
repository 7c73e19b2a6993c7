"""DVC stage `promote@<task>`: register the task's ONNX bundle (alias challenger) and promote it to champion
only on evidence: paired tests against the trivial baseline and the champion, ONNX parity, int8 agreement."""
from __future__ import annotations

from ptv2.files import write_json
from ptv2.stages.common import parse, root_of, run
from ptv2.release.promotion import promote_task


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, task=True, paths=("report", "frozen_report", "metrics"))
    write_json(args.metrics, promote_task(cfg, root_of(args), args.task, args.report, args.frozen_report))


if __name__ == "__main__":
    run(main)
