"""The only module that talks to MLflow (imported lazily: mlflow costs ~3.5 s to import).

Default store: ``sqlite:///<repo>/mlruns.db`` with artifacts in ``<repo>/mlartifacts`` (absolute
paths, so ``dvc exp run --temp`` — which runs inside ``<repo>/.dvc/tmp/exps/...`` — still logs to
the repo's store). ``MLFLOW_TRACKING_URI`` points it at a real server instead.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from ptv2.errors import TrackingError
from ptv2.tracking.health import check_sqlite_writable, check_store, sqlite_file, sqlite_uri

STORE_DB = "mlruns.db"  # the project's own tracking store (sqlite), in its folder
STORE_FOLDER = "mlartifacts"  # the project's own artifact store, beside STORE_DB
log = logging.getLogger(__name__)
_FOLLOWED: set[str] = set()  # projects whose store was checked for a move (``_follow_move``)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def repo_root(start: str | Path) -> Path:
    """The project folder; inside a DVC temp experiment, the repo that holds it."""
    p = Path(start).resolve()
    parts = p.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return p


def tracking_uri(root: str | Path) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return _in_project(uri, root) if uri else sqlite_uri(repo_root(root) / STORE_DB)


def _in_project(uri: str, root: str | Path) -> str:
    """``uri``, a relative ``sqlite:///`` path (MLflow's docs' ``sqlite:///mlflow.db``) read in the project's folder.
    MLflow reads it in the working folder, which under ``dvc exp run --temp`` is a temporary copy of the project:
    each experiment logged and registered into a store of its own, gone with the copy (live: "ptv2-sent v1" in a
    project whose store held 15 versions)."""
    db = sqlite_file(uri)
    if db is None or db.is_absolute():
        return uri
    query = uri.partition("?")[2]  # a user's ?mode=… goes on with the path
    return sqlite_uri(repo_root(root) / db) + (f"?{query}" if query else "")


def has_store(root: str | Path) -> bool:
    """Whether there is a store to read: the user's ``MLFLOW_TRACKING_URI``, or the project's own ``mlruns.db``.
    A project that never logged has none, and a lookup must not create one (MLflow would, with its set-up logs)."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (repo_root(root) / STORE_DB).is_file()


def has_run(root: str | Path, run_id: str) -> bool:
    """Whether the project's store holds the run ``run_id`` (a store made afresh, by a clone that pulled its
    outputs from a DVC remote or after mlruns.db was deleted, holds none of the stages' runs)."""
    mlflow = _mlflow(root)
    try:
        mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def check_tracking(root: str | Path) -> None:
    """The store this project logs to can take runs and registered models; else one TrackingError line (callers
    that log only at the end check first, not after their work)."""
    check_store(tracking_uri(root))
    check_sqlite_writable(tracking_uri(root))
    _check_environment(tracking_uri(root), root)


def _check_environment(uri: str, root: str | Path) -> None:
    """MLflow reads two more variables than the tracking URI that would take ptv2's runs and models elsewhere:
    ``MLFLOW_REGISTRY_URI`` (models registered, and champions read, in another store than the runs the gate
    compares: one line naming the fix) and ``MLFLOW_RUN_ID`` (a user's or ``mlflow run``'s run, which every stage
    would resume and log into: ignored with a warning, each stage logs a run of its own)."""
    registry = os.environ.get("MLFLOW_REGISTRY_URI")
    if registry and _in_project(registry, root).rstrip("/") != uri.rstrip("/"):  # http://host:5000/ is the same
        raise TrackingError(f"MLFLOW_REGISTRY_URI {registry!r} is not the tracking store {uri!r}: ptv2 registers and "
                            f"gates models in the store that holds their runs; unset MLFLOW_REGISTRY_URI, or point "
                            f"MLFLOW_TRACKING_URI at that store too")
    if run_id := os.environ.pop("MLFLOW_RUN_ID", None):
        log.warning("MLFLOW_RUN_ID=%s is ignored: ptv2 logs each stage and command in a run of its own", run_id)


