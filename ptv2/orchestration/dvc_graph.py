"""What the Prefect flows call: run the DVC graph, serially or with stages side by side.

DVC owns the graph and the cache (dvc.yaml). ``reproduce`` asks it to reproduce, holding a file lock
so two runs never overlap (two `dvc repro` at once fail on DVC's own repo lock). DVC cannot run
stages in parallel (treeverse/dvc#755), so the fan-out runs stale stages' *commands* on workers
(``run_stage``), then has DVC record each finished one (``record``: ``dvc commit``, which writes the
stage's deps, params and outs to dvc.lock exactly as ``dvc repro`` would). A stage that failed is
not recorded: it stays stale and reruns alone next time.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from ptv2.errors import USER_ERROR_EXIT, ConfigError, RunError, exit_note
from ptv2.orchestration.failures import StageFailed, damaged_file
from ptv2.procenv import path_with_this_python

log = logging.getLogger(__name__)
# DVC's dvc.yaml loading is not thread-safe: two fan-out worker threads reading their commands at once failed
# one with "dvc.yaml validation failed" (expected str @ ...['metrics'][0]). Worker threads enter DVC one at a time.
_DVC_IN_PROCESS = threading.Lock()
# DVC prints its lines through handlers of its own; under Prefect, whose handler sits on the root logger, each one
# also propagated there and was printed twice ("Stage 'x' didn't change" and "| INFO | dvc.stage - Stage 'x' ...")
logging.getLogger("dvc").propagate = False


class _Held(threading.local):
    """The projects whose pipeline lock this thread holds: taking it again is a no-op."""

    def __init__(self) -> None:
        self.roots: set[Path] = set()


_HELD = _Held()


@contextlib.contextmanager
def pipeline_lock(root: str | Path) -> Iterator[None]:
    """Hold the project's pipeline lock. A second run waits for the first instead of failing, and says so with the
    holder's pid and command (it sat silent for minutes, then printed "nothing (up to date)"). Reentrant in the
    holding thread: the fan-out holds it from its stale check to its last record."""
    root = Path(root).resolve()
    if root in _HELD.roots:
        yield
        return
    _HELD.roots.add(root)
    try:
        with _flock(root):
            yield
    finally:
        _HELD.roots.discard(root)


@contextlib.contextmanager
def _flock(root: Path) -> Iterator[None]:
    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    with open(root / ".dvc" / "tmp" / "ptv2-pipeline.lock", "a+") as f:  # a+: the holder's line stays readable
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            log.warning("another pipeline run holds %s (%s); waiting for it to finish (Ctrl-C stops this one)",
                        root, f.read().strip() or "its pid is not recorded")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_project(root: Path) -> None:
    """``root`` is a project DVC can reproduce: its dvc.yaml and .dvc/ in a git work tree. Else DVC's
    SCMError traceback ("… is not a git repository"), after the pipeline lock had made a .dvc/ there."""
    missing = [name for name in ("dvc.yaml", ".dvc") if not (root / name).exists()]
    if missing:
        raise ConfigError(f"{root} is not a ptv2 project (no {' and no '.join(missing)}): run from a clone of the "
                          f"project (git clone URL), or pass its folder (--root PROJECT)")
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True,
                                text=True, timeout=30).stdout.strip() == "true"
    except (OSError, subprocess.SubprocessError):
        inside = False
    if not inside:
        raise ConfigError(f"{root} is not in a git work tree, which DVC needs here: run from a clone of the project "
                          f"(git clone URL)")


def check_data_root(root: Path, data_root: str) -> None:
    """The stages read ``data_root`` ($PTV2_DATA_ROOT when set); DVC tracks params.yaml's own (the prepare
    stage's ``${data_root}`` dependency): they must be one existing folder, else DVC's FileNotFoundError
    traceback, or data changes DVC never sees."""
    from ptv2.config import file_data_root
    from ptv2.errors import ConfigError

    tracked = file_data_root(root / "params.yaml")
    if data_root != tracked:
        raise ConfigError(f"$PTV2_DATA_ROOT ({data_root}) is not params.yaml's data_root ({tracked}), the folder "
                          f"dvc repro tracks: set data_root in params.yaml (dvc exp run -S data_root=PATH) and unset "
                          f"PTV2_DATA_ROOT")
    if not Path(tracked).is_dir():
        raise ConfigError(f"data_root {tracked!r} (params.yaml) is not a folder: set data_root to the folder that "
                          f"holds the task data (see its SOURCES.md), e.g. dvc exp run -S data_root=PATH")


@contextlib.contextmanager
def _repo(root: str | Path) -> Iterator[Any]:
    """The project's DVC repo, open; a DVC file it cannot read (``damaged_file``) is a ConfigError, so the CLI,
    the stages' callers and the flows alike give its one line (and a flow does not retry it)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            yield repo
    except DvcException as e:
        damaged = damaged_file(e)
        if damaged:
            raise ConfigError(damaged) from None
        raise


