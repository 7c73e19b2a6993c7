"""Serving speed with memory given back after every request of more than one micro-batch (``release_rows`` =
``micro_batch``, the rule before ``serving.release_rows``) vs after requests of more than ``--rows-after``
encoder rows, on bench/pair_encoding.py's request mix (64-row requests of dev pairs), cross and bi, fp32 and int8.

    python bench/release_rows.py --rows 256

Prints a markdown table of pairs/s, best of 3 (``reports/bench_pair_encoding.md``).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="stsb,mrpc,rte")
    ap.add_argument("--rows", type=int, default=256, help="dev pairs per task in the request mix")
    ap.add_argument("--rows-after", type=int, default=256, help="release_rows to compare with micro_batch")
    a = ap.parse_args()
    from pair_encoding import build, rate

    from ptv2.config import load_config
    from ptv2.data.tasks import load_task_data
    from ptv2.export.checks import request_rows
    from ptv2.serving.bundle import Bundle
    from ptv2.serving.requests import serving_settings

    cfg = load_config(ROOT / "params.yaml")
    tasks = a.tasks.split(",")
    rows = [r for t in tasks for r in request_rows(load_task_data(cfg, t), "dev")[:a.rows]]
    random.Random(0).shuffle(rows)
    base = {**serving_settings(cfg.serving), "int8_fallback_margin": 0.0}  # random heads: see pair_encoding.py
    print(f"| encoding | encoder | release_rows {cfg.serving.micro_batch} (before) | release_rows {a.rows_after} "
          "| speed-up |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for enc in ("cross", "bi"):
            path = build(cfg, tasks, enc, Path(tmp) / enc)
            for int8 in (False, True):
                got = [rate(Bundle.from_serving(path, {**base, "limits": {**base["limits"], "release_rows": n}},
                                                int8=int8), rows, 3) for n in (cfg.serving.micro_batch, a.rows_after)]
                print(f"| {enc} | {'int8' if int8 else 'fp32'} | {got[0]:.1f} | {got[1]:.1f} | {got[1] / got[0]:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
