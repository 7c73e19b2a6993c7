"""Run one function of a bench script in a fresh Python process (its own peak RSS, no caches shared with
the other entries) and read its JSON result back."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ptv2.errors import USER_ERROR_EXIT  # noqa: E402
from ptv2.files import atomic_write_text  # noqa: E402


def in_child(module: str, fn: str, **kw: Any) -> dict[str, Any]:
    """``bench/<module>.py``'s ``fn(**kw)`` in a subprocess (cwd: the project root); exits with its stderr
    if it fails."""
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'bench')!r}); sys.path.insert(0, {str(ROOT)!r}); "
            f"from ptv2.errors import exit_2_on_user_error; import {module} as m\n"
            f"with exit_2_on_user_error(): print('RESULT' + json.dumps(m.{fn}(**{kw!r})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT")]
    if r.returncode == USER_ERROR_EXIT:  # the child's one line is the user's: pass it on as it is
        print(r.stderr.strip().splitlines()[-1], file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT)
    if r.returncode or not lines:
        raise SystemExit(f"{module}.{fn}({kw}) failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT"):])


def write_report(out: str | Path, lines: list[str]) -> int:
    """A bench's markdown report to ``out`` and stdout; the bench's exit code (0)."""
    atomic_write_text(out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
