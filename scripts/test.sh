#!/usr/bin/env bash
# The README's test command: set up, then run the fast suite (slow real-data tests: PTV2_SLOW=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true \
       PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
./scripts/setup.sh
if [ "${PTV2_SLOW:-0}" = "1" ]; then
  exec .venv/bin/python -m pytest -m "slow or not slow" "$@"
fi
exec .venv/bin/python -m pytest "$@"
