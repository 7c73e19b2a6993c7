"""The environment of the commands ptv2 starts (DVC stages, MLflow's scoring server): their ``python``,
``mlflow`` and ``uvicorn`` are this interpreter's, found on PATH even where the virtual environment that runs
ptv2 was never activated (``.venv/bin/python flows/run.py``, ``.venv/bin/ptv2 serve``); and the quiet, offline
defaults every entry point (the CLI, the stages, the flows) sets before the tools it drives load; how the CLI
and the stages take SIGTERM; and what a process meets first: closed or failing standard streams, a compile cache
folder torch cannot make."""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator


def path_with_this_python() -> str:
    """PATH with this interpreter's bin folder first (once)."""
    here = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *rest])


# no telemetry from any tool ptv2 drives, and no tokenizer thread pools forked into stage processes
QUIET = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}


def missing_package(e: BaseException) -> str | None:
    """The one line for a package this Python lacks (a stage that `.venv/bin/dvc repro` started with the `python`
    first on PATH, outside the project's venv; `python -m ptv2` under another Python), or None: not a missing
    third-party package."""
    name = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
    package = (name or "").split(".")[0]
    if not package or package == "ptv2":
        return None
    if Path(sys.prefix).name == ".venv":  # the project's venv itself, half installed: set-up installs what it lacks
        return f"ptv2: error: {sys.prefix} lacks the package {package!r}: run ./scripts/setup.sh to install it"
    return (f"ptv2: error: {sys.executable} lacks the package {package!r}, so it is not the project's Python: run "
            f"./scripts/run.sh, or activate the project's venv first (source .venv/bin/activate)")


@contextlib.contextmanager
def exit_2_on_missing_package() -> Iterator[None]:
    """A command's imports (``python -m ptv2``, ``python flows/run.py``): a package this Python lacks ends the
    process in ``missing_package``'s line, exit 2."""
    try:
        yield
    except ModuleNotFoundError as e:
        line = missing_package(e)
        if line is None:
            raise
        print(line, file=sys.stderr)
        raise SystemExit(2) from None


def reopen_closed_stderr() -> None:
    """Started with standard error closed (``2>&-``, as some supervisors start a job), Python's ``sys.stderr`` is
    None and the first progress bar or warning failed on it (MLflow's, DVC's: exit 1, no answer). Standard error
    goes to /dev/null instead, for this process and the processes it starts (they inherit descriptor 2)."""
    _to_devnull(2, "stderr")


def reopen_closed_streams() -> None:
    """``reopen_closed_stderr``, and standard output too (``>&-``): the pipeline's stages inherited a descriptor 1
    that DVC had meanwhile opened for reading, and the report stage's print failed on it (EBADF)."""
    _to_devnull(1, "stdout")  # first: the lowest free descriptor is 1 when both are closed
    _to_devnull(2, "stderr")


def _to_devnull(fd: int, name: str) -> None:
    """``sys.<name>`` (on descriptor ``fd``), None when started closed, written to /dev/null instead."""
    if getattr(sys, name) is not None:
        return
    new = os.open(os.devnull, os.O_WRONLY)  # the lowest free descriptor: ``fd`` itself where only it was closed
    if new != fd:
        os.dup2(new, fd)
        os.close(new)
    os.set_inheritable(fd, True)  # os.open's descriptors are not: the stages would start with it closed again
    setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115 - the process's own stream, open until exit


@contextlib.contextmanager
def stdout_written() -> Iterator[None]:
    """The block's standard output reaches its file, or one line (a Ptv2Error) names it: `ptv2 predict >
    answers.jsonl` on a full disk failed only at the interpreter's last flush ("Exception ignored in: <_io.TextIOWrapper
    name='<stdout>'> OSError", exit 120), or mid-run as "No space left on device: free space there" naming no file.
    Flushed at the block's end; an error that stdout's own flush repeats is stdout's (others are raised as they are)."""
    from ptv2.errors import Ptv2Error

    try:
        yield
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as e:
        target = _stdout_target()
        if isinstance(e, BrokenPipeError) or e.filename is not None or not _stdout_fails(e, target):
            raise  # the reader left (the CLI's own case), or another file's error
        discard_stdout()  # what stays buffered would fail again at exit ("Exception ignored ...")
        space = "free space there, or " if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise Ptv2Error(f"writing standard output ({target}) failed: {os.strerror(e.errno or errno.EIO)}; {space}"
                        f"send the output elsewhere") from None


