"""``python -m ptv2.orchestration [STAGE ...]``, what scripts/run.sh runs: its options, its logging, and
``reproduce`` as an ``entry_point`` (one line for a user error, never a traceback)."""
from __future__ import annotations

import argparse
import logging

from ptv2.orchestration.dvc_graph import reproduce
from ptv2.orchestration.failures import entry_point
from ptv2.procenv import reopen_closed_streams


def main(argv: list[str]) -> int:
    """``python -m ptv2.orchestration [STAGE ...]`` (what scripts/run.sh runs): ``reproduce`` as an
    ``entry_point``. Options are argparse's (``--help``; an unknown one exits 2): they were taken for stage
    names ("Stage '--help' not found inside 'dvc.yaml' file; its output is above", exit 1)."""
    reopen_closed_streams()  # DVC's progress bars (and the stages it starts) failed on closed ones
    p = argparse.ArgumentParser(prog="scripts/run.sh", description="Set up, then `dvc repro`: the whole pipeline "
                                "on params.yaml, or the STAGEs named and the stages they need.",
                                epilog="Values: params.yaml, or `dvc exp run -S KEY=VALUE` for one run. DVC's own "
                                "options (--force, --downstream, --dry, ...): `dvc repro` in the activated venv "
                                "(. .venv/bin/activate).")
    p.add_argument("stages", nargs="*", metavar="STAGE", help="a stage of dvc.yaml: prepare, adapt (every task), "
                   "adapt@TASK, ... (`dvc stage list` lists them)")
    targets = p.parse_args(argv).stages
    ours = logging.getLogger("ptv2")
    if not ours.handlers:  # ptv2's own lines; DVC logs its stages itself (a root handler doubled them)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
    return entry_point(lambda: reproduce(".", targets or None))
