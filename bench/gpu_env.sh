# Sourced by the GPU scripts (bench/gpu_session.sh, bench/gpu_heldout.sh): offline hygiene, the carried wheels
# (.whl/: datasets and its deps, missing on the GPU image) and the fp32 backbone cast back from .gpu/minilm.
# Sets PY, DEVICE, OUT; after it the backbone is /tmp/minilm and the carried data root is .gpu/data.
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:?set OUT}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true \
       PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
log() { echo "== $(date +%T) $*"; }
gpu_setup() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  [ -f /tmp/minilm/model.safetensors ] || $PY bench/cast_weights.py .gpu/minilm /tmp/minilm fp32
}
