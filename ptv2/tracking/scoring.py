"""MLflow's scoring server on a registered version: the tool its environment needs, a path it can load the files
from, and its command line (``ptv2 serve`` checks these first; MLflow's own answers were tracebacks)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ptv2.errors import ConfigError
from ptv2.procenv import path_with_this_python

# characters MLflow's scoring server misreads in the local path it loads a model from: it reads the path as a URI
# again (Model.load -> _download_artifact_from_uri), so '#' and '?' cut it and '%XX' is decoded
_URI_CHARACTERS = "#?%"


def check_env_manager(env_manager: str) -> None:
    """The tool MLflow needs to build the model's environment is there (without it MLflow's answer is a
    traceback once the model is downloaded): conda (or $MLFLOW_CONDA_HOME/bin/conda), pyenv for virtualenv, uv."""
    needs = {"conda": "conda", "virtualenv": "pyenv", "uv": "uv"}.get(env_manager)
    if needs is None:
        return
    where = path_with_this_python()
    home = os.environ.get("MLFLOW_CONDA_HOME")
    if env_manager == "conda" and home:
        where = os.path.join(home, "bin")
    if shutil.which(needs, path=where) is None:
        place = f"$MLFLOW_CONDA_HOME/bin ({where})" if env_manager == "conda" and home else "PATH"
        raise ConfigError(f"--env-manager {env_manager} needs {needs}, which is not on {place}: install it, or "
                          f"serve with --env-manager local (this environment)")


def serve_command(root: str | Path, files: str, host: str, port: int,
                  env_manager: str) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of MLflow's scoring server on one registered version of this project's store, whose
    files are at ``files`` (``registry.check_model_files``)."""
    from ptv2.tracking.store import tracking_uri

    _check_loadable_path(files)
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    argv = [mlflow_cli, "models", "serve", "-m", files, "-h", host, "-p", str(port),
            "--env-manager", env_manager]
    return argv, {**os.environ, "PATH": path_with_this_python(), "MLFLOW_TRACKING_URI": tracking_uri(root)}


def _check_loadable_path(files: str) -> None:
    """The server loads a version kept in a local artifact store from its folder there, which it misreads when the
    path holds '#', '?' or '%' (a project at '/tmp/proj #2': "MlflowException: No such artifact: 'MLmodel'" and a
    traceback once the server started). One line naming the path and the fix instead."""
    from urllib.parse import unquote, urlparse

    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    try:
        stored = ModelsArtifactRepository.get_underlying_uri(files) if files.startswith("models:/") else files
    except MlflowException:
        return  # the server says what is missing
    if not stored.startswith("file:"):
        return  # a remote artifact store: the server downloads the files into a temporary folder of its own
    path = unquote(urlparse(stored).path)
    if bad := sorted({c for c in path if c in _URI_CHARACTERS}):
        raise ConfigError(f"MLflow's scoring server cannot load a model from a path holding "
                          f"{', '.join(repr(c) for c in bad)} ({path[:200]}): move or copy the project to a path "
                          f"without them and serve from there (`ptv2 predict` with the same --model works here)")
