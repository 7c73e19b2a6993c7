"""A task's split encoded for the model (``Split``): features, the rows they came from, labels, metrics.
``encode`` is the one way a split becomes one, for training, evaluation and inference alike."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ptv2.data.collate import encode_split, feature_length
from ptv2.data.tasks import TaskData
from ptv2.errors import DataError


@dataclass
class Split:
    """An encoded split of one task: features (for the model), rows (for gold tags), label names."""

    feats: list[dict[str, Any]]
    ds: Any
    labels: list[str]
    metrics: list[str]

    @property
    def lengths(self) -> list[int]:
        return [feature_length(f) for f in self.feats]


def encode(td: TaskData, split: str, tokenizer: Any, max_length: int, pair_encoding: str) -> Split:
    ds = td.split(split)
    if len(ds) == 0:
        raise DataError(f"task {td.name!r}: split {split!r} is empty")
    return Split(encode_split(ds, td.spec.type, tokenizer, max_length, pair_encoding), ds, td.labels,
                 list(td.spec.metrics))
