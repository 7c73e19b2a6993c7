"""Small task files and configs for fast tests (written by the tests, no shared data)."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

POS, NEG = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]


def write_sentiment_tsv(path: Path, n: int, seed: int = 0) -> None:
    """A separable task: label 1 iff the sentence has a positive word."""
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        y = rng.randint(0, 1)
        words = [rng.choice(["the", "a"]), rng.choice(["movie", "film", "plot"]), rng.choice(["is", "was"]),
                 rng.choice(POS if y else NEG)]
        rows.append(" ".join(words) + f"\t{y}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def write_all_formats(root: Path) -> None:
    """One small file per task type/format under ``root``."""
    write_sentiment_tsv(root / "sent/train.tsv", 200, 0)
    write_sentiment_tsv(root / "sent/dev.tsv", 40, 1)
    pairs = [{"premise": "the cat sat on the mat", "hypothesis": h, "label": l, "idx": i}
             for i, (h, l) in enumerate([("the cat sat", "yes"), ("the dog sat", "no")] * 10)]
    (root / "pair").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        (root / f"pair/{split}.jsonl").write_text("\n".join(json.dumps(r) for r in pairs) + "\n")
    # regression: no header, extra trailing column on some rows, a bare quote (STS-B quirks)
    lines = [f"g\tf\t2012\t{i:04d}\t{i % 5}.0\tthe \"cat\" sat\tthe dog sat" + ("\textra\tcols" if i % 3 == 0 else "")
             for i in range(30)]
    (root / "reg").mkdir(parents=True, exist_ok=True)
    (root / "reg/train.tsv").write_text("\n".join(lines) + "\n")
    copa = [{"premise": "the man was wet", "choice1": "rain", "choice2": "sun", "question": "cause", "label": 0,
             "idx": i} for i in range(20)]
    (root / "mc").mkdir(parents=True, exist_ok=True)
    (root / "mc/train.jsonl").write_text("\n".join(json.dumps(r) for r in copa) + "\n")
    conll = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(15):
        conll += ["john NNP B-NP B-PER", "lives VBZ B-VP O", "in IN B-PP O", "paris NNP B-NP B-LOC", ""]
    (root / "ner").mkdir(parents=True, exist_ok=True)
    (root / "ner/train.txt").write_text("\n".join(conll) + "\n")


TASKS: dict[str, dict[str, Any]] = {
    "sent": {"type": "classification", "format": "tsv", "files": {"train": "sent/train.tsv", "dev": "sent/dev.tsv"},
             "text_a": "{sentence}", "labels": ["0", "1"], "metrics": ["accuracy"]},
    "pair": {"type": "pair_classification", "format": "jsonl", "files": {"train": "pair/train.jsonl", "dev": "pair/dev.jsonl"},
             "text_a": "{premise}", "text_b": "{hypothesis}", "labels": ["no", "yes"], "metrics": ["accuracy", "f1"]},
    "reg": {"type": "regression", "format": "tsv", "header": False,
            "columns": ["genre", "file", "year", "id", "score", "s1", "s2"], "files": {"train": "reg/train.tsv"},
            "text_a": "{s1}", "text_b": "{s2}", "label": "score", "metrics": ["pearson", "spearman"]},
    "mc": {"type": "multiple_choice", "format": "jsonl", "files": {"train": "mc/train.jsonl"},
           "text_a": "{premise} What was the {question}?", "choices": ["{choice1}", "{choice2}"], "metrics": ["accuracy"]},
    "ner": {"type": "token_classification", "format": "conll", "files": {"train": "ner/train.txt"}, "metrics": ["entity_f1"]},
}


PROJECT = Path(__file__).resolve().parents[1]


def repo_params() -> dict[str, Any]:
    """The project's params.yaml as a dict: the one source of values, tests included."""
    from ptv2.config import read_yaml

    return read_yaml((PROJECT / "params.yaml").read_text())


