"""Train-step time and peak memory, P-Tuning v2 vs full fine-tuning (same batch, one run, ratios),
and one epoch with dynamic padding + length grouping vs padding every batch to 128.

    python bench/train_step.py --task mrpc --out reports/bench_train.md

Each method runs in its own subprocess so peak RSS (VmHWM) is its own; memory is reported as the
increase over the process's RSS after loading the model.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from child import in_child  # noqa: E402
from ptv2.cli.common import count  # noqa: E402


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def child(method: str, task: str, batch_size: int, steps: int, pad_to: int, epoch: bool, max_train: int = 0) -> dict:
    """Runs inside the subprocess: returns timings and memory as JSON."""
    import torch

    from ptv2.config import load_config
    from ptv2.data.collate import Collator, length_grouped_batches
    from ptv2.data.tasks import load_task_data
    from ptv2.model.heads import task_loss
    from ptv2.training.build import head_spec, model_from_spec, spec_from_config
    from ptv2.training.splits import encode

    sets = [f"train.method={method}"] + ([f"tasks.{task}.max_train_examples={max_train}"] if max_train else [])
    cfg = load_config(ROOT / "params.yaml", sets)
    td = load_task_data(cfg, task)
    model, tok = model_from_spec(spec_from_config(cfg, {task: head_spec(cfg, td)}), seed=0)
    split = encode(td, "train", tok, cfg.backbone.max_length, cfg.pair_encoding(task))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr[method])
    base = _rss_kb("VmRSS")
    collate = Collator(tok.pad_token_id, td.spec.type)

    def batch_of(idx):
        b = collate([split.feats[i] for i in idx])
        if pad_to:
            n = pad_to - b["input_ids"].shape[1]
            b = {k: torch.nn.functional.pad(v, (0, n), value=tok.pad_token_id if k == "input_ids" else 0)
                 if v.dim() == 2 else v for k, v in b.items()}
        return b

    def step(b):
        loss = task_loss(td.spec.type, model(b, task), b["labels"])
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

    model.train()
    g = torch.Generator().manual_seed(0)
    if epoch:
        batches = length_grouped_batches(split.lengths, batch_size, g, group=not pad_to)
        t0 = time.perf_counter()
        for idx in batches:
            step(batch_of(idx))
        return {"epoch_s": time.perf_counter() - t0, "batches": len(batches)}
    fixed = batch_of(list(range(batch_size)))  # the same batch for both methods
    step(fixed)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step(fixed)
    return {"step_s": (time.perf_counter() - t0) / steps, "peak_mb": (_rss_kb("VmHWM") - base) / 1024,
            "seq_len": fixed["input_ids"].shape[1]}


def run(method: str, **kw) -> dict:
    return in_child("train_step", "child", method=method, **kw)


def main() -> None:
    from ptv2.files import atomic_write_text

    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="mrpc"); ap.add_argument("--batch-size", type=count, default=32)
    ap.add_argument("--steps", type=count, default=20); ap.add_argument("--epoch-examples", type=count, default=1000)
    ap.add_argument("--out", default="reports/bench_train.md")
    a = ap.parse_args()
    kw = dict(task=a.task, batch_size=a.batch_size, steps=a.steps, pad_to=0, epoch=False)
    pt, ft = run("ptv2", **kw), run("finetune", **kw)
    ekw = dict(task=a.task, batch_size=a.batch_size, steps=0, epoch=True, max_train=a.epoch_examples)
    dyn = run("ptv2", pad_to=0, **ekw)
    pad = run("ptv2", pad_to=128, **ekw)
    md = (f"# Training speed and memory ({a.task}, batch {a.batch_size}, {os.cpu_count()} CPU cores)\n\n"
          f"Command: `python bench/train_step.py --task {a.task} --batch-size {a.batch_size} --steps {a.steps} --epoch-examples {a.epoch_examples}`\n\n"
          "| | P-Tuning v2 | full fine-tuning | ratio (FT / PT2) |\n|---|---|---|---|\n"
          f"| train step (s), same batch of {a.batch_size} x {pt['seq_len']} tokens | {pt['step_s']:.3f} | "
          f"{ft['step_s']:.3f} | {ft['step_s'] / pt['step_s']:.2f}x |\n"
          f"| peak memory over the loaded model (MB) | {pt['peak_mb']:.0f} | {ft['peak_mb']:.0f} | "
          f"{ft['peak_mb'] / max(pt['peak_mb'], 1):.2f}x |\n\n"
          f"| one P-Tuning v2 epoch ({dyn['batches']} batches) | seconds | ratio |\n|---|---|---|\n"
          f"| dynamic padding + length grouping | {dyn['epoch_s']:.1f} | 1.00x |\n"
          f"| every batch padded to 128, plain shuffle | {pad['epoch_s']:.1f} | "
          f"{pad['epoch_s'] / dyn['epoch_s']:.2f}x |\n")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, md)
    print(md)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
