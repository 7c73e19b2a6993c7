"""Fail fast and clear on a tracking store MLflow would retry for minutes or answer with a raw traceback.

A down server: MLflow's defaults (7 retries, backoff to 2 minutes, 120 s timeouts) kept ``ptv2 registry``
silent for over 2 minutes; here its health check gets 3 s and MLflow's own retries are bounded (a user's
settings win). A damaged ``mlruns.db``: SQLAlchemy's traceback; here one line saying what to do.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ptv2.errors import TrackingError

for _k, _v in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}.items():
    os.environ.setdefault(_k, _v)
_CHECKED: set[str] = set()
# stores with a model registry (MLflow's SQLAlchemy backends, a tracking server, Databricks)
REGISTRY_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")


def check_store(uri: str) -> None:
    """Fail fast, in one line, on a store MLflow would retry for minutes or answer with a raw traceback: an
    http(s) server that does not answer its health check within 3 s, or a sqlite file that is not a sound
    SQLite database. Checked once per process and URI."""
    if uri in _CHECKED:
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else uri  # "databricks" has no "://"
    if scheme not in REGISTRY_SCHEMES:  # a path, file:// (MLflow's file store keeps no registry) or a typo
        raise TrackingError(f"MLFLOW_TRACKING_URI {uri!r} is not a store ptv2 can register models in: use an MLflow "
                            f"server (http://HOST:5000) or a database (sqlite:////abs/path/mlflow.db, "
                            f"postgresql://…, mysql://…), or unset it to use the project's own store")
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=3):
                pass
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(f"MLflow tracking server {uri} does not answer ({getattr(e, 'reason', e)}); start it, "
                                f"or unset MLFLOW_TRACKING_URI to use the project's own store") from None
    elif uri.startswith("sqlite:///"):
        _check_sqlite(Path(uri[len("sqlite:///"):]))
    elif scheme in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        try:
            sqlalchemy.create_engine(uri)  # loads the dialect and its driver; connects only on first use
        except (ImportError, sqlalchemy.exc.ArgumentError) as e:
            raise TrackingError(f"MLFLOW_TRACKING_URI {uri!r}: the {scheme} store needs its driver ({e}); install it "
                                f"(e.g. pip install psycopg2-binary / pymysql, and name it: mysql+pymysql://…)") from None
    _CHECKED.add(uri)


def _check_sqlite(db: Path) -> None:
    import sqlite3

    if not db.is_file():
        return  # MLflow creates it (and its folders)
    try:
        # Read-write (never create): a writer killed mid-transaction leaves a hot journal that SQLite rolls
        # back on open, which a read-only connection cannot do ("attempt to write a readonly database").
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=rw", uri=True)) as con:
            ok = con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError as e:
        ok, why = False, str(e)
    else:
        why = "integrity check failed"
    if not ok:
        raise TrackingError(f"{db} is damaged ({why}); move it aside (the runs it held are lost; `dvc repro` "
                            f"logs new ones), or point MLFLOW_TRACKING_URI at a working store")