def merged(over: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (default: the repo's params.yaml) with each section of ``over`` updated key by key
    (one level deep: a key given in ``over`` replaces the base's value whole)."""
    out = dict(base if base is not None else repo_params())
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_params(root: Path, backbone: Path, **train: Any) -> dict[str, Any]:
    """A params.yaml-shaped dict for the tiny backbone and the files of ``write_all_formats``."""
    return merged({"data_root": str(root), "seed": 0,
                   "backbone": {"name": str(backbone), "pooling": "mean", "max_length": 32,
                                "pair_encoding": "cross"},
                   "prompt": {"length": 4, "dropout": 0.0},
                   "train": {"epochs": {"ptv2": 2, "finetune": 2}, "batch_size": 8, "eval_batch_size": 16,
                             "val_fraction": 0.2, "patience": 0, "device": "cpu", "precision": "fp32",
                             **train},
                   "run": {"task": "sent", "out_dir": str(root / "outputs")},
                   "pretrain": {"tasks": ["sent", "pair"], "weights": {}},
                   # its outputs under root: a compare that ran in a test wrote the repo's reports/baselines.md
                   "compare": {"tasks": ["sent"], "one_seed": [], "overrides": [],
                               "out": str(root / "reports/compare.md"), "work": str(root / "outputs/compare")},
                   "export": {"out_dir": str(root / "outputs/bundle"), "checks_dir": str(root / "outputs/checks"),
                              "frozen_dir": str(root / "outputs/bundle_frozen")},
                   "adapt": {"tasks": ["sent"], "baseline_dir": str(root / "outputs/baseline")},
                   "tasks": TASKS})


def train_task(cfg: Any, task: str, out: Path, **kw: Any):
    """Single-task training through the one driver."""
    from ptv2.training.driver import train

    return train(cfg, [task], out, **kw)


def head(labels: list[str] | None = None, type: str = "classification", text_b: bool = False,
         pair_encoding: str = "cross"):
    """A HeadSpec for tests (labels '0'/'1' by default)."""
    from ptv2.model.spec import HeadSpec

    return HeadSpec(type=type, labels=["0", "1"] if labels is None else labels, metrics=["accuracy"], text_b=text_b,
                    pair_encoding=pair_encoding)


def prompted(backbone: Any, tasks: dict[str, tuple[str, int]], **spec: Any):
    """A PromptedModel on ``backbone`` with the repo's settings, ``spec`` fields overridden (prompt
    settings by their params.yaml names, ``prompt_length`` / ``prompt_dropout`` for length / dropout);
    ``tasks``: name -> (task type, number of outputs)."""
    import dataclasses

    from ptv2.config import config_from_dict
    from ptv2.model.prompted import MethodInputs, PromptedModel
    from ptv2.model.spec import HeadSpec
    from ptv2.training.build import spec_from_config

    heads = {n: HeadSpec(type=t, labels=[str(i) for i in range(k)] if k > 1 else [], metrics=["accuracy"],
                         text_b=False, pair_encoding="cross") for n, (t, k) in tasks.items()}
    base = spec_from_config(config_from_dict(repo_params()), heads)
    names = {f.name for f in dataclasses.fields(base.prompt)}
    prompt = {k.removeprefix("prompt_"): spec.pop(k) for k in list(spec) if k.removeprefix("prompt_") in names}
    spec["prompt"] = dataclasses.replace(base.prompt, **prompt)
    return PromptedModel(backbone, dataclasses.replace(base, **spec), MethodInputs(seed=0, total_steps=10))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    from pathlib import Path

    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, pp in parent.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def kill_after_checkpoint(proc: Any, state: Path, epochs: int = 1, timeout: float = 300) -> int:
    """SIGKILL ``proc`` and every process below it once ``state`` (a checkpoint's state.json) records
    ``epochs`` finished epochs; returns the epochs the checkpoint holds."""
    import json
    import os
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["state"]["epoch"] >= epochs:
            break
        time.sleep(0.05)
    for pid in [proc.pid, *descendants(proc.pid)]:  # torchrun's workers may sit in sessions of their own
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    return json.loads(state.read_text())["state"]["epoch"]


def killed_by_sigkill(*args: Any) -> None:
    """A run's process body that dies as the out-of-memory killer ends it (spawned: importable by reference)."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
