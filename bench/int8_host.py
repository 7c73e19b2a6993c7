"""Does int8 pay on this serving host? The exported bundle's dev rows/s with the fp32 encoder and with the int8
encoder as ptv2 serves it here (on an x86 CPU without VNNI: onnxruntime's exact products, ``ptv2/host.py``), plus
int8 with the plain (saturating) products for reference, in one process, best of ``--reps`` passes.

    python bench/int8_host.py --root /path/to/project --tasks sst2 --out reports/bench_int8_host.md

Needs a project where `dvc repro` has run (outputs/bundle). The bundle is opened as a server opens it (params.yaml's
serving section): a task whose int8 checks failed at export runs fp32 in the int8 rows too.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ptv2.cli.common import count, folder  # noqa: E402
from ptv2.files import atomic_write_text  # noqa: E402


def _cpu() -> str:
    """The CPU's model name and whether it has int8 dot products (VNNI / AMX)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.machine()
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    dots = sorted(set(re.findall(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", info))) or ["no VNNI / AMX"]
    return f"{name.group(1).strip() if name else platform.machine()} ({', '.join(dots)}, {os.cpu_count()} cores)"


def _rows_per_s(bundle, tds: dict, reps: int) -> float:
    from ptv2.export.checks import bundle_predictions

    for td in tds.values():  # warm-up: sessions and arenas
        bundle_predictions(bundle, td)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for td in tds.values():
            bundle_predictions(bundle, td)
        best = min(best, time.perf_counter() - t0)
    return sum(len(td.split("dev")) for td in tds.values()) / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=folder, default=".")
    ap.add_argument("--tasks", default="", help="comma-separated tasks of the bundle (default: all it serves)")
    ap.add_argument("--reps", type=count, default=3)
    ap.add_argument("--out", default="reports/bench_int8_host.md")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    os.chdir(Path(a.root).resolve())
    import ptv2.serving.bundle as served
    from ptv2.cli.common import names
    from ptv2.config import load_config
    from ptv2.data.tasks import load_task_data
    from ptv2.experiments.tables import markdown
    from ptv2.serving.bundle import Bundle

    cfg = load_config("params.yaml")
    src = Path(cfg.export.out_dir)
    fp32 = Bundle.from_serving(src, cfg.serving, int8=False, bounded=False)
    tasks = names("--tasks", a.tasks, []) if a.tasks else sorted(fp32.tasks)
    tds = {t: load_task_data(cfg, t) for t in tasks}

    def int8(exact: bool) -> Bundle:  # as a server opens it (a task whose int8 checks failed still runs fp32)
        with mock.patch.object(served, "saturating_int8", lambda: exact):
            return Bundle.from_serving(src, cfg.serving, int8=True, bounded=False)

    here = "exact" if served.saturating_int8() else "plain"
    ref = _rows_per_s(fp32, tds, a.reps)
    rows = [["fp32", f"{ref:.0f}", "1.00x"]]
    for exact in (True, False):
        speed = _rows_per_s(int8(exact), tds, a.reps)
        kind = "exact products" if exact else "plain (saturating) products"
        rows.append([f"int8, {kind}{' (as served here)' if here == ('exact' if exact else 'plain') else ''}",
                     f"{speed:.0f}", f"{speed / ref:.2f}x"])
    n = sum(len(td.split("dev")) for td in tds.values())
    text = (f"# Does int8 pay on this host? ({_cpu()})\n\nCommand: `python bench/int8_host.py --root <project> --tasks "
            f"{','.join(tasks)} --reps {a.reps}`. Dev rows/s of the exported bundle ({n} rows of {', '.join(tasks)}, "
            f"micro-batch {cfg.serving.micro_batch}), best of {a.reps} passes after a warm-up, one process.\n\n"
            + markdown(["encoder", "dev rows/s", "vs fp32"], rows) + "\n")
    atomic_write_text(out, text)
    print(text)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():
        main()
