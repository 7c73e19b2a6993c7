"""Fail fast and clear on a tracking store MLflow would retry for minutes or answer with a raw traceback.

A down server: MLflow's defaults (7 retries, backoff to 2 minutes, 120 s timeouts) kept ``ptv2 registry``
silent for over 2 minutes; here its health check gets 3 s and MLflow's own retries are bounded (a user's
settings win). A damaged ``mlruns.db``: SQLAlchemy's traceback; here one line saying what to do.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote

from ptv2.errors import TrackingError

for _k, _v in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}.items():
    os.environ.setdefault(_k, _v)
_CHECKED: set[str] = set()
# stores with a model registry (MLflow's SQLAlchemy backends, a tracking server, Databricks)
REGISTRY_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")


def sqlite_file(uri: str) -> Path | None:
    """The database file a ``sqlite:///…`` tracking URI names (relative to the working folder unless absolute), read
    as SQLAlchemy reads it (up to a query, percent-escapes decoded); None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///"):].split("?", 1)[0]))


def sqlite_uri(db: Path) -> str:
    """The ``sqlite:///…`` URI of the database file ``db``: SQLAlchemy decodes percent-escapes and ends the path at
    '?', so a project in '/tmp/run 100%41' or '/data/q?1' was a store at another path ('unable to open database
    file' after MLflow's 100 s of retries, or a database at '/data/q'). MLflow makes the parent folder of the
    undecoded path (``_make_parent_dirs_if_sqlite``): with '%' or '?' in the path, an empty folder beside it."""
    return "sqlite:///" + str(db).replace("%", "%25").replace("?", "%3F")


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
        _check_server(uri)
    elif (db := sqlite_file(uri)) is not None:
        _check_sqlite(db)
    elif scheme.startswith("databricks"):
        _check_databricks(uri)
    elif scheme in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        try:
            sqlalchemy.create_engine(uri)  # loads the dialect and its driver; connects only on first use
        except (ImportError, sqlalchemy.exc.ArgumentError) as e:
            raise TrackingError(f"MLFLOW_TRACKING_URI {uri!r}: the {scheme} store needs its driver ({e}); install it "
                                f"(e.g. pip install psycopg2-binary / pymysql, and name it: mysql+pymysql://…)") from None
    _CHECKED.add(uri)


