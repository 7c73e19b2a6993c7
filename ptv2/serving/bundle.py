"""Serve a bundle with onnxruntime + tokenizers + numpy only (no torch at serving time).

One encoder session serves every task: each row's task prompt is gathered into the ``prefix``
input, so a batch may mix tasks; heads (tiny linear layers) run in numpy.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptv2.prefix import BATCH_AXIS
from ptv2.host import intra_op_threads, saturating_int8
from ptv2.serving.manifest import BundleError, check_task, task_names, verify
from ptv2.serving.requests import UNBOUNDED, Limits, check_deadline, check_rows, expand, serving_settings
from ptv2.spans import entities

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class TaskHead:
    spec: dict[str, Any]
    prompt: np.ndarray | None  # (L, 2, H, P, D); None when the encoder has no prefix input
    weight: np.ndarray  # (n_out, h)
    bias: np.ndarray  # (n_out,)
    int8: bool  # the int8 encoder may serve this task (``int8_serves``)


class Bundle:
    @classmethod
    def from_serving(cls, path: str | Path, serving: Any, int8: bool | None = None, bounded: bool = True) -> "Bundle":
        """The bundle as a server opens it with ``serving`` (see ``serving_settings``): the one way every
        caller (CLI, registered model, publishing) applies the serving settings; ``int8`` overrides the
        settings' choice of encoder; ``bounded=False`` drops the request limits (checks over a dev set)."""
        s = serving_settings(serving)
        return cls(path, int8=bool(s["int8"]) if int8 is None else int8, spin=bool(s["spinning"]),
                   fallback_margin=float(s["int8_fallback_margin"]), int8_min_agreement=float(s["int8_min_agreement"]),
                   limits=Limits(**s["limits"]) if s["limits"] and bounded else None)

    def __init__(self, path: str | Path, int8: bool = False, limits: Limits | None = None, spin: bool = False,
                 fallback_margin: float = 0.0, int8_min_agreement: float = 0.0) -> None:
        """``int8``: serve the int8 encoder, except for tasks whose recorded export checks fail
        ``int8_serves(spec, int8_min_agreement)``: their rows run on the fp32 encoder.
        ``spin``: onnxruntime's worker threads spin between ops (lower latency when the process has the
        cores to itself, as a server does; off where it shares them with torch, as in the export checks).
        ``fallback_margin`` (int8 only): a classification row whose top-two int8 probabilities are closer
        than this is answered by the fp32 encoder instead, so int8 does not flip near-ties."""
        import onnxruntime as ort
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.path = Path(path)
        manifest = verify(self.path)
        so = ort.SessionOptions()
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # Keep onnxruntime's arena (its default) and turn off per-shape memory patterns: micro-batches bound
        # what one run needs, so the arena stops growing at the largest micro-batch. With the arena off, every
        # run went through malloc: 2,000 RTE pairs (int8, micro-batch 32) took 8.7 s and peaked at 969 MB,
        # against 6.9 s and 503 MB with it (bench/serve_load.py, reports/bench_serve.md).
        so.enable_mem_pattern = False
        if int8 and saturating_int8():  # measured on a VNNI CPU: the same scores, 1.6x the time, so only here
            so.add_session_config_entry("session.x64quantprecision", "1")
        if threads := intra_op_threads():  # a CPU quota onnxruntime does not see: its pool, sized to the cores,
            so.intra_op_num_threads = threads  # would be throttled
        self.limits = limits or UNBOUNDED
        name = "encoder.int8.onnx" if int8 else "encoder.onnx"
        if not (self.path / name).is_file():
            fix = "it was exported with export.int8: false; drop --int8 or export again" if int8 else "export it again"
            raise BundleError(f"{self.path}: no {name} in this bundle; {fix}")
        def session(file: str) -> Any:
            return ort.InferenceSession(str(self.path / file), so, providers=["CPUExecutionProvider"])

        self.session = session(name)
        self.int8, self.margin = int8, fallback_margin if int8 else 0.0
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer" / "tokenizer.json"))
        self.tokenizer.no_padding()  # saved tokenizers may pad to a fixed length: we pad per micro-batch
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        width = self.session.get_outputs()[0].shape[-1]
        self.prefixed = "prefix" in inputs
        self.tasks: dict[str, TaskHead] = {}
        for name in task_names(manifest):  # only what the manifest lists, each checked against the graph
            spec_file = self.path / "tasks" / f"{name}.json"
            try:
                spec = json.loads(spec_file.read_text(encoding="utf-8"))
                t = load_file(str(spec_file.with_suffix(".safetensors")))
            except (ValueError, UnicodeDecodeError, OSError) as e:
                raise BundleError(f"{spec_file}: unreadable ({e}); re-export the bundle") from None
            check_task(self.path, name, spec, t, inputs.get("prefix"), width if isinstance(width, int) else None)
            self.tasks[name] = TaskHead(spec, t.get("prompt"), t["head_weight"], t["head_bias"],
                                        int8_serves(spec, int8_min_agreement))
        self.specs = {t: h.spec for t, h in self.tasks.items()}
        # the fp32 encoder next to the int8 one: for near-ties and for the tasks int8 may not serve
        need_fp32 = int8 and (self.margin > 0 or not all(h.int8 for h in self.tasks.values()))
        self.fp32 = session("encoder.onnx") if need_fp32 else None
        # after a large request, its last run hands the arena's unused memory back (2,000 pairs: 441 vs 771 MB)
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def _encode(self, rows: list[dict[str, Any]]) -> tuple[dict[str, np.ndarray], list[Any]]:
        """Encoder rows ({"task", "text", ["text_pair"]}) -> padded (B, T) feeds and the encodings."""
        max_len = max(self.tasks[r["task"]].spec["max_length"] for r in rows)
        self.tokenizer.enable_truncation(max_len)
        pad_id = self.tokenizer.token_to_id("[PAD]") or self.tokenizer.token_to_id("<pad>") or 0
        encs = []
        for r in rows:
            if self.tasks[r["task"]].spec["type"] == "token_classification":
                encs.append(self.tokenizer.encode(r["text"].split(), is_pretokenized=True))
            elif r.get("text_pair"):  # pair tasks, and each (context, choice) of a multiple-choice row
                encs.append(self.tokenizer.encode(r["text"], r["text_pair"]))
            else:
                encs.append(self.tokenizer.encode(r["text"]))
        T = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), T), pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), T), dtype=np.int64)
        types = np.zeros((len(encs), T), dtype=np.int64)
        for i, e in enumerate(encs):
            n = int(np.sum(e.attention_mask))
            ids[i, :n], types[i, :n], mask[i, :n] = e.ids[:n], e.type_ids[:n], 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, encs

    def hidden(self, feed: dict[str, np.ndarray], tasks: list[str], session: Any = None,
               release: bool = False) -> np.ndarray:
        """(B, T, h) from one run of ``session`` (default: the bundle's); row i uses task i's prompt.
        ``release``: shrink the session's arena after the run (the last micro-batch of a large request)."""
        session = session or self.session
        opts = self._shrink if release else None
        if not self.prefixed:  # merged adapters / fine-tuned / an input prompt: the graph is the task
            return session.run(["hidden"], feed, opts)[0]
        prefix = np.stack([self.tasks[t].prompt for t in tasks], axis=BATCH_AXIS)  # (L, 2, B, H, P, D)
        return session.run(["hidden"], {**feed, "prefix": prefix.astype(np.float32, copy=False)}, opts)[0]

    def pool(self, hidden: np.ndarray, mask: np.ndarray, task: str) -> np.ndarray:
        """One encoder row's (T, h) hidden states -> what its head reads: (T, h) for token tasks, else (h,)."""
        spec = self.tasks[task].spec
        if spec["type"] == "token_classification":
            return hidden
        if spec["pooling"] == "cls":
            x = hidden[0]
        else:
            m = mask[:, None].astype(hidden.dtype)
            x = (hidden * m).sum(0) / max(m.sum(), 1.0)
        if spec.get("normalize", False):  # as ptv2.model.heads.pool: torch's normalize, eps 1e-12
            x = x / max(float(np.linalg.norm(x)), 1e-12)
        return x

    def head(self, task: str, vectors: list[np.ndarray]) -> np.ndarray:
        """The task's head on its encoder rows' pooled vectors: one row, or the two texts of a bi-encoded
        pair ([u, v, |u-v|, u*v], or cos(u, v) for similarity: ``ptv2.model.heads``)."""
        head = self.tasks[task]
        if len(vectors) == 2:
            u, v = vectors
            if head.spec["type"] == "regression":
                x = np.array([float(u @ v) / max(float(np.linalg.norm(u) * np.linalg.norm(v)), 1e-8)], np.float32)
            else:
                x = np.concatenate([u, v, np.abs(u - v), u * v])
        else:
            x = vectors[0]
        return x @ head.weight.T + head.bias

    def check(self, rows: Any, names: list[str] | None = None) -> None:
        """Refuse a request that is too large or has a row this bundle cannot answer, naming the row (``names[i]``,
        default ``row <i>``) and why."""
        check_rows(rows, self.specs, self.limits, names, self._reads)

    def _reads(self, text: str) -> bool:
        """Whether the encoder sees any token of ``text`` (a text with a letter or digit always has one)."""
        return any(c.isalnum() for c in text) or bool(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def predict(self, rows: list[dict[str, Any]], deadline: float | None = None) -> list[dict[str, Any]]:
        """rows: {"task", "text", ["text_pair" | "choices"]} -> {"label", "score"} / {"score"} / {"entities"} /
        {"label", "choice", "score"}, in request order. Rows are checked first, then sorted by length and run
        in micro-batches, each padded to its longest row (a batch may mix tasks with prompts of one length).
        Past ``deadline`` (a ``time.monotonic()`` value) the remaining micro-batches are dropped: ``Abandoned``."""
        self.check(rows)
        flat, where = expand(rows, self.specs)
        quant = [i for i, r in enumerate(flat) if not self.int8 or self.tasks[r["task"]].int8]
        outs: list[Any] = [None] * len(flat)
        # a large request gives its memory back: not every request, as that cost 17-27 % of the rows/s
        release = len(flat) > self.limits.release_rows
        self._run_into(outs, flat, quant, self.session, deadline, release)
        if self.int8:  # fp32 rows: tasks int8 may not serve, then int8 near-ties
            self._run_into(outs, flat, sorted(set(range(len(flat))) - set(quant)), self.fp32, deadline, release)
            if self.margin > 0:
                ties = [i for i in quant if self._near_tie(flat[i]["task"], outs[i][0])]
                self._run_into(outs, flat, ties, self.fp32, deadline, release)
        answers = [self._decode(r, [outs[j] for j in idx]) for r, idx in zip(rows, where)]
        if release:  # hand freed heap pages back to the OS
            del outs
            _trim_heap()
        return answers

    def _run_into(self, outs: list[Any], flat: list[dict[str, Any]], idx: list[int], session: Any,
                  deadline: float | None = None, release: bool = False) -> None:
        """Run encoder rows ``flat[i]`` for i in ``idx`` on ``session``; results into ``outs[i]``."""
        for i, o in zip(idx, self._run([flat[i] for i in idx], session, deadline, release) if idx else []):
            outs[i] = o

    def _near_tie(self, task: str, vec: np.ndarray) -> bool:
        """A sequence-classification row whose top-two probabilities differ by less than the margin (bi-encoded
        pairs: their two rows' answer is one, so neither row alone is a near-tie)."""
        spec = self.tasks[task].spec
        if spec["type"] not in ("classification", "pair_classification") or bi(spec):
            return False
        lg = self.head(task, [vec])
        if lg.size < 2:
            return False
        top = np.sort(softmax(lg))
        return bool(top[-1] - top[-2] < self.margin)

    def _run(self, rows: list[dict[str, Any]], session: Any = None, deadline: float | None = None,
             release: bool = False) -> list[tuple[np.ndarray, Any]]:
        """Encoder rows -> (pooled vector (h,) or token states (T, h), encoding) per row, run ``micro_batch``
        rows at a time in length order (``deadline``: checked before each micro-batch; ``release``: the last
        one shrinks the session's arena)."""
        order = sorted(range(len(rows)), key=lambda i: (self._prompt_len(rows[i]["task"]), self._size(rows[i])))
        out: list[Any] = [None] * len(rows)
        step = self.limits.micro_batch
        for s in range(0, len(order), step):
            check_deadline(deadline, s, len(order))
            by_plen: dict[int, list[int]] = {}
            for i in order[s:s + step]:  # a chunk may straddle two prompt lengths: one session run each
                by_plen.setdefault(self._prompt_len(rows[i]["task"]), []).append(i)
            for k, part in enumerate(by_plen.values()):
                sub = [rows[i] for i in part]
                feed, encs = self._encode(sub)
                last = release and s + step >= len(order) and k == len(by_plen) - 1
                hid = self.hidden(feed, [r["task"] for r in sub], session, release=last)
                for k, (i, r) in enumerate(zip(part, sub)):
                    out[i] = (self.pool(hid[k], feed["attention_mask"][k], r["task"]), encs[k])
        return out

    def _prompt_len(self, task: str) -> int:
        prompt = self.tasks[task].prompt
        return 0 if prompt is None else prompt.shape[3]

    @staticmethod
    def _size(row: dict[str, Any]) -> int:
        return len(row["text"]) + len(row.get("text_pair") or "")

    def _decode(self, row: dict[str, Any], outs: list[tuple[np.ndarray, Any]]) -> dict[str, Any]:
        task = row["task"]
        spec = self.tasks[task].spec
        enc = outs[0][1]
        if spec["type"] == "multiple_choice":  # one score per (context, choice), softmax over the choices
            lg = np.array([float(self.head(task, [x]).reshape(-1)[0]) for x, _ in outs])
        else:
            lg = self.head(task, [x for x, _ in outs])
        if spec["type"] == "regression":
            return {"task": task, "score": float(lg.reshape(-1)[0])}
        if spec["type"] == "token_classification":
            words = row["text"].split()
            tags, seen = ["O"] * len(words), set()
            for j, w in enumerate(enc.word_ids):
                if w is not None and w not in seen:
                    seen.add(w)
                    tags[w] = spec["labels"][int(lg[j].argmax())]
            return {"task": task, "tokens": words, "tags": tags, "entities": entities(words, tags)}
        p = softmax(lg)
        k = int(p.argmax())
        if spec["type"] == "multiple_choice":
            return {"task": task, "label": row["choices"][k], "choice": k, "score": float(p[k])}
        return {"task": task, "label": spec["labels"][k], "score": float(p[k])}


def _trim_heap() -> None:
    """glibc keeps freed memory; ``malloc_trim`` returns it (reports/bench_limits.md). Elsewhere: nothing."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def bi(spec: dict[str, Any]) -> bool:
    """A task whose pairs are encoded one text per encoder row (``pair_encoding: bi``)."""
    return spec.get("pair_encoding", "cross") == "bi"


def int8_serves(checks: dict[str, Any], min_agreement: float) -> bool:
    """May the int8 encoder serve a task, given its export checks (a task spec, or a row of the export
    report): int8 was not significantly worse than fp32 on dev and agreed with it on at least
    ``min_agreement`` of the examples. Without recorded checks (an export with no int8 checks): yes."""
    return bool(checks.get("int8_not_worse", True)) and float(checks.get("int8_agreement", 1.0)) >= min_agreement


def softmax(lg: np.ndarray) -> np.ndarray:
    """(n,) logits -> (n,) probabilities."""
    p = np.exp(lg - lg.max())
    return p / p.sum()
