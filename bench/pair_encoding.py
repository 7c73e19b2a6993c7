"""Serving speed of a pair task encoded ``cross`` (one encoder row per pair) against ``bi`` (one row per text),
in one run on the same bundle format and the same request mix: dev pairs of real pair tasks, int8 and fp32.

    python bench/pair_encoding.py --tasks stsb,mrpc,rte --rows 512 --out reports/bench_pair_encoding.md

Prompts and heads are random (speed does not depend on their values); the encoder is the default backbone.
The ratio bi / cross of pairs per second is what the serving target reads (>= 0.9).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ptv2.cli.common import count  # noqa: E402


def build(cfg, tasks: list[str], encoding: str, out: Path):
    """A bundle serving ``tasks`` with every pair task encoded ``encoding``."""
    from ptv2.data.tasks import load_task_data
    from ptv2.export.onnx_export import write_bundle
    from ptv2.model.backbone import load_backbone
    from ptv2.training.build import head_spec, model_from_spec, spec_from_config

    c = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pair_encoding=encoding))
    backbone, tok = load_backbone(c.backbone.name)
    models = {}
    for t in tasks:
        spec = spec_from_config(c, {t: head_spec(c, load_task_data(c, t))})
        models[t] = model_from_spec(spec, backbone, tok, seed=0)[0].eval()
    return write_bundle(models, tok, out, int8=True)


def rate(bundle, rows: list[dict], repeats: int) -> float:
    """Pairs per second answering ``rows`` in requests of 64 rows, best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, len(rows), 64):
            bundle.predict(rows[s:s + 64])
        best = max(best, len(rows) / (time.perf_counter() - t0))
    return best


def request_mix(cfg, tasks: list[str], per_task: int) -> list[dict]:
    """``per_task`` dev pairs of each task, shuffled into one request stream."""
    import random

    from ptv2.data.tasks import load_task_data
    from ptv2.export.checks import request_rows

    rows = [r for t in tasks for r in request_rows(load_task_data(cfg, t), "dev")[:per_task]]
    random.Random(0).shuffle(rows)
    return rows


def served(cfg, **limits: int) -> dict:
    """Serving settings as the registered model serves (params' limits and spinning; ``limits`` override),
    without the int8 near-tie fallback: these random heads make every classification row a near tie (cross
    rows would all run twice, bi pairs never do)."""
    from ptv2.serving.requests import serving_settings

    s = {**serving_settings(cfg.serving), "int8_fallback_margin": 0.0}
    return {**s, "limits": {**s["limits"], **limits}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="stsb,mrpc,rte")
    ap.add_argument("--rows", type=count, default=512, help="dev pairs per task in the request mix")
    ap.add_argument("--repeats", type=count, default=3)
    ap.add_argument("--out", default="reports/bench_pair_encoding.md")
    a = ap.parse_args()
    from ptv2.config import load_config
    from ptv2.experiments.tables import markdown
    from ptv2.files import atomic_write_text
    from ptv2.serving.bundle import Bundle

    cfg = load_config(ROOT / "params.yaml")
    tasks = a.tasks.split(",")
    rows = request_mix(cfg, tasks, a.rows)
    table, rates = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for enc in ("cross", "bi"):
            path = build(cfg, tasks, enc, Path(tmp) / enc)
            for int8 in (False, True):
                rates[(enc, int8)] = rate(Bundle.from_serving(path, served(cfg), int8=int8), rows, a.repeats)
    for int8 in (False, True):
        c, b = rates[("cross", int8)], rates[("bi", int8)]
        table.append(["int8" if int8 else "fp32", f"{c:.1f}", f"{b:.1f}", f"{b / c:.2f}"])
    md = (f"# Serving a pair task: cross vs bi encoding\n\n`python bench/pair_encoding.py --tasks {a.tasks} --rows "
          f"{a.rows}`: {len(rows)} dev pairs of {', '.join(tasks)} shuffled into one stream, requests of 64 rows, "
          f"best of {a.repeats}; backbone `{cfg.backbone.name}`, max_length {cfg.backbone.max_length}, served as "
          f"params.yaml's `serving` says (limits {cfg.serving.limits()}) but without the int8 near-tie fallback "
          f"(random heads: every row a near tie), one process on this machine's cores.\n\n"
          + markdown(["encoder", "cross pairs/s", "bi pairs/s", "bi / cross"], table) + "\n")
    atomic_write_text(Path(a.out), md)
    print(md)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
