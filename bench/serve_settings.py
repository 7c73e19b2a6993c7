"""Serving speed of a pair-task request mix as one ``serving`` limit varies (``micro_batch``, ``release_rows``),
cross vs bi, int8 and fp32: bench/pair_encoding.py's bundles, request mix (64-row requests of shuffled dev pairs)
and rate, served as params.yaml says but for that setting and without the int8 near-tie fallback (random heads).

    python bench/serve_settings.py --setting micro_batch --values 8,16,32 --rows 128
    python bench/serve_settings.py --setting release_rows --values 16,256 --rows 128

Prints a markdown table of pairs/s, best of 3 (``reports/bench_pair_encoding.md``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from ptv2.cli.common import count, counts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--setting", choices=["micro_batch", "release_rows"], default="micro_batch")
    ap.add_argument("--values", type=counts, default="8,16,32")
    ap.add_argument("--tasks", default="stsb,mrpc,rte")
    ap.add_argument("--rows", type=count, default=128, help="dev pairs per task in the request mix")
    a = ap.parse_args()
    from pair_encoding import build, rate, request_mix, served

    from ptv2.config import load_config
    from ptv2.serving.bundle import Bundle

    cfg = load_config(ROOT / "params.yaml")
    tasks = a.tasks.split(",")
    rows = request_mix(cfg, tasks, a.rows)
    print(f"| encoder | {a.setting} | cross pairs/s | bi pairs/s | bi / cross |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {enc: build(cfg, tasks, enc, Path(tmp) / enc) for enc in ("cross", "bi")}
        for int8 in (True, False):
            for v in a.values:
                got = {enc: rate(Bundle.from_serving(p, served(cfg, **{a.setting: v}), int8=int8), rows, 3)
                       for enc, p in paths.items()}
                print(f"| {'int8' if int8 else 'fp32'} | {v} | {got['cross']:.1f} | {got['bi']:.1f} | "
                      f"{got['bi'] / got['cross']:.2f} |", flush=True)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
