"""Which int8 keeps predictions: ways of quantizing a project's exported encoder, each scored by its dev
agreement with fp32 per task (regression: within export.int8_regression_tol) and its 1 x 128 latency.

    python bench/int8_variants.py --root /path/to/project --out reports/bench_int8.md

Needs a project where `dvc repro` has run (outputs/bundle holds the fp32 encoder and the tasks).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ptv2.cli.common import folder  # noqa: E402
from ptv2.files import atomic_write_text  # noqa: E402
LAYERS = range(6)


def _ffn(*names: str) -> list[str]:
    return [f"/backbone/encoder/layer.{i}/{n}/dense/MatMul" for i in LAYERS for n in names]


FALLBACK = {  # served with classification near-ties answered in fp32 (serving.int8_fallback_margin)
    "dynamic, per-channel + fp32 for near-ties (margin 0.05)": ("dynamic, per-channel (ptv2's exporter)", 0.05),
    "dynamic, per-channel + fp32 for near-ties (margin 0.1)": ("dynamic, per-channel (ptv2's exporter)", 0.1),
}
VARIANTS = {  # name -> keyword arguments of quantize_dynamic (None: static QDQ, calibrated)
    "dynamic, per-tensor": {"per_channel": False},
    "dynamic, per-channel (ptv2's exporter)": {"per_channel": True},
    "dynamic, per-channel, reduce_range": {"per_channel": True, "reduce_range": True},
    "dynamic, per-channel, attention output dense kept fp32": {"per_channel": True, "nodes_to_exclude": _ffn("attention/output")},
    "dynamic, per-channel, FFN output dense kept fp32": {"per_channel": True, "nodes_to_exclude": _ffn("output")},
    "dynamic, per-channel, both FFN dense kept fp32": {"per_channel": True, "nodes_to_exclude": _ffn("output", "intermediate")},
    "static QDQ, per-channel, MinMax on 192 train rows": None,
}


def calibration(bundle, cfg, tasks: list[str]):
    """A CalibrationDataReader over 64 train rows per task, 16 rows per feed (with each row's prompt)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    from ptv2.data.tasks import load_task_data
    from ptv2.export.checks import request_rows

    rng, rows = random.Random(0), []
    for t in tasks:
        r = request_rows(load_task_data(cfg, t), "train")
        rows += rng.sample(r, min(64, len(r)))
    rng.shuffle(rows)
    feeds = []
    for s in range(0, len(rows), 16):
        feed, _ = bundle._encode(rows[s:s + 16])
        prefix = np.stack([bundle.tasks[r["task"]].prompt for r in rows[s:s + 16]], axis=2).astype(np.float32)
        feeds.append({**feed, "prefix": prefix})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    return Reader()


def quantize(name: str, src: Path, dst: Path, bundle, cfg, tasks: list[str]) -> None:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    kw = VARIANTS[name]
    if kw is None:
        quantize_static(str(src), str(dst), calibration(bundle, cfg, tasks), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"], calibrate_method=CalibrationMethod.MinMax)
    else:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, **kw)


def latency_ms(bundle, reps: int = 50) -> float:
    import numpy as np

    ids = np.random.default_rng(0).integers(1000, 20000, (1, 128)).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    task = next(iter(bundle.tasks))
    bundle.hidden(feed, [task])
    t0 = time.perf_counter()
    for _ in range(reps):
        bundle.hidden(feed, [task])
    return 1000 * (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=folder, default=".")
    ap.add_argument("--out", default="reports/bench_int8.md")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    os.chdir(Path(a.root).resolve())
    from ptv2.config import load_config
    from ptv2.data.tasks import load_task_data
    from ptv2.experiments.tables import markdown
    from ptv2.export.checks import bundle_predictions
    from ptv2.serving.bundle import Bundle
    from ptv2.serving.manifest import write_manifest
    from ptv2.evidence import agreement

    cfg = load_config("params.yaml")
    src = Path(cfg.export.out_dir)
    fp32 = Bundle(src, spin=cfg.serving.spinning)
    tasks = sorted(fp32.tasks)
    tds = {t: load_task_data(cfg, t) for t in tasks}
    ref = {t: bundle_predictions(fp32, td) for t, td in tds.items()}
    tol = {t: cfg.export.int8_regression_tol if tds[t].spec.type == "regression" else 0.0 for t in tasks}
    t0 = time.perf_counter()
    for t in tasks:
        bundle_predictions(fp32, tds[t])
    n_dev = sum(len(ref[t]) for t in tasks)
    rows = [["fp32 (reference)"] + ["1.000"] * len(tasks) + [f"{latency_ms(fp32):.2f}", f"{n_dev / (time.perf_counter() - t0):.0f}"]]
    for name in [*VARIANTS, *FALLBACK]:
        base, margin = FALLBACK.get(name, (name, 0.0))
        work = Path(tempfile.mkdtemp(prefix="ptv2-int8-")) / "bundle"
        shutil.copytree(src, work)
        (work / "manifest.json").unlink()
        for spec in work.glob("tasks/*.json"):  # measure every task on the int8 encoder: drop the recorded checks
            kept = {k: v for k, v in json.loads(spec.read_text()).items() if not k.startswith("int8_")}
            spec.write_text(json.dumps(kept))
        quantize(base, src / "encoder.onnx", work / "encoder.int8.onnx", fp32, cfg, tasks)
        write_manifest(work)
        q = Bundle(work, int8=True, spin=cfg.serving.spinning, fallback_margin=margin)
        t0 = time.perf_counter()
        preds = {t: bundle_predictions(q, tds[t]) for t in tasks}
        rate = n_dev / (time.perf_counter() - t0)
        agree = [agreement(ref[t], preds[t], tol[t]) for t in tasks]
        rows.append([name] + [f"{x:.3f}" for x in agree] + [f"{latency_ms(q):.2f}", f"{rate:.0f}"])
        print(rows[-1], flush=True)
        shutil.rmtree(work.parent)
    served = Bundle(src, int8=True, spin=cfg.serving.spinning, fallback_margin=cfg.serving.int8_fallback_margin,
                    int8_min_agreement=cfg.serving.int8_min_agreement)
    t0 = time.perf_counter()
    preds = {t: bundle_predictions(served, tds[t]) for t in tasks}
    rate = n_dev / (time.perf_counter() - t0)
    fp32_tasks = [t for t in tasks if not served.tasks[t].int8]
    rows.append([f"as served (serving.int8_min_agreement {cfg.serving.int8_min_agreement}: fp32 for "
                 f"{', '.join(fp32_tasks) or 'no task'}; margin {cfg.serving.int8_fallback_margin})"] + [f"{agreement(ref[t], preds[t], tol[t]):.3f}" for t in tasks]
                + [f"{latency_ms(served):.2f}", f"{rate:.0f}"])
    table = markdown(["int8 variant"] + [f"{t} agreement" for t in tasks] + ["1 x 128 ms", "dev rows/s"], rows)
    md = (f"# int8 variants of the exported encoder ({os.cpu_count()} CPU cores)\n\nCommand: "
          f"`python bench/int8_variants.py --root <project>` on a project after `dvc repro`. Agreement with fp32 on "
          f"each task's dev set (regression: within {cfg.export.int8_regression_tol}); latency of one 1 x 128 "
          f"forward (random ids: no near-ties) and throughput over all the tasks' dev rows (64 per request), thread spinning {'on' if cfg.serving.spinning else 'off'}.\n\n{table}\n")
    atomic_write_text(out, md)
    print(md)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
