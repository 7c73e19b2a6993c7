"""Run one flow from the command line; params.yaml, the data folder and the fan-out's cluster are checked
before Prefect starts (a user error is its one line, exit 2, and is never retried):

    python flows/run.py               # pipeline: the adapt fan-out + the rest of the DVC graph
    python flows/run.py adapt         # the fan-out alone, on flows.task_runner ($PTV2_CLUSTER wins)
    python flows/run.py pretrain      # or: retrain (reproduce, gate, publish, push), --root PROJECT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptv2.procenv import exit_2_on_missing_package, reopen_closed_streams  # noqa: E402

with exit_2_on_missing_package():  # run by a Python outside the project's venv: one line, not a traceback
    # first: the flows package sets Prefect's environment before Prefect loads
    from flows.pipeline import (ROOT, check_prefect_api, check_temporary_server_home, configured_adapt,
                                pipeline, pretrain, retrain, task_runner)
    from prefect.settings import PREFECT_API_URL
    from ptv2.config import load_config
    from ptv2.errors import exit_2_on_user_error
    from ptv2.orchestration.dvc_graph import check_data_root, check_project, check_remote
    from ptv2.orchestration.failures import entry_point

FLOWS = {"pipeline": pipeline, "adapt": configured_adapt, "pretrain": pretrain, "retrain": retrain}


def main(argv: list[str] | None = None) -> int:
    reopen_closed_streams()  # Prefect's and DVC's output failed on closed ones
    p = argparse.ArgumentParser(prog="python flows/run.py", description="run one ptv2 Prefect flow")
    p.add_argument("flow", nargs="?", default="pipeline", choices=list(FLOWS))
    p.add_argument("--root", default=str(ROOT), help="the project folder (default: the one holding flows/)")
    args = p.parse_args(argv)
    root = Path(args.root).expanduser().resolve()  # a quoted "~/project" is the home folder's, not ./~
    with exit_2_on_user_error():
        check_project(root)  # first: a folder that is no project said "pass --params PATH", which run.py lacks
        cfg = load_config(root / "params.yaml")
        check_data_root(root, cfg.data_root)  # else Prefect's traceback, retried
        if args.flow != "pretrain":  # the others fan out: the runner's extra is installed, its scheduler answers
            task_runner(cfg.flows)
        if args.flow == "retrain":
            check_remote(root, cfg.flows.dvc_remote)
        if url := PREFECT_API_URL.value():  # a server of the user's (else Prefect starts a temporary one)
            check_prefect_api(url, "start it (prefect server start), fix the URL, or unset PREFECT_API_URL to run "
                                   "on a temporary local server")
        else:
            check_temporary_server_home()
    return entry_point(lambda: FLOWS[args.flow](str(root)))  # a failure is one line, as scripts/run.sh gives it


if __name__ == "__main__":
    sys.exit(main())
