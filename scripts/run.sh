#!/usr/bin/env bash
# The README's main command: set up, then run the whole default pipeline (dvc repro on params.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
[ -d .git ] || { echo "run from a git clone (dvc needs git)" >&2; exit 2; }
exec python -m ptv2.orchestration "$@"   # dvc repro: a bad value or a failed stage ends in one line
