#!/usr/bin/env bash
# Issue 23's transfer grid on a lent GPU, all runs side by side: for each task T in TASKS and seed S in SEEDS,
#   own     (a) `ptv2 train --task T` (the task's own start)
#   frozen  `ptv2 baseline --task T` (the frozen backbone + fitted head: the gate's bar)
#   from_mt (b) T adapted from the default mixture pretrained at seed S     (MIXTURE=1, the default)
#   from_ho (d) T adapted from the default mixture without T, pretrained at seed S
# then bench/transfer_runs.py: every run's dev metric, the gate's paired test vs frozen and vs own, and the
# dev predictions (under $OUT/preds) so the runs can be compared with CPU runs of the same seeds.
#
#   here, once:  bash bench/gpu_session.sh --prepare            # .gpu/ (backbone, the mixture's data), .whl/
#   device run, carry [.gpu, .whl]:  TASKS=rte,mrpc SEEDS=42,1,2 bash bench/gpu_heldout.sh
#   smoke here, on CPU:  OUT=/tmp/gh DEVICE=cpu SMOKE=1 TASKS=rte SEEDS=42 PYTHON=.venv/bin/python bash bench/gpu_heldout.sh
# fp32 on the GPU (the CPU runs' precision); one thread per process; JOBS processes at a time.
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_env.sh
TASKS=${TASKS:-rte,mrpc}; SEEDS=${SEEDS:-42,1,2}; JOBS=${JOBS:-16}; MIXTURE=${MIXTURE:-1}
gpu_setup
common=$GRID_SETS
mixture=$($PY -c "from ptv2.config import load_config; print(' '.join(load_config('params.yaml', []).pretrain.tasks))")
small() {  # SMOKE=1: a few rows and one epoch, to check the script end to end on CPU
  [ "${SMOKE:-0}" = 1 ] || return 0
  echo "--set pretrain.cap=32 --set pretrain.epochs=1 --set tasks.$1.max_train_examples=48 --set tasks.$1.epochs.ptv2=1"
}
IFS=, read -ra tasks <<< "$TASKS"; IFS=, read -ra seeds <<< "$SEEDS"
log "phase 1: pretrainings, own starts, frozen baselines (tasks ${tasks[*]}, seeds ${seeds[*]}, mixture: $mixture)"
{
  for S in "${seeds[@]}"; do
    [ "$MIXTURE" = 1 ] && job mt_s$S $PY -m ptv2 pretrain --set seed=$S $common $(small sst2) --out $R/mt_s$S
    for T in "${tasks[@]}"; do
      rest=$(for t in $mixture; do [ $t != $T ] && printf '%s,' $t; done)
      job ho_${T}_s$S $PY -m ptv2 pretrain --set seed=$S "--set pretrain.tasks=[${rest%,}]" $common $(small sst2) --out $R/ho_${T}_s$S
    done
  done
  for S in "${seeds[@]}"; do for T in "${tasks[@]}"; do
    job ${T}_own_s$S $PY -m ptv2 train --task $T --set seed=$S $common $(small $T) --out $R/${T}_own_s$S
    job ${T}_frozen_s$S $PY -m ptv2 baseline --task $T --set seed=$S $common $(small $T) --out $R/${T}_frozen_s$S
  done; done
} > /tmp/phase1.txt
xargs -d "\n" -P "$JOBS" -I{} bash -c {} < /tmp/phase1.txt
grep -h "^rc=" "$OUT"/logs/*.log | sort | uniq -c
log "phase 2: adaptations"
{
  for S in "${seeds[@]}"; do for T in "${tasks[@]}"; do
    [ "$MIXTURE" = 1 ] && job ${T}_from_mt_s$S $PY -m ptv2 adapt --from $R/mt_s$S/model --task $T --set seed=$S $common $(small $T) --out $R/${T}_from_mt_s$S
    job ${T}_from_ho_s$S $PY -m ptv2 adapt --from $R/ho_${T}_s$S/model --task $T --set seed=$S $common $(small $T) --out $R/${T}_from_ho_s$S
  done; done
} > /tmp/phase2.txt
xargs -d "\n" -P "$JOBS" -I{} bash -c {} < /tmp/phase2.txt
grep -h "^rc=" "$OUT"/logs/*.log | sort | uniq -c
log "phase 3: dev scores and paired tests"
for T in "${tasks[@]}"; do
  $PY bench/transfer_runs.py --root $R --tasks $T --seeds "$SEEDS" --out "$OUT/runs_$T.json" --preds "$OUT/preds" \
    > "$OUT/logs/score_$T.log" 2>&1 &
done
wait
tail -n 3 "$OUT"/logs/score_*.log
log "done"