def reproduce(root: str | Path, targets: list[str] | None = None) -> list[str]:
    """``dvc repro`` in-process; returns the names of the stages that actually ran."""
    from ptv2.tracking import store as tracking
    from ptv2.config import load_config

    root = Path(root).resolve()
    blank = [t for t in targets or [] if not str(t).strip()]
    if blank:  # DVC read '' as every dvc.yaml below the project: comparison/'s hours-long stage too
        raise ConfigError(f"stage {blank[0]!r} is empty (an unset variable?): name a stage of dvc.yaml, or none "
                          f"for the whole pipeline")
    cfg = load_config(root / "params.yaml")
    check_project(root)
    check_data_root(root, cfg.data_root)
    tracking.init_store(root, cfg.tracking.experiment)  # create the DB before any stage runs
    os.environ["PATH"] = path_with_this_python()  # the stages' `python` is ours, activated or not
    with pipeline_lock(root), contextlib.chdir(root):  # DVC resolves targets against the cwd
        with _repo(root) as repo:
            _check_outputs_inside(root, [Path(o.fs_path) for o in repo.index.outs])
            stages = repo.reproduce(targets=["prepare"], force=True) if _backbone_changed(repo, cfg) else []
            stages += _reproduce_targets(repo, targets)
    ran = list(dict.fromkeys(s.addressing for s in stages))
    log.info("dvc repro ran %d stage(s): %s", len(ran), ran or "nothing (up to date)")
    return ran


def _reproduce_targets(repo: Any, targets: list[str] | None) -> list[Any]:
    """``repo.reproduce(targets)``; a target that names no stage is a ConfigError naming the stages (DVC's
    "Stage 'x' not found inside 'dvc.yaml' file" ended in "its output is above", with nothing above)."""
    from dvc.exceptions import NoOutputOrStageError
    from dvc.stage.exceptions import StageFileDoesNotExistError, StageNotFound

    try:
        return repo.reproduce(targets=targets or None)
    except (StageNotFound, StageFileDoesNotExistError, NoOutputOrStageError) as e:
        names = list(dict.fromkeys(s.addressing for s in repo.index.stages))
        raise ConfigError(f"{e}: no such stage; the stages are {', '.join(names)} (a foreach stage's name alone, "
                          f"e.g. adapt, runs it for every task); name none to run the whole pipeline") from None


def _check_outputs_inside(root: Path, outs: list[Path]) -> None:
    """Every stage output resolves inside the project: DVC refuses one outside its git repository only after the
    stages before it ran ("failed to reproduce 'pretrain' (… is outside of git repository …)", exit 1), as when
    ``outputs`` is a link to a larger disk."""
    for out in outs:
        if not out.resolve().is_relative_to(root):
            inside = [p for p in [*reversed(out.parents), out] if p != root and p.is_relative_to(root)]
            link = next((p for p in inside if p.is_symlink()), out)
            raise ConfigError(f"{os.path.relpath(out, root)} resolves to {out.resolve()}, outside the project: DVC "
                              f"keeps only outputs inside its git repository ({os.path.relpath(link, root)} is a link "
                              f"out of it); keep the outputs in the project, and put DVC's cache on the other disk "
                              f"instead (dvc cache dir PATH)")


