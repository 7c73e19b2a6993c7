"""The environment of the commands ptv2 starts (DVC stages, MLflow's scoring server): their ``python``,
``mlflow`` and ``uvicorn`` are this interpreter's, found on PATH even where the virtual environment that runs
ptv2 was never activated (``.venv/bin/python flows/run.py``, ``.venv/bin/ptv2 serve``); and the quiet, offline
defaults every entry point (the CLI, the stages, the flows) sets before the tools it drives load; and how the CLI
and the stages take SIGTERM."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator


def path_with_this_python() -> str:
    """PATH with this interpreter's bin folder first (once)."""
    here = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *rest])


# no telemetry from any tool ptv2 drives, and no tokenizer thread pools forked into stage processes
QUIET = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}


def set_quiet_defaults(**extra: str) -> None:
    """``QUIET`` and ``extra`` into the environment where the user set nothing (their own settings win)."""
    for k, v in (QUIET | extra).items():
        os.environ.setdefault(k, v)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While in the block, SIGTERM (docker stop, a Kubernetes eviction, Slurm's time limit, ``timeout``) stops the
    process as Ctrl-C does, through the same paths: the one line, the MLflow run ended FAILED, temp outputs removed,
    the output lock released. Python's default ended it on the spot: no word, the run left RUNNING in MLflow.
    The previous handler is back after the block (the CLI also runs inside test processes). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
