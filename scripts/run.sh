#!/usr/bin/env bash
# The README's main command: set up, then run the default job on params.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true \
       PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
./scripts/setup.sh
exec .venv/bin/ptv2 train "$@"