def _stdout_fails(e: OSError, target: str) -> bool:
    """Whether ``e`` is stdout's: its own flush fails too (what stays buffered), or, unbuffered (``python -u``,
    PYTHONUNBUFFERED), ``e`` is a full disk and stdout's file is on a full file system."""
    from ptv2.files import out_of_space

    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError:
        return True
    return e.errno in (errno.ENOSPC, errno.EDQUOT) and target.startswith("/") and out_of_space(Path(target).parent)


def _stdout_target() -> str:
    """Where descriptor 1 writes (a file's path, /dev/full), or 'stdout'."""
    try:
        return os.readlink(f"/proc/self/fd/{sys.stdout.fileno()}")
    except (AttributeError, OSError, ValueError):
        return "stdout"


def discard_stdout() -> None:
    """Standard output goes to /dev/null from here on: what Python still holds for it (a reader that left, a full
    disk) would otherwise fail again at the interpreter's last flush."""
    try:
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (AttributeError, OSError, ValueError):  # no real file behind stdout (a test's capture)
        pass


def check_compile_cache() -> None:
    """``TORCHINDUCTOR_CACHE_DIR`` names a folder torch creates when transformers imports it (``torch._dynamo``): one
    that cannot be created (under /proc, below a file) ended every command that loads a backbone in a
    FileNotFoundError traceback, and an unwritable one named no variable. Checked, and made, first."""
    from ptv2.errors import Ptv2Error

    where = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not where:
        return
    try:
        os.makedirs(where, exist_ok=True)
    except OSError as e:
        raise Ptv2Error(f"TORCHINDUCTOR_CACHE_DIR = {where!r} cannot be created ({e.strerror or e}): point it at a "
                        f"folder this user may write, or unset it") from None


def set_quiet_defaults(**extra: str) -> None:
    """``QUIET`` and ``extra`` into the environment where the user set nothing (their own settings win)."""
    for k, v in (QUIET | extra).items():
        os.environ.setdefault(k, v)


def is_main_rank() -> bool:
    """True unless this process is a non-zero rank of a torchrun / accelerate group (rank 0 logs and writes)."""
    return os.environ.get("RANK", "0") == "0"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


STOP_GRACE_S = 10.0  # after SIGTERM, how long the interrupt may take to end the block (docker stop's own grace)


@contextlib.contextmanager
def sigterm_as_interrupt(grace_s: float = STOP_GRACE_S) -> Iterator[None]:
    """While in the block, SIGTERM (docker stop, a Kubernetes eviction, Slurm's time limit, ``timeout``) stops the
    process as Ctrl-C does, through the same paths: the one line, the MLflow run ended FAILED, temp outputs removed,
    the output lock released. Python's default ended it on the spot: no word, the run left RUNNING in MLflow.
    Python runs a handler only between bytecodes, so a process blocked inside a library (a rank waiting for its
    peers in torch's TCPStore, up to 30 min) did not stop at all: a watchdog thread, woken by the signal through
    ``signal.set_wakeup_fd``, ends it ``grace_s`` later with one line and exit 143 if the block has not ended.
    The previous handler is back after the block (the CLI also runs inside test processes). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _interrupt)
    done = threading.Event()
    watch = _watchdog(done, grace_s)
    try:
        yield
    finally:
        done.set()
        if watch is not None:
            watch()
        signal.signal(signal.SIGTERM, before)


def _watchdog(done: threading.Event, grace_s: float) -> Callable[[], None] | None:
    """Start the SIGTERM watchdog; returns what stops it, or None where the wakeup fd is another's (asyncio's)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    if previous != -1:  # someone else's (an event loop's): theirs stays, no watchdog
        signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)
        return None

    def watch() -> None:
        try:
            while data := os.read(r, 64):  # blocks without the GIL; each signal with a Python handler writes its number
                if signal.SIGTERM in data and not done.wait(grace_s):
                    os.write(2, f"ptv2: stopped by SIGTERM: the process was blocked inside a library and did not "
                                f"stop within {grace_s:g} s\n".encode())
                    os._exit(128 + signal.SIGTERM)
        finally:
            os.close(r)

    threading.Thread(target=watch, name="ptv2-sigterm-watchdog", daemon=True).start()

    def stop() -> None:
        current = signal.set_wakeup_fd(-1)
        if current != w:  # an event loop started in the block set its own: it keeps it
            signal.set_wakeup_fd(current)
        os.close(w)  # the thread's read sees the end of the pipe, and the thread ends

    return stop
