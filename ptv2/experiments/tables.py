"""Markdown tables (through ``tabulate``) and the cell formats every report shares."""
from __future__ import annotations

import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ptv2.errors import ArtifactError
from ptv2.files import check_file_target

COMPARE_TITLE = "# Method comparison on dev"
TRANSFER_TITLE = "# Multi-task prompt pretraining → adaptation"
_OURS = (COMPARE_TITLE, TRANSFER_TITLE, "# Dev results")  # the last: comparison tables of earlier versions


def markdown(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are written as given (no number re-formatting)."""
    return tabulate([[str(c) for c in r] for r in rows], headers=headers, tablefmt="github", disable_numparse=True)


def mean_std(values: list[float]) -> str:
    """'—' for none, 'x.x' for one value, 'mean ± std' for more."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def count_range(values: list[int]) -> str:
    """Parameter counts as 74.5k or 22.71M; a range when they differ after rounding."""
    lo, hi = min(values), max(values)
    f = lambda n: f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"  # noqa: E731
    return f(lo) if f(lo) == f(hi) else f"{f(lo)}–{f(hi)}"


def command_line(verb: str) -> str:
    """The command line that made a report, quoted so it can be pasted back into a shell: the ``ptv2`` script's
    and ``python -m ptv2``'s alike (their ``--set`` overrides are part of what the table measured)."""
    prog = Path(sys.argv[0]) if sys.argv else Path()
    args = sys.argv[1:]
    ran = prog.name == "ptv2" or (prog.name == "__main__.py" and prog.parent.name == "ptv2")
    return "ptv2 " + shlex.join(args) if ran and verb in args else f"ptv2 {verb}"


def check_table_target(out_md: Path) -> None:
    """``--out`` of a table: a ``.md`` path (its ``.json`` and ``.png`` go beside it) where nothing stands but an
    earlier ptv2 table; else one line before any run (``--out README.md`` was replaced by the table)."""
    check_file_target(out_md)
    if out_md.suffix != ".md":
        raise ArtifactError(f"--out {str(out_md)!r}: a table is written as markdown, its .json and .png beside it; "
                            f"pass a path ending in .md, such as reports/table.md")
    ours = out_md.is_file() and out_md.read_text(errors="replace").startswith(_OURS)
    for p in (out_md, out_md.with_suffix(".json"), out_md.with_suffix(".png")):
        check_file_target(p)
        if p.exists() and not ours:
            raise ArtifactError(f"{str(p)!r} exists and is not part of an earlier ptv2 table: ptv2 replaces only its "
                                f"own output; pick another --out or remove it first")
