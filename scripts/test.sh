#!/usr/bin/env bash
# The README's test command: set up, then run the fast suite (slow real-data tests: PTV2_SLOW=1).
# Tests run on PTV2_TEST_WORKERS pytest-xdist workers (default 2; 0 = in this process): most of the suite's time is
# pipeline tests waiting on single-threaded stage subprocesses, so a second worker uses the idle core.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
export HF_HUB_OFFLINE=1  # the tests never reach a hub, whatever the caller set
./scripts/setup.sh
workers=${PTV2_TEST_WORKERS:-2}
if [ "$workers" != "0" ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one torch thread per worker: N workers on N cores, not 2N threads
fi
marker=()
if [ "${PTV2_SLOW:-0}" = "1" ]; then
  marker=(-m "slow or not slow")
fi
exec .venv/bin/python -m pytest -n "$workers" --dist worksteal "${marker[@]}" "$@"