def _backbone_changed(repo: Any, cfg: Any) -> bool:
    """Whether the backbone's files differ from those the prepare stage last recorded (weights replaced behind
    the same ``backbone.name``): no DVC dependency sees them, so the prepare stage is rerun first and the training
    stages, which depend on its record, follow. False before any prepare (DVC runs it anyway)."""
    from ptv2.backbone_files import BACKBONE_RECORD, backbone_sha

    record = Path(repo.stage.collect("prepare")[0].outs[0].fs_path) / BACKBONE_RECORD
    try:
        then = json.loads(record.read_text())["files_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    now = backbone_sha(cfg.backbone.name)
    if then == now:
        return False
    log.warning("backbone %r: its files changed since the last run (sha256 %s then, %s now); the prepare stage "
                "reruns, then every stage trained on it", cfg.backbone.name, str(then)[:12], now[:12])
    return True


def stage_metrics(root: str | Path, stages: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The JSON metrics files each of ``stages`` declares, read where dvc.yaml puts them (no path of our
    own); one DVC repo opened for all."""
    if not stages:
        return {}
    with contextlib.chdir(root), _repo(root) as repo:
        paths = {name: [o.fs_path for o in repo.stage.collect(name)[0].outs if o.metric] for name in stages}
    return {name: [json.loads(Path(p).read_text()) for p in ps] for name, ps in paths.items()}


def promotions(root: str | Path, ran: list[str]) -> list[dict[str, Any]]:
    """Registry decisions of the promote stages that ran in this reproduce."""
    got = stage_metrics(root, [name for name in ran if name.startswith("promote@")])
    return [m for ms in got.values() for m in ms]


def published(root: str | Path, ran: list[str]) -> dict[str, Any] | None:
    """What the publish stage did in this reproduce (the multi-task model), or None if it did not run."""
    return stage_metrics(root, ["publish"])["publish"][0] if "publish" in ran else None


def stale(root: str | Path, stages: list[str]) -> list[str]:
    """The ``stages`` whose deps, params or outs differ from dvc.lock (what ``dvc repro`` would run)."""
    with contextlib.chdir(root), _repo(root) as repo:  # DVC resolves targets against the cwd
        changed = repo.status(targets=stages)
    return [s for s in stages if s in changed]


def stage_command(root: str | Path, stage: str) -> str:
    """``stage``'s command as dvc.yaml resolves it. Never changes the working directory: the fan-out's
    thread runner calls this from several threads of one process at once, and one thread's ``chdir`` back
    made another's DVC look for dvc.yaml in the wrong folder ("Stage 'baseline@sent' not found"); and one
    thread at a time (``_DVC_IN_PROCESS``)."""
    root = Path(root).resolve()
    with _DVC_IN_PROCESS, _repo(root) as repo:
        (st,) = repo.stage.collect(f"{root / 'dvc.yaml'}:{stage}")  # an absolute target: no cwd involved
        return st.cmd


def stage_log(root: str | Path, stage: str) -> Path:
    """Where a stage run on a worker writes its output."""
    return Path(root) / "logs" / f"{stage}.log"


def run_stage(root: str | Path, stage: str, threads: int = 0, env: dict[str, str] | None = None) -> str:
    """Run one stage's command in the project folder (on whichever worker calls this); ``threads`` > 0
    caps the math libraries' threads, so N workers on N cores do not oversubscribe. Its output goes to
    ``logs/<stage>.log`` (stages side by side would interleave their progress bars). Returns the stage."""
    cmd = stage_command(root, stage)
    e = {**os.environ, **(env or {}), "PATH": path_with_this_python()}  # the worker's own `python`
    if threads:
        e.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = stage_log(root, stage)
    out.parent.mkdir(exist_ok=True)
    log.info("running %s: %s (output: %s)", stage, cmd, out.relative_to(root))
    t0 = time.monotonic()
    with open(out, "w") as f:
        r = subprocess.run(cmd, shell=True, cwd=root, env=e, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = out.read_text(errors="replace").replace("\r", "\n").strip()[-2000:]
        error = RunError if r.returncode == USER_ERROR_EXIT else StageFailed  # exit 2: the user's to fix
        code = f"{r.returncode}{exit_note(r.returncode)}"
        raise error(f"stage {stage} failed (exit {code}; whole output: {out}):\n{tail}")
    log.info("%s finished in %.0f s", stage, time.monotonic() - t0)
    return stage


def record(root: str | Path, stages: list[str]) -> None:
    """Have DVC record finished stages in dvc.lock (and its cache), one at a time under the pipeline lock."""
    root = Path(root).resolve()
    with pipeline_lock(root), contextlib.chdir(root), _repo(root) as repo:
        for stage in stages:
            repo.commit(stage, force=True)
            log.info("recorded %s in dvc.lock", stage)


def check_remote(root: str | Path, remote: str) -> None:
    """``remote`` ("" = none) is a DVC remote of the project: else the retraining flow met DVC's error only
    at its very end, when it pushed, after every stage had run."""
    if not remote:
        return
    with _repo(root) as repo:
        known = sorted(repo.config["remote"])
    if remote not in known:
        raise ConfigError(f"flows.dvc_remote = {remote!r} is not a DVC remote of this project (its remotes: "
                          f"{', '.join(known) or 'none'}): add it (dvc remote add {remote} URL) or set "
                          f"flows.dvc_remote: \"\"")


def push(root: str | Path, remote: str) -> None:
    """Upload the cached stage outputs to a DVC remote (where workers on other machines pull them)."""
    with contextlib.chdir(root), _repo(root) as repo:
        repo.push(remote=remote)


def pull(root: str | Path, remote: str, targets: list[str] | None = None) -> None:
    """Fetch what ``targets`` (default: every stage) need from a DVC remote and check it out."""
    with contextlib.chdir(root), _repo(root) as repo:
        repo.pull(targets=targets, remote=remote, with_deps=bool(targets))
