#!/usr/bin/env bash
# The README's main command: set up, then run the whole default pipeline (dvc repro on params.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true \
       PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
[ -d .git ] || { echo "run from a git clone (dvc needs git)" >&2; exit 2; }
# the Prefect pipeline flow: `dvc repro`, with the per-task adapt/baseline stages side by side on a local Dask
# cluster (flows.max_workers x flows.threads_per_worker; 1 worker: plain `dvc repro`), recorded in dvc.lock
exec python -c "import sys; from flows.pipeline import pipeline; pipeline('.', sys.argv[1:] or None)" "$@"
