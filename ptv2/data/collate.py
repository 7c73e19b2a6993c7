"""Tokenize once, pad per batch, group batches by length.

``encode_split`` turns a normalized split into a list of feature dicts (unpadded token ids).
``Collator`` pads a list of features to the longest in the batch (dynamic padding).
``length_grouped_batches`` shuffles, then sorts within mega-batches (as HF ``group_by_length``),
which roughly halves CPU epoch time against plain shuffling here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import datasets
import torch

log = logging.getLogger(__name__)
IGNORE = -100  # label id ignored by the loss (sub-word pieces, padding)


def _warn_truncated(n: int, total: int, what: str, max_length: int) -> None:
    if n:
        log.warning("%d of %d %s longer than max_length=%d were truncated (raise backbone.max_length to keep them)",
                    n, total, what, max_length)


def encode_split(ds: datasets.Dataset, task_type: str, tokenizer: Any, max_length: int,
                 pair_encoding: str = "cross") -> list[dict[str, Any]]:
    """Normalized rows -> features with ``input_ids``, ``token_type_ids``, ``label`` (unpadded).
    ``pair_encoding`` bi: each text of a pair is its own row (features hold two rows, as multiple choice's)."""
    if task_type == "token_classification":
        return _encode_tokens(ds, tokenizer, max_length)
    if task_type == "multiple_choice":
        return _encode_choices(ds, tokenizer, max_length)
    if pair_encoding == "bi":
        return _encode_bi(ds, tokenizer, max_length)
    a, b = list(ds["text_a"]), list(ds["text_b"])
    pair = any(b)
    full = tokenizer(a, b if pair else None, truncation=False)["input_ids"]
    enc = tokenizer(a, b if pair else None, truncation="longest_first" if pair else True, max_length=max_length)
    _warn_truncated(sum(len(x) > max_length for x in full), len(full), "texts", max_length)
    types = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    return [{"input_ids": i, "token_type_ids": t, "label": y} for i, t, y in zip(enc["input_ids"], types, list(ds["label"]))]


def _encode_bi(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Each text of a pair alone, truncated on its own: features with two rows [a, b]."""
    a, b = list(ds["text_a"]), list(ds["text_b"])
    enc_a, enc_b = (tokenizer(x, truncation=True, max_length=max_length)["input_ids"] for x in (a, b))
    full = [len(x) for x in tokenizer(a + b, truncation=False)["input_ids"]]
    _warn_truncated(sum(n > max_length for n in full), len(full), "texts", max_length)
    return [{"input_ids": [ia, ib], "token_type_ids": [[0] * len(ia), [0] * len(ib)], "label": y}
            for ia, ib, y in zip(enc_a, enc_b, list(ds["label"]))]


def _encode_choices(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    feats = []
    for ctx, choices, y in zip(list(ds["text_a"]), list(ds["choices"]), list(ds["label"])):
        enc = tokenizer([ctx] * len(choices), choices, truncation="longest_first", max_length=max_length)
        types = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
        feats.append({"input_ids": enc["input_ids"], "token_type_ids": types, "label": y})
    return feats


def _encode_tokens(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Label the first sub-word of each word; the rest get IGNORE. ``n_words`` lets evaluation
    pad predictions for words cut off by truncation."""
    enc = tokenizer(list(ds["tokens"]), is_split_into_words=True, truncation=True, max_length=max_length)
    feats, n_trunc = [], 0
    for i, tags in enumerate(list(ds["tags"])):
        word_ids = enc.word_ids(i)
        labels, prev = [], None
        for w in word_ids:
            labels.append(IGNORE if w is None or w == prev else tags[w])
            prev = w
        kept = len({w for w in word_ids if w is not None})
        n_trunc += kept < len(tags)
        types = enc["token_type_ids"][i] if "token_type_ids" in enc else [0] * len(word_ids)
        feats.append({"input_ids": enc["input_ids"][i], "token_type_ids": types, "label": labels,
                      "n_words": len(tags)})
    _warn_truncated(n_trunc, len(feats), "sentences", max_length)
    return feats


def feature_rows(f: dict[str, Any]) -> int:
    """Encoder rows in a feature: 1, or its choices / its two bi-encoded texts."""
    ids = f["input_ids"]
    return len(ids) if ids and isinstance(ids[0], list) else 1


def feature_length(f: dict[str, Any]) -> int:
    ids = f["input_ids"]
    return max(len(x) for x in ids) if ids and isinstance(ids[0], list) else len(ids)


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows of different lengths -> (ids, attention mask), both (len(rows), longest), right-padded."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, : len(r)] = 1
    return ids, mask


@dataclass
class Collator:
    """Pads to the batch's longest row. Output shapes: ``input_ids`` (B, T) — or (B*C, T) for
    multiple choice, with ``n_choices`` = C, and (2B, T) for bi-encoded pairs (rows 2i, 2i+1) —
    ``labels`` (B,) or (B, T) for token tasks."""

    pad_id: int
    task_type: str

    def __call__(self, feats: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if feature_rows(feats[0]) > 1:  # multiple choice, bi-encoded pairs: each feature holds several rows
            n_choices = len(feats[0]["input_ids"]) if self.task_type == "multiple_choice" else 0
            rows = [{"input_ids": i, "token_type_ids": t} for f in feats
                    for i, t in zip(f["input_ids"], f["token_type_ids"])]
        else:
            n_choices, rows = 0, feats
        ids, mask = pad_rows([r["input_ids"] for r in rows], self.pad_id)
        types, _ = pad_rows([r["token_type_ids"] for r in rows], 0)
        batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        if self.task_type == "token_classification":
            labels = torch.full(ids.shape, IGNORE, dtype=torch.long)
            for k, f in enumerate(feats):
                labels[k, : len(f["label"])] = torch.tensor(f["label"])
            batch["labels"] = labels
        elif self.task_type == "regression":
            batch["labels"] = torch.tensor([f["label"] for f in feats], dtype=torch.float)
        else:
            batch["labels"] = torch.tensor([f["label"] for f in feats], dtype=torch.long)
        if n_choices:
            batch["n_choices"] = torch.tensor(n_choices)
        return batch


def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator,
                           group: bool = True, mega: int = 50) -> list[list[int]]:
    """Shuffle indices; if ``group``, sort by length inside mega-batches of ``mega * batch_size``;
    cut into batches; shuffle batch order. Deterministic given the generator state."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if group:
        size = mega * batch_size
        order = [i for s in range(0, len(order), size)
                 for i in sorted(order[s:s + size], key=lambda j: -lengths[j])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if group:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[p] for p in perm]
    return batches


def eval_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Sorted by length for speed; callers restore order by index."""
    order = sorted(range(len(lengths)), key=lambda j: -lengths[j])
    for s in range(0, len(order), batch_size):
        yield order[s:s + batch_size]
