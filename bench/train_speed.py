"""One training epoch, ptv2 (each speed setting) against Hugging Face ``Trainer`` peers, in one run.

    python bench/train_speed.py --task mrpc --examples 1280 --out reports/bench_speed.md

Every entry runs in its own subprocess on the same train rows (the task's train split after ptv2 carves
its val, first ``--examples`` rows) on the same cores, one after the other:
- ptv2 through the library's own driver (``ptv2.training.driver.train``, 1 epoch, random head so no fitting
  time): fp32 eager, then each setting of ``train.precision`` / ``train.compile`` asked for, and
  ``--encodings`` (bi, cross). Epoch time is the loop's ``_run_epoch`` (timed by wrapping it).
- ``Trainer`` full fine-tuning (run_glue-style: cross-encoded pairs padded to 128, AdamW lr 2e-5) and
  ``Trainer`` + PEFT LoRA (r 8 on query/value, lr 5e-4): ``train_runtime`` of one epoch.
Reported: epoch seconds, examples/s, ratio of each peer's epoch time to ptv2's, dev metric after the one
epoch, peak RSS of the process.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from child import in_child, write_report  # noqa: E402
from ptv2.cli.common import count, names  # noqa: E402
from ptv2.errors import ConfigError  # noqa: E402

BATCH = 32


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cfg(task: str, examples: int, sets: list[str]):
    from ptv2.config import load_config

    return load_config(ROOT / "params.yaml", [f"tasks.{task}.max_train_examples={examples}", "train.method=ptv2",
                                              "train.epochs.ptv2=1", "train.head_init=random", "train.patience=0",
                                              f"train.batch_size={BATCH}"] + sets)


def child_ptv2(task: str, examples: int, sets: list[str]) -> dict[str, Any]:
    from ptv2.training import driver, loop

    spent: list[float] = []
    orig = loop._run_epoch

    def timed(*a, **k):
        t0 = time.perf_counter()
        out = orig(*a, **k)
        spent.append(time.perf_counter() - t0)
        return out

    loop._run_epoch = timed
    cfg = _cfg(task, examples, sets)
    with tempfile.TemporaryDirectory() as tmp:
        run = driver.train(cfg, [task], tmp, report_splits=("dev",))
    metric = cfg.task(task).metrics[0]
    return {"epoch_s": spent[0], "rows": examples, "dev": run.metrics["dev"][task][metric], "metric": metric,
            "peak_mb": _peak_mb(), "precision": run.record["precision"]}


def child_trainer(task: str, examples: int, lora: bool, bf16: bool = False) -> dict[str, Any]:
    import numpy as np
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from ptv2.data.tasks import load_task_data
    from ptv2.model.backbone import resolve
    from ptv2.training.metrics import compute

    cfg = _cfg(task, examples, [])
    td = load_task_data(cfg, task)
    path = resolve(cfg.backbone.name)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(td.labels))
    if lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.05,
                                                 target_modules=["query", "value"]))

    def enc(split: str) -> Dataset:
        ds = td.split(split)
        e = tok(list(ds["text_a"]), list(ds["text_b"]), truncation=True, max_length=128, padding="max_length")
        return Dataset.from_dict({**e, "labels": list(ds["label"])})

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=BATCH, num_train_epochs=1,
                                 learning_rate=5e-4 if lora else 2e-5, save_strategy="no", report_to=[],
                                 logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=cfg.seed, bf16=bf16)
        trainer = Trainer(model=model, args=args, train_dataset=enc("train"))
        out = trainer.train()
        dev = enc("dev")
        pred = np.argmax(trainer.predict(dev).predictions, axis=-1)
    metric = cfg.task(task).metrics[0]
    score = compute([metric], pred.tolist(), list(dev["labels"]))[metric]
    return {"epoch_s": out.metrics["train_runtime"], "rows": examples, "dev": score, "metric": metric,
            "peak_mb": _peak_mb()}


def _run(kind: str, **kw: Any) -> dict[str, Any]:
    return in_child("train_speed", f"child_{kind}", **kw)


PEERS = ("finetune", "lora", "finetune-bf16", "lora-bf16")


def _planned(a: argparse.Namespace) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
    """The ptv2 runs (encoding, extra setting, --sets) and Trainer peers asked for, each config checked before the
    first run (a bad --settings or --peers was found after minutes of the runs before it)."""
    from ptv2.config import load_config

    load_config(ROOT / "params.yaml").task(a.task)  # an unknown task's own line
    runs = []
    for pe in names("--encodings", a.encodings, []):
        for extra in [""] + [s for s in a.settings.split(";") if s]:
            sets = [f"backbone.pair_encoding={pe}", "train.precision=fp32"] + ([extra] if extra else [])
            if "precision" in extra:
                sets.remove("train.precision=fp32")
            _cfg(a.task, a.examples, sets)
            runs.append((pe, extra, sets))
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ConfigError(f"--peers {a.peers!r}: {unknown[0]!r} is not a peer; give some of {list(PEERS)}, or ''")
    return runs, peers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--examples", type=count, default=1280)
    ap.add_argument("--encodings", default="bi,cross")
    ap.add_argument("--settings", default="train.compile=true",
                    help="';'-separated ptv2 settings to time beside fp32 eager, e.g. 'train.precision=auto;train.compile=true'")
    ap.add_argument("--peers", default="finetune,lora",
                    help="Trainer peers: finetune,lora,finetune-bf16,lora-bf16 (-bf16: Trainer's bf16=True) ('' = none)")
    ap.add_argument("--out", default="reports/bench_speed.md")
    a = ap.parse_args(argv)
    runs, peers = _planned(a)
    rows: list[tuple[str, dict[str, Any]]] = []
    for pe, extra, sets in runs:
        r = _run("ptv2", task=a.task, examples=a.examples, sets=sets)
        rows.append((f"ptv2 {pe}, " + (extra or "fp32 eager") + (" (chose bf16)" if "auto" in extra and
                                                                  r["precision"] == "bf16" else ""), r))
        print(rows[-1][0], rows[-1][1], flush=True)
    for peer in peers:
        kind, _, prec = peer.partition("-")
        rows.append((f"Trainer + {'LoRA' if kind == 'lora' else 'full fine-tuning'}" + (", bf16" if prec else ""),
                     _run("trainer", task=a.task, examples=a.examples, lora=kind == "lora", bf16=prec == "bf16")))
        print(rows[-1][0], rows[-1][1], flush=True)
    base = rows[0][1]["epoch_s"]
    cmd = "python bench/train_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [f"# One training epoch on {a.task} ({a.examples} train rows, batch {BATCH}): ptv2 vs HF Trainer", "",
          f"Command: `{cmd}`; each row its own process, one after the other on the same cores.", "",
          "| run | epoch s | examples/s | epoch time / first row's | dev " + rows[0][1]["metric"] + " (1 epoch) | peak RSS MB |",
          "|---|---|---|---|---|---|"]
    for name, r in rows:
        md.append(f"| {name} | {r['epoch_s']:.1f} | {r['rows'] / r['epoch_s']:.1f} | {r['epoch_s'] / base:.2f}x | "
                  f"{r['dev']:.1f} | {r['peak_mb']:.0f} |")
    ours = [(n, r) for n, r in rows if n.startswith("ptv2")]
    peers = [(n, r) for n, r in rows if not n.startswith("ptv2")]
    if ours and peers:  # the ratios: each peer's epoch time over each ptv2 setting's
        md += ["", "Peer epoch time / ptv2 epoch time:", "",
               "| peer | " + " | ".join(n for n, _ in ours) + " |", "|---|" + "---|" * len(ours)]
        md += [f"| {n} | " + " | ".join(f"{r['epoch_s'] / o['epoch_s']:.2f}x" for _, o in ours) + " |"
               for n, r in peers]
    return write_report(a.out, md)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        sys.exit(main())
