#!/usr/bin/env bash
# A budget sweep for one task on a lent GPU, every run side by side: each line of CONFIGS (a file of
# `NAME --set k=v ...`) runs `ptv2 train --task TASK` at each seed in SEEDS, beside `ptv2 baseline` (the frozen
# bar); bench/transfer_runs.py then scores each run (dev, the gate's paired test vs frozen). Which config wins
# is decided on val (each run's metrics.json, `metrics.val`, packed in $OUT/runs.tgz), never on dev.
#
#   device run, carry [.gpu, .whl]:  TASK=rte SEEDS=42,1,2 CONFIGS=bench/sweeps/rte.txt bash bench/gpu_sweep.sh
#   smoke here, on CPU:  OUT=/tmp/gs DEVICE=cpu SMOKE=1 TASK=rte SEEDS=42 CONFIGS=... PYTHON=.venv/bin/python bash bench/gpu_sweep.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_env.sh
TASK=${TASK:?set TASK}; SEEDS=${SEEDS:-42,1,2}; JOBS=${JOBS:-40}; CONFIGS=${CONFIGS:?set CONFIGS}
common=$GRID_SETS
[ "${SMOKE:-0}" = 1 ] && common="$common --set tasks.$TASK.max_train_examples=48 --set tasks.$TASK.epochs.ptv2=1"
[ -f "$CONFIGS" ] || { echo "gpu_sweep: CONFIGS=$CONFIGS: no such file (one \"NAME --set k=v ...\" per line, e.g. bench/sweeps/rte.txt)" >&2; exit 2; }
IFS=, read -ra seeds <<< "$SEEDS"
while read -r name _; do  # names become folder and log names inside shell commands: plain ones only
  [ -z "$name" ] || [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || { echo "gpu_sweep: config name '$name' in $CONFIGS: use letters, digits, . _ -" >&2; exit 2; }
done < "$CONFIGS"
gpu_setup
log "runs: $(grep -c . "$CONFIGS") configs x seeds ${seeds[*]} on $TASK"
{
  for S in "${seeds[@]}"; do
    job ${TASK}_frozen_s$S $PY -m ptv2 baseline --task $TASK --set seed=$S $common --out $R/${TASK}_frozen_s$S
    while read -r name sets; do
      [ -n "$name" ] && job ${TASK}_${name}_s$S $PY -m ptv2 train --task $TASK --set seed=$S $common $sets --out $R/${TASK}_${name}_s$S
    done < "$CONFIGS"
  done
} > /tmp/sweep.txt
xargs -d "\n" -P "$JOBS" -I{} bash -c {} < /tmp/sweep.txt
grep -h "^rc=" "$OUT"/logs/*.log | sort | uniq -c
log "scores"
for S in "${seeds[@]}"; do
  $PY bench/transfer_runs.py --root $R --tasks $TASK --seeds $S --out "$OUT/runs_${TASK}_s$S.json" \
    > "$OUT/logs/score_s$S.log" 2>&1 &
done
wait
log "done"
