#!/usr/bin/env bash
# The README's main command: set up, then run the whole default pipeline (dvc repro on params.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
# before the install: a copy outside git fails here, not after minutes of set-up; `.git` is a file in a
# `git worktree` (or a submodule), so git itself answers
command -v git >/dev/null 2>&1 || { echo "git not found: install git (DVC keeps the pipeline in a git clone)" >&2; exit 2; }
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo "run from a git clone (dvc needs git)" >&2; exit 2; }
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m ptv2.orchestration "$@"   # dvc repro: a bad value or a failed stage ends in one line
