"""``python -m ptv2.orchestration [STAGE ...]``: the whole DVC pipeline (or those stages), as scripts/run.sh runs it."""
import sys

from ptv2.orchestration.cli import main

sys.exit(main(sys.argv[1:]))
