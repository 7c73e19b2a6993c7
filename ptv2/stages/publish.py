"""DVC stage `publish`: after the promotion gates, register one model serving every task's champion from
one encoder (``tracking.multitask_model``); a no-op when no champion changed."""
from __future__ import annotations

from ptv2.files import write_json
from ptv2.stages.common import parse, root_of, run
from ptv2.release.publish import publish


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, paths=("metrics",))
    write_json(args.metrics, publish(cfg, root_of(args)))


if __name__ == "__main__":
    run(main)
