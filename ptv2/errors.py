"""User-facing errors: the CLI prints them and exits 2 (no traceback)."""
from __future__ import annotations

import errno
import os
import re
import signal
import sys
from contextlib import contextmanager
from typing import Iterator


USER_ERROR_EXIT = 2  # how a process ends on a Ptv2Error: DVC stages and the CLI alike


class Ptv2Error(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(Ptv2Error):
    """A bad value in params.yaml or an override."""


class DataError(Ptv2Error):
    """Missing file, empty split, unknown label, malformed row."""


class ArtifactError(Ptv2Error):
    """A saved model that is missing, incomplete or does not match."""


class RunError(Ptv2Error):
    """A training run in its own process that did not finish (its own error is logged above)."""


class TrackingError(Ptv2Error):
    """The MLflow tracking store or registry is unreachable, damaged, or lacks what was asked for."""


def user_line(e: Ptv2Error) -> str:
    """How a user error reaches the user: one line (the CLI, a DVC stage, a run in its own process)."""
    return f"ptv2: error: {e}"


# OSErrors a user meets and fixes: a path option with a name over the file system's 255 bytes (`--out`, `--params`
# of 300 characters were tracebacks), a disk that filled up while writing outputs, a file or folder this user may
# not read or write (a data file or params.yaml another user owns with mode 600 was a PermissionError traceback)
_ACCESS = "give this user access to it (read for inputs, write for output folders), or point ptv2 at another path"
_MACHINE = {errno.ENAMETOOLONG: "give a path whose every name has at most 255 bytes",
            errno.EACCES: _ACCESS,
            errno.EPERM: _ACCESS,
            errno.EROFS: "point the output at a writable file system (--out, or the params.yaml folders)",
            errno.ENOSPC: "free space there, or point the output elsewhere (--out, or the params.yaml folders)",
            errno.EDQUOT: "free space within your quota there, or point the output elsewhere (--out, or the "
                          "params.yaml folders)"}


def machine_error(code: int, filename: object = None) -> Ptv2Error:
    """The one line for an OSError ``code`` of ``_MACHINE`` at ``filename``."""
    name = str(filename or "")
    where = f" ({name[:120]}{'...' if len(name) > 120 else ''})" if name else ""
    return Ptv2Error(f"{os.strerror(code)}{where}: {_MACHINE[code]}")


_SQLALCHEMY_HINTS = ("(raised as a result of", "(Background on this error")

# A run that needs more memory than the host gives (a batch or max_length too large for it; a job under `ulimit -v`,
# as batch schedulers set) failed in torch's allocator with a traceback from deep in the backbone's forward
_OOM_WORDS = ("can't allocate memory", "CUDA out of memory", "Failed to allocate memory")
OOM_FIX = ("lower train.batch_size, train.eval_batch_size or backbone.max_length (params.yaml, or --set KEY=VALUE), "
           "or run where more memory is free")


def _out_of_memory(e: BaseException) -> Ptv2Error | None:
    """The one line for an allocation that failed (Python's MemoryError, torch's CPU or CUDA allocator,
    onnxruntime's), or None."""
    words = str(e)
    # onnxruntime's RuntimeException is no RuntimeError: its words are what it shares with torch's
    oom = isinstance(e, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(e).__mro__) or any(
        w in words for w in _OOM_WORDS)
    if not oom:
        return None
    size = re.search(r"[Tt]ried to allocate ([0-9]+ bytes|[0-9.]+ ?[KMGT]i?B)", words)
    what = size.group(1) if size else ""
    if what.endswith(" bytes"):  # torch's CPU allocator counts bytes
        what = f"{int(what.split()[0]) / 2**20:.1f} MiB"
    detail = f": an allocation of {what} failed" if what else ""
    return Ptv2Error(f"out of memory{detail}; {OOM_FIX}")


def exit_note(code: int) -> str:
    """What a stage's exit ``code`` says beyond its number: the signal that ended it (-N from Python, 128 + N from
    a shell). A stage killed by SIGKILL prints nothing of its own, and "exited with -9; its output is above" left
    a user with no output and no cause: the kernel's out-of-memory killer (or a container's limit) most often."""
    sig = -code if code < 0 else code - 128 if 128 < code < 160 else 0
    try:
        name = signal.Signals(sig).name if sig else ""
    except ValueError:
        return ""
    if name == "SIGKILL":
        return (" (SIGKILL: killed from outside, most often by the kernel's out-of-memory killer or a container's "
                f"memory limit, see `dmesg`; {OOM_FIX})")
    return f" ({name})" if name else ""


def as_user_error(e: BaseException) -> Ptv2Error | None:
    """``e`` as the user's one line, or None for a bug: a Ptv2Error, an OSError of the machine's limits
    (``_MACHINE``), an allocation the host's memory could not give, or MLflow's own error (a remote store that
    refused a request, credentials it could not read), which names the store's problem and not ptv2's."""
    if isinstance(e, Ptv2Error):
        return e
    if isinstance(e, OSError) and e.errno in _MACHINE:  # the machine's limits, not ptv2's: a path or a full disk
        return machine_error(e.errno, e.filename)
    if any(c.__name__ == "MlflowException" and c.__module__.startswith("mlflow") for c in type(e).__mro__):
        # SQLAlchemy's errors open with its hints ("(raised as a result of Query-invoked autoflush; ...)"), not the
        # database's own words ("(sqlite3.OperationalError) database is locked"), which come next
        lines = [x for x in str(e).strip().splitlines() if not x.startswith(_SQLALCHEMY_HINTS)]
        first = (lines or [type(e).__name__])[0][:300]
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        store = f"the MLflow store at MLFLOW_TRACKING_URI {uri!r}" if uri else "the project's MLflow store"
        fix = "check it and its credentials, or unset it to use the project's own store" if uri else \
            "check the project's mlruns.db and mlartifacts/"
        return TrackingError(f"{store} refused: {first}; {fix}")
    return _out_of_memory(e)


@contextmanager
def exit_2_on_user_error() -> Iterator[None]:
    """A process entry point's guard: a user error (``as_user_error``) ends the process as its one line on stderr,
    exit code 2."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - anything else is re-raised as it was
        err = as_user_error(e)
        if err is None:
            raise
        print(user_line(err), file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None


def check_value(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raise one ConfigError naming ``key``, its ``value`` and what is allowed, unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: expected {allowed}")
