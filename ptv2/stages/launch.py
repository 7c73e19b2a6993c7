"""torchrun for the stages (``python -m ptv2.stages.launch <torchrun arguments>``): when a rank fails, the group
ends with that rank's own exit code (2 for a user error, whose one line the rank printed), not torchrun's
ChildFailedError traceback; DVC and the flows then see a user error as one (no retry). ``data_parallel``: a
stage's own launch of that group when ``train.processes`` > 1."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

from ptv2.config import Config


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except ChildFailedError as e:
        _, first = e.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1  # a signal (negative) is a failure of its own
    return 0


def data_parallel(cfg: Config, module: str, argv: list[str] | None) -> None:
    """With ``train.processes`` > 1, run this stage as that many data-parallel processes under torchrun
    and exit with its status; inside the group (or with one process) return and train here."""
    n = cfg.train.processes
    if n <= 1 or "LOCAL_RANK" in os.environ:
        return
    from ptv2.training.loop import check_device

    check_device(cfg.train, local=n)  # before n processes start (each would say it, or run out of memory)
    args = sys.argv[1:] if argv is None else argv
    cmd = [sys.executable, "-m", "ptv2.stages.launch", "--standalone", f"--nproc_per_node={n}", "-m", module, *args]
    logging.getLogger(__name__).info("launching %d data-parallel processes: %s", n, " ".join(cmd))
    raise SystemExit(subprocess.run(cmd).returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
