#!/usr/bin/env bash
# The GPU session: everything one lent GPU machine runs, in one call (reports/gpu_check.md says what came back).
#
#   here, once:   bash bench/gpu_session.sh --prepare      # .gpu/ and .whl/ (git-ignored via .git/info/exclude)
#   device run, carry [.whl, .gpu]:  bash bench/gpu_session.sh          # results under $OUT
#   smoke here, on CPU:  OUT=/tmp/gs DEVICE=cpu SMOKE=1 PYTHON=.venv/bin/python bash bench/gpu_session.sh
#
# The GPU image has torch/transformers/onnxruntime/peft but no datasets (carried as wheels in .whl/) and no
# MiniLM package: .gpu/minilm holds all-MiniLM-L6-v2 with its weights in fp16 (the fp32 file is over the
# device tool's 64 MiB limit), cast back to fp32 here, so its numbers are near the CPU ones, not bitwise.
# .gpu/data holds the data files params.yaml names for the pretraining mixture's tasks (../shared/data).
# Each part runs even if an earlier one fails.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --prepare ]; then  # the GPU image's python is 3.12; pip here fetches its wheels
  set -e
  ex="$(git rev-parse --git-common-dir)/info/exclude"
  mkdir -p "$(dirname "$ex")" .gpu/data .whl
  grep -qx '/.gpu/' "$ex" 2>/dev/null || printf '/.gpu/\n/.whl/\n' >> "$ex"
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 cronsim==2.9
  .venv/bin/python bench/gpu_data.py "${PTV2_DATA_ROOT:-../shared/data}" .gpu/data
  .venv/bin/python bench/cast_weights.py \
    "$(.venv/bin/python -c 'from ptv2.model.backbone import resolve; print(resolve("all-MiniLM-L6-v2"))')" .gpu/minilm fp16
  du -sh .gpu .whl
  exit 0
fi
. bench/gpu_env.sh

log "1. machine"
nvidia-smi -L 2>/dev/null || true
$PY -c "import torch, transformers, onnxruntime; print('torch', torch.__version__, 'transformers', transformers.__version__, 'ort', onnxruntime.__version__, 'cuda', torch.cuda.is_available())"

log "2. bench/gpu_check.py (random-init encoders: train step ptv2 vs finetune, fp32/bf16; injection, QLoRA, ONNX)"
if [ "${SMOKE:-0}" = 1 ]; then
  $PY bench/gpu_check.py --device "$DEVICE" --sizes tiny --steps 2 --out "$OUT/gpu_check"
else
  $PY bench/gpu_check.py --device "$DEVICE" --out "$OUT/gpu_check"
fi

log "3. carried wheels and the fp32 backbone"
gpu_setup

log "4. ptv2 train --task stsb on $DEVICE: precision auto (bf16 on CUDA), fp32, and auto on all 5.7k train pairs"
smoke=()
[ "${SMOKE:-0}" = 1 ] && smoke=(--set tasks.stsb.max_train_examples=64 --set "tasks.stsb.epochs={ptv2: 1}")
for run in auto fp32 full; do
  prec=$run extra=()
  [ $run = full ] && prec=auto extra=(--set tasks.stsb.max_train_examples=0)
  t0=$SECONDS
  $PY -m ptv2 train --task stsb --set backbone.name=/tmp/minilm --set train.device="$DEVICE" \
    --set train.precision=$prec "${extra[@]}" "${smoke[@]}" --out "/tmp/stsb_$run" > "$OUT/train_stsb_$run.log" 2>&1
  echo "exit $? run=$run wall $((SECONDS - t0)) s" | tee -a "$OUT/train_stsb_$run.log"
  $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print({'run': sys.argv[2], 'dev': r['metrics']['dev'], \
'best_epoch': r['best_epoch'], 'train_seconds': r['train_seconds'], 'val_by_epoch': [round(h['val_score'], 2) for h in r['history']]})" \
    "/tmp/stsb_$run/metrics.json" $run 2>&1 | tail -n 1
done
unset PTV2_DATA_ROOT

log "5. the suite's CUDA tests (skipped without CUDA)"
$PY -m pytest -q -p no:cacheprovider tests/test_gpu_check.py tests/test_distributed.py tests/test_methods.py \
  tests/test_speed.py tests/test_train.py -k "cuda or gpu or bf16 or precision or own_device" 2>&1 | tail -n 25
log "done"