def _mlflow(root: str | Path):
    import mlflow

    uri = tracking_uri(root)
    user = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    check_store(uri)
    _check_environment(uri, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # not a registry URI another library set in this process
    # MLflow 3 exports both URIs to the environment; a later call for another project (or a stage it
    # spawns) would then silently log into this one's store. Keep the environment as the user set it.
    for k, v in user.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if user["MLFLOW_TRACKING_URI"] is None:
        _follow_move(root)
    return mlflow


def artifact_bar(show: bool = True) -> contextlib.AbstractContextManager:
    """MLflow's "Downloading artifacts" bar only where someone sees it: on a terminal, and when ``show``. A log or a
    pipe got each of its \\r updates, from downloads and from ``log_model``'s own (3 bars per logged model, in the
    promote and publish stages' logs); ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` set by the user stands."""
    from unittest import mock

    err = sys.stderr  # None when started with `2>&-`
    terminal = err is not None and not err.closed and err.isatty()
    if (show and terminal) or "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" in os.environ:
        return contextlib.nullcontext()
    return mock.patch.dict("os.environ", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")


@contextlib.contextmanager
def tracking_server(root: str | Path, experiment: str, timeout_s: float = 120.0) -> Iterator[str]:
    """An MLflow tracking server for many concurrent writers (parallel stages), as a URI: the user's
    ``MLFLOW_TRACKING_URI`` when set, else ``mlflow server`` on this project's sqlite store and artifact
    folder, started here (a free port on 127.0.0.1) and stopped when the block ends."""
    import socket
    import sys
    import time
    import urllib.request

    if os.environ.get("MLFLOW_TRACKING_URI"):
        yield tracking_uri(root)
        return
    init_store(root, experiment)  # create the schema once, before the server and its clients
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = repo_root(root)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", tracking_uri(base), "--default-artifact-root", (base / STORE_FOLDER).as_uri()]
    log_file = open(base / ".dvc" / "tmp" / "mlflow-server.log", "a") if (base / ".dvc").is_dir() \
        else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start ({' '.join(cmd)}); see .dvc/tmp/mlflow-server.log")
                time.sleep(0.3)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_file is not subprocess.DEVNULL:
            log_file.close()


def init_store(root: str | Path, experiment: str) -> str:
    """Create the database and experiment once, before anything runs in parallel. Returns its id."""
    mlflow = _mlflow(root)
    check_sqlite_writable(tracking_uri(root))  # every writer comes here first
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    # a sqlite store keeps its artifacts beside it; MLflow's default, ./mlruns of the working folder, put them under
    # the temporary copy of `dvc exp run --temp` (lost with it) or wherever the first command ran
    db = sqlite_file(tracking_uri(root))
    art = (db.parent / STORE_FOLDER).as_uri() if db is not None else None
    return client.create_experiment(experiment, artifact_location=art)


def _follow_move(root: str | Path) -> None:
    """A project folder moved or copied keeps, in its mlruns.db, the experiments' absolute artifact locations in
    the old folder: new runs and logged models would write there (recreating a moved folder, or into the
    original of a copy). Point them at this project's own store (the registry reads older versions' files from
    here too: ``registry.version_files``). Once per process and project."""
    import sqlite3

    here, db = (repo_root(root) / STORE_FOLDER).as_uri(), repo_root(root) / STORE_DB
    if here in _FOLLOWED or not db.is_file():
        return
    _FOLLOWED.add(here)
    moved = "artifact_location LIKE 'file://%/' || ? AND artifact_location != ?"
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
            old = [r[0] for r in con.execute(f"SELECT artifact_location FROM experiments WHERE {moved}",
                                             (STORE_FOLDER, here))]
            if old:
                con.execute(f"UPDATE experiments SET artifact_location = ? WHERE {moved}", (here, STORE_FOLDER, here))
    except sqlite3.OperationalError:  # a store MLflow has not created its tables in yet
        return
    if old:
        log.warning("the project's store logged artifacts to %s (the project was moved or copied); from now on "
                    "to %s", ", ".join(sorted(set(old))), here)


def lineage_tags(root: str | Path, stage: str) -> dict[str, str]:
    """git commit + the dvc.lock hashes of the stage's deps and params (traceable to exact data)."""
    root = repo_root(root)
    tags = {"ptv2.stage": stage}
    try:
        tags["git.commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                            text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    lock = root / "dvc.lock"
    if lock.is_file():
        import yaml

        entry = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage, {})
        for dep in entry.get("deps", []):
            if "md5" in dep:
                tags[f"dvc.dep.{dep['path']}"] = dep["md5"]
    return tags


class Run:
    """A thin handle over an active MLflow run."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self._m, self.id = mlflow, run.info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._m.log_metrics({k.replace("@", "_"): float(v) for k, v in metrics.items()}, step=step)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        (self._m.log_artifacts if p.is_dir() else self._m.log_artifact)(str(p), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._m.set_tags(tags)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and len(out) < 400:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


@contextlib.contextmanager
def start_run(root: str | Path, experiment: str, name: str, params: dict[str, Any],
              tags: dict[str, str]) -> Iterator[Run]:
    """Log the resolved config as params (flattened) and lineage tags; yields a Run."""
    mlflow = _mlflow(root)
    exp_id = init_store(root, experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=name) as r:
        flat = _flatten(params)
        for i in range(0, len(flat), 100):  # MLflow caps a batch at 100 params
            mlflow.log_params(dict(list(flat.items())[i:i + 100]))
        mlflow.set_tags(tags)
        yield Run(mlflow, r)


@contextlib.contextmanager
def tracked(cfg: Any, root: Path, stage: str, name: str) -> Iterator[tuple[Run, Callable[[dict], None]]]:
    """A DVC stage's MLflow run: the resolved config as params, lineage tags; yields (run, on_log), where
    ``on_log`` takes the training loop's step and epoch rows."""
    with start_run(root, cfg.tracking.experiment, name, cfg.to_dict(), lineage_tags(root, stage)) as run:
        steps = {"n": 0}

        def on_log(row: dict[str, Any]) -> None:
            if "precision" in row:  # what the run trained in (auto: measured on this machine)
                run.set_tags({"ptv2.precision": row["precision"]})
                return
            if "step_loss" in row:
                steps["n"] += 1
                run.log_metrics({"train/step_loss": row["step_loss"]}, step=steps["n"])
                return
            flat = {"val/score": row["val_score"]}  # epoch 0 (fitted heads, step 0) has no train loss
            if row["train_loss"] is not None:
                flat["train/epoch_loss"] = row["train_loss"]
            for task, ms in row["val"].items():
                flat.update({f"val/{task}/{k}": v for k, v in ms.items()})
            run.log_metrics(flat, step=row["epoch"])

        yield run, on_log


def log_comparison(root: str | Path, experiment: str, params: dict[str, Any], runs: list[dict[str, Any]],
                   metric_of: dict[str, str], files: list[Path]) -> str:
    """One parent run for a method comparison, one child per method x task (its seeds' dev values as
    steps, mean/std, cost). ``runs``: the per-(task, method, seed) results. Returns the parent's id."""
    import statistics

    mlflow = _mlflow(root)
    exp_id = init_store(root, experiment)
    pairs = list(dict.fromkeys((r["method"], r["tasks"][0]) for r in runs))
    with mlflow.start_run(experiment_id=exp_id, run_name="compare") as parent:
        mlflow.log_params(_flatten(params))
        mlflow.set_tags({**lineage_tags(root, "compare"), "ptv2.kind": "comparison"})
        for f in files:
            if Path(f).is_file():
                mlflow.log_artifact(str(f))
        for method, task in pairs:
            rs = sorted((r for r in runs if r["method"] == method and r["tasks"] == [task]), key=lambda r: r["seed"])
            vals = [r["metrics"]["dev"][task][metric_of[task]] for r in rs]
            with mlflow.start_run(experiment_id=exp_id, run_name=f"{method}/{task}", nested=True):
                mlflow.log_params({"method": method, "task": task, "metric": metric_of[task],
                                   "seeds": json.dumps([r["seed"] for r in rs]),
                                   "trainable_params": rs[0]["trainable_params"], "total_params": rs[0]["total_params"],
                                   "run_key": rs[0].get("key", "")})
                for r, v in zip(rs, vals):
                    mlflow.log_metric(f"dev_{metric_of[task]}", v, step=r["seed"])
                cost = {"s_per_epoch": statistics.mean(r["train_seconds"] / max(1, r["epochs_run"]) for r in rs),
                        "dev_mean": statistics.mean(vals), "dev_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                        "pct_trainable": 100 * rs[0]["trainable_params"] / rs[0]["total_params"]}
                for key, name in (("peak_rss_mb", "peak_rss_mb"), ("artifact_bytes", "artifact_bytes")):
                    if rs[0].get(key) is not None:
                        cost[name] = max(r[key] for r in rs)
                mlflow.log_metrics(cost)
        return parent.info.run_id
