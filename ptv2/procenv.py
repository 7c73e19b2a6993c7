"""The environment of the commands ptv2 starts (DVC stages, MLflow's scoring server): their ``python``,
``mlflow`` and ``uvicorn`` are this interpreter's, found on PATH even where the virtual environment that runs
ptv2 was never activated (``.venv/bin/python flows/run.py``, ``.venv/bin/ptv2 serve``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def path_with_this_python() -> str:
    """PATH with this interpreter's bin folder first (once)."""
    here = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *rest])
