"""Serving latency/throughput: torch eager vs ORT fp32 vs ORT fp32 optimized vs ORT int8, and the
memory of one multi-task session vs one session per task. Ratios against torch eager, one run.

    python bench/onnx_latency.py --out reports/bench_onnx.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["sst2", "mrpc", "cola", "stsb", "rte", "cb", "wsc", "conll2003", "copa"]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(tmp: Path) -> Path:
    """A 9-task bundle on the default backbone (random prompts/heads: latency does not depend on them)."""
    from ptv2.config import load_config
    from ptv2.export.onnx_export import export_baked, write_bundle
    from ptv2.model.spec import HeadSpec
    from ptv2.training.build import model_from_spec, spec_from_config

    cfg = load_config(ROOT / "params.yaml")
    heads = {t: HeadSpec(type=cfg.task(t).type, labels=list(cfg.task(t).labels) or (["O", "B-X", "I-X"] if t == "conll2003" else []),
                         metrics=list(cfg.task(t).metrics), text_b=bool(cfg.task(t).text_b))
             for t in TASKS if cfg.task(t).type != "multiple_choice"}
    model, tok = model_from_spec(spec_from_config(cfg, heads), seed=0)
    bundle = write_bundle({t: model for t in heads}, tok, tmp / "bundle")
    for t in heads:
        export_baked(model, t, tmp / f"baked_{t}.onnx")
    return bundle


def latency(bundle: Path, batch: int, length: int, reps: int) -> dict[str, float]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from ptv2.serving.bundle import Bundle

    torch.set_num_threads(os.cpu_count() or 2)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (batch, length)).astype(np.int64)
    mask, types = np.ones_like(ids), np.zeros_like(ids)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    out = {}
    variants = {"ORT fp32": Bundle(bundle), "ORT int8": Bundle(bundle, int8=True)}
    opt = bundle.parent / "encoder.opt.onnx"
    if opt.is_file():
        so = ort.SessionOptions(); so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        b = Bundle(bundle); b.session = ort.InferenceSession(str(opt), so, providers=["CPUExecutionProvider"])
        variants["ORT fp32 optimized"] = b
    for name, b in variants.items():
        b.hidden(feed, ["sst2"] * batch)
        t0 = time.perf_counter()
        for _ in range(reps):
            b.hidden(feed, ["sst2"] * batch)
        out[name] = (time.perf_counter() - t0) / reps
    # torch eager: the same encoder graph's module
    from ptv2.config import load_config
    from ptv2.export.graph import PromptInputEncoder, batch_prefix, prompt_tensor
    from ptv2.model.spec import HeadSpec
    from ptv2.training.build import model_from_spec, spec_from_config

    cfg = load_config(ROOT / "params.yaml")
    head = HeadSpec(type="classification", labels=["0", "1"], metrics=["accuracy"], text_b=False)
    model, _ = model_from_spec(spec_from_config(cfg, {"sst2": head}), seed=0)
    enc = PromptInputEncoder(model.eval()).eval()
    t_in = [torch.from_numpy(x) for x in (ids, mask, types)]
    pre = batch_prefix([prompt_tensor(model)] * batch)
    with torch.no_grad():
        enc(*t_in, pre)
        t0 = time.perf_counter()
        for _ in range(reps):
            enc(*t_in, pre)
    out["torch eager"] = (time.perf_counter() - t0) / reps
    return out


def memory(bundle: Path, mode: str) -> float:
    """RSS increase (MB) for serving all tasks: one bundle session, or one baked session per task."""
    code = ("import sys, json; sys.path.insert(0, %r); import onnx_latency as o; from pathlib import Path;"
            "print('RESULT' + json.dumps(o._mem_child(Path(%r), %r)))") % (str(ROOT / "bench"), str(bundle), mode)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.split("RESULT", 1)[1])


def _mem_child(bundle: Path, mode: str) -> float:
    import numpy as np
    import onnxruntime as ort

    from ptv2.serving.bundle import Bundle

    base = _rss_mb()
    feed = {"input_ids": np.full((1, 16), 2000, np.int64), "attention_mask": np.ones((1, 16), np.int64),
            "token_type_ids": np.zeros((1, 16), np.int64)}
    if mode == "one":
        b = Bundle(bundle)
        for t in b.tasks:
            b.hidden(feed, [t])
    else:
        files = sorted(bundle.parent.glob("baked_*.onnx"))[: 1 if mode == "single" else None]
        sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in files]
        for s in sessions:
            s.run(None, feed)
    return _rss_mb() - base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20); ap.add_argument("--out", default="reports/bench_onnx.md")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ptv2-bench-"))
    bundle = build(tmp)
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimize_model(str(bundle / "encoder.onnx"), model_type="bert", num_heads=12, hidden_size=384
                       ).save_model_to_file(str(tmp / "encoder.opt.onnx"))
    except Exception as e:  # the optimizer may not match the prefix graph
        print("ORT transformer optimizer failed:", e)
    rows = []
    for batch, length in [(1, 128), (32, 128), (1, 24), (32, 24)]:
        lat = latency(bundle, batch, length, a.reps if batch == 1 else max(3, a.reps // 4))
        rows.append((batch, length, lat))
    names = ["torch eager", "ORT fp32", "ORT fp32 optimized", "ORT int8"]
    lines = ["| batch x length | " + " | ".join(f"{n} ms (speed-up)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for batch, length, lat in rows:
        cells = [f"{1000 * lat[n]:.1f} ({lat['torch eager'] / lat[n]:.2f}x)" if n in lat else "—" for n in names]
        lines.append(f"| {batch} x {length} | " + " | ".join(cells) + " |")
    one, many, single = memory(bundle, "one"), memory(bundle, "many"), memory(bundle, "single")
    n_tasks = len(list(bundle.glob("tasks/*.json")))
    md = (f"# ONNX serving benchmark ({os.cpu_count()} CPU cores, all-MiniLM-L6-v2, prompt length from params.yaml)\n\n"
          f"Command: `python bench/onnx_latency.py --reps {a.reps}`. Latency per forward of the encoder "
          f"(24 tokens ≈ the median SST-2/CoLA dev length).\n\n" + "\n".join(lines) +
          f"\n\n| serving | RSS increase (MB) | ratio to one single-task session |\n|---|---|---|\n"
          f"| 1 task, one baked single-task session | {single:.0f} | 1.00x |\n"
          f"| {n_tasks} tasks, one prompt-as-input session | {one:.0f} | {one / max(single, 1):.2f}x |\n"
          f"| {n_tasks} tasks, {n_tasks} single-task (baked) sessions | {many:.0f} | {many / max(single, 1):.2f}x |\n"
          f"\nCOPA (multiple choice) is not served by the bundle, so {n_tasks} of the nine tasks.\n")
    Path(a.out).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