def _check_server(uri: str) -> None:
    """The server's /health answers 200 within 3 s, asked the way MLflow asks it: with its TLS settings
    (MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH, a client certificate) and credentials. A plain
    urllib request refused a server MLflow itself reached ("self-signed certificate")."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    fix = "start it, or unset MLFLOW_TRACKING_URI to use the project's own store"
    try:
        r = http_request(get_default_host_creds(uri), "/health", "GET", max_retries=0, timeout=3,
                         raise_on_status=False)
    except MlflowException as e:
        why = str(e).split("Caused by ", 1)[-1].strip()  # urllib3's chain: keep the OS's or the TLS layer's words
        found = re.search(r"\[Errno [^\]]+\][^'\")]*|\[SSL[^'\"]*|[^'\"(]*timed out[^'\")]*", why)
        why = (found.group(0) if found else why.rstrip(")"))[:200].strip()
        if "SSL" in why:
            fix = ("trust its certificate (MLFLOW_TRACKING_SERVER_CERT_PATH=its CA's .pem, or "
                   "MLFLOW_TRACKING_INSECURE_TLS=true), or unset MLFLOW_TRACKING_URI to use the project's own store")
        raise TrackingError(f"MLflow tracking server {uri} does not answer ({why}); {fix}") from None
    if r.status_code != 200:
        raise TrackingError(f"MLflow tracking server {uri} does not answer its health check (HTTP {r.status_code} at "
                            f"/health: is it an MLflow server?); {fix}")


def _databricks_host(uri: str) -> str | None:
    """The host a Databricks URI names, as the SDK finds it: DATABRICKS_HOST, else the profile's ``host`` in
    ~/.databrickscfg (``databricks://PROFILE``, DATABRICKS_CONFIG_PROFILE or DEFAULT); None if neither."""
    import configparser

    if os.environ.get("DATABRICKS_HOST"):
        return os.environ["DATABRICKS_HOST"]
    profile = uri.split("://", 1)[1].split(":", 1)[0] if "://" in uri else ""
    profile = profile or os.environ.get("DATABRICKS_CONFIG_PROFILE") or "DEFAULT"
    cfg = configparser.ConfigParser()
    with contextlib.suppress(configparser.Error, OSError):
        cfg.read(os.environ.get("DATABRICKS_CONFIG_FILE") or Path.home() / ".databrickscfg")
    return cfg.get(profile, "host", fallback=None) if cfg.has_section(profile) or profile == "DEFAULT" else None


def _check_databricks(uri: str) -> None:
    """Databricks credentials name a host that answers within 3 s; else MLflow's MlflowException traceback reached
    the user, after the SDK had tried a host that does not answer for 5 minutes."""
    import logging
    import urllib.error
    import urllib.request

    from mlflow.exceptions import MlflowException
    from mlflow.utils.databricks_utils import get_databricks_host_creds

    host = _databricks_host(uri)
    if not host:
        raise TrackingError(f"MLFLOW_TRACKING_URI {uri!r} finds no Databricks host: set DATABRICKS_HOST and "
                            f"DATABRICKS_TOKEN (or log in: databricks auth login), or unset it to use the project's "
                            f"own store")
    try:
        with urllib.request.urlopen(host if "://" in host else f"https://{host}", timeout=3):
            pass
    except urllib.error.HTTPError:
        pass  # it answered (a login page, 401/403)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise TrackingError(f"Databricks host {host!r} (MLFLOW_TRACKING_URI {uri!r}) does not answer "
                            f"({getattr(e, 'reason', e)}): check DATABRICKS_HOST, or unset MLFLOW_TRACKING_URI to use "
                            f"the project's own store") from None
    log = logging.getLogger("mlflow.utils.databricks_utils")
    level, _ = log.level, log.setLevel(logging.ERROR)  # its "falling back to legacy authentication" warning
    try:
        get_databricks_host_creds(uri)
    except MlflowException:
        raise TrackingError(f"MLFLOW_TRACKING_URI {uri!r} finds no Databricks credentials for {host}: set "
                            f"DATABRICKS_TOKEN (or log in: databricks auth login), or unset it to use the project's "
                            f"own store") from None
    finally:
        log.setLevel(level)


def check_sqlite_writable(uri: str) -> None:
    """A sqlite store that a stage is about to log a run into can be written by this user: its file and its folder
    (SQLite writes its journal beside the file). A read-only one was MLflow's logged SQLAlchemy traceback ("attempt
    to write a readonly database") and a line quoting SQLAlchemy's autoflush hint. Readers (the registry, predict,
    serving from a read-only mount) are not checked."""
    from ptv2.errors import Ptv2Error
    from ptv2.files import check_writable

    db = sqlite_file(uri)
    if db is None:
        return
    why = None
    try:
        check_writable(db.parent)
    except Ptv2Error:
        why = f"its folder {db.parent} takes no new files"
    if why is None and db.is_file():
        try:
            with open(db, "r+b"):  # opened for writing, nothing written
                pass
        except OSError as e:
            why = e.strerror or str(e)
    if why is not None:
        raise TrackingError(f"the MLflow store {db} cannot be written by this user ({why}): every stage logs its run "
                            f"there; give this user write access to the file and its folder, or point "
                            f"MLFLOW_TRACKING_URI at a store it can write") from None


def _check_sqlite(db: Path) -> None:
    import sqlite3

    if not db.is_file():
        return  # MLflow creates it (and its folders)
    try:
        # Read-write (never create): a writer killed mid-transaction leaves a hot journal that SQLite rolls
        # back on open, which a read-only connection cannot do ("attempt to write a readonly database").
        # an SQLite URI: '%XX', '?' and '#' in the path quoted, or it named (and made) another file
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(db))}?mode=rw", uri=True)) as con:
            ok = con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError as e:
        ok, why = False, str(e)
    else:
        why = "integrity check failed"
    if not ok:
        raise TrackingError(f"{db} is damaged ({why}); move it aside (the runs it held are lost; `dvc repro` "
                            f"logs new ones), or point MLFLOW_TRACKING_URI at a working store")
