# Sourced by scripts/run.sh and scripts/test.sh: the environment every ptv2 process inherits (one home).
# Offline hygiene: no hub, no telemetry.
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true \
       PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
# Python writes the bytecode of what it imports (into .venv, as pip does at install; uv does not). With
# PYTHONDONTWRITEBYTECODE set, as on this machine, no process ever wrote it, and every stage compiled ~4,500 modules
# again: 18.4 s to import a training stage, 7.5 s with bytecode. The first process to import a module now writes it
# (the pipeline's first stages, ~14 s once), where compiling all of site-packages at set-up took 43 s
# (reports/pipeline_run_s17.md).
unset PYTHONDONTWRITEBYTECODE
