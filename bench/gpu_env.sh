# Sourced by the GPU scripts (bench/gpu_session.sh, gpu_heldout.sh, gpu_sweep.sh): offline hygiene, the carried wheels
# (.whl/: datasets and its deps, missing on the GPU image) and the fp32 backbone cast back from .gpu/minilm.
# Sets PY, DEVICE, OUT, R (the runs' folder), GRID_SETS (what every grid run gets: the carried backbone, fp32 as
# on CPU, one thread); gpu_setup installs the wheels, casts the backbone to /tmp/minilm and points PTV2_DATA_ROOT
# at the carried data. At exit every log,
# metrics.json and prediction file is packed into $OUT/runs.tgz (the device tool returns only a few files).
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:?set OUT}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true \
       PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
R=${RUNS:-/tmp/runs}
GRID_SETS="--set backbone.name=/tmp/minilm --set train.device=$DEVICE --set train.precision=fp32 --set train.num_threads=1"
mkdir -p "$OUT/logs" "$OUT/metrics" "$R"
pack() {  # nothing to pack: leave $OUT as it is
  [ -n "$(find "$OUT/logs" "$OUT/metrics" -type f 2>/dev/null | head -n 1)" ] || return 0
  tar czf "$OUT/runs.tgz" -C "$OUT" logs metrics $(cd "$OUT" && ls -d preds 2>/dev/null) && rm -rf "$OUT/logs" "$OUT/metrics" "$OUT/preds"; }
trap pack EXIT
log() { echo "== $(date +%T) $*"; }
gpu_setup() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  [ -f /tmp/minilm/model.safetensors ] || $PY bench/cast_weights.py .gpu/minilm /tmp/minilm fp32
  export PTV2_DATA_ROOT=$PWD/.gpu/data
}
job() {  # NAME CMD...: one run, its log and exit status under $OUT/logs
  local n=$1; shift
  printf '%q ' bash -c "$* > $OUT/logs/$n.log 2>&1; echo rc=\$? >> $OUT/logs/$n.log; cp $R/$n/metrics.json $OUT/metrics/$n.json 2>/dev/null; true"
  echo
}
