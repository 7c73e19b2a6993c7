"""torchrun for the stages (``python -m ptv2.stages.launch <torchrun arguments>``): when a rank fails, the group
ends with that rank's own exit code (2 for a user error, whose one line the rank printed), not torchrun's
ChildFailedError traceback; DVC and the flows then see a user error as one (no retry)."""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except ChildFailedError as e:
        _, first = e.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1  # a signal (negative) is a failure of its own
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
