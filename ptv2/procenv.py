"""The environment of the commands ptv2 starts (DVC stages, MLflow's scoring server): their ``python``,
``mlflow`` and ``uvicorn`` are this interpreter's, found on PATH even where the virtual environment that runs
ptv2 was never activated (``.venv/bin/python flows/run.py``, ``.venv/bin/ptv2 serve``); and the quiet, offline
defaults every entry point (the CLI, the stages, the flows) sets before the tools it drives load."""
from __future__ import annotations

import os
import sys
from pathlib import Path


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
