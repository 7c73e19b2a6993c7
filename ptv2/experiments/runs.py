"""Run-or-reuse for experiments: every (task, method, seed) cell of a table is one training run in its
own folder, keyed by ``ptv2.training.fingerprint.run_key``; a finished run with the same key is
reused, a run another process holds is skipped (or waited for), and a run may execute in a fresh
process so its peak memory is its own."""
from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any

from ptv2.config import Config
from ptv2.errors import RunError, exit_2_on_user_error, exit_note
from ptv2.files import file_lock
from ptv2.training.driver import finished, frozen_config, train
from ptv2.training.fingerprint import run_key

log = logging.getLogger(__name__)


def _train_in_child(cfg: Config, tasks: list[str], out: Path, mixture: bool, init_from: Path | None,
                    frozen: bool) -> None:
    """Entry point of a per-run process (spawned: fresh memory, so its peak RSS is this run's)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with exit_2_on_user_error():  # one line, as the CLI prints it, not the child's traceback
        train(cfg, tasks, out, mixture=mixture, init_from=init_from, frozen=frozen)


def run_or_reuse(cfg: Config, tasks: list[str], out: Path, mixture: bool = False, init_from: Path | None = None,
                 isolate: bool = False, wait: bool = True, frozen: bool = False) -> dict[str, Any] | None:
    """The ``metrics.json`` record of the run in ``out``: reused when finished with the same key, else
    trained (in a spawned process when ``isolate``). Returns None at once when another process holds
    ``out`` and not ``wait``. ``frozen``: the task's frozen-backbone baseline instead of a training run."""
    key = run_key(frozen_config(cfg) if frozen else cfg, tasks, mixture, init_from, frozen)
    with file_lock(out.parent / f".{out.name}.runlock", wait) as mine:  # (the run itself locks .<name>.lock)
        if not mine:
            return None
        done = finished(out, key)
        if done is not None:
            return done
        if not isolate:
            return train(cfg, tasks, out, mixture=mixture, init_from=init_from, frozen=frozen).record
        proc = multiprocessing.get_context("spawn").Process(target=_train_in_child,
                                                            args=(cfg, tasks, out, mixture, init_from, frozen))
        proc.start()
        proc.join()
        done = finished(out, key)
        if proc.exitcode != 0 or done is None:
            code = proc.exitcode  # -N: killed by signal N (SIGKILL: the out-of-memory killer, most often)
            why = f"failed (exit code {code}{exit_note(code)})" if code else "ended without a finished record (exit 0)"
            raise RunError(f"{out} {why}; its log is above. Rerun the same command to resume: finished runs are kept")
        return done


def dev_value(record: dict[str, Any], task: str, metric: str) -> float:
    """A run's dev ``metric`` on ``task``."""
    return record["metrics"]["dev"][task][metric]
