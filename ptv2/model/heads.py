"""Plain linear heads (no verbalizer) on pooled or per-token hidden states, and the task losses.

Pair tasks are read one of two ways (``pair_encoding``):
- ``cross``: both texts in one encoder row ([CLS] a [SEP] b [SEP]); the head reads the pooled row.
- ``bi``: each text in its own row through the same prompted encoder (rows 2i, 2i+1 of the batch); a
  classification head reads ``[u, v, |u-v|, u*v]`` (Sentence-BERT), a regression head ``cos(u, v)``
  through a fitted affine map (its weights take no gradient: the encoder learns a ranking with CoSENT,
  the map turns cosines into label units).
"""
from __future__ import annotations

import torch
from torch import nn

from ptv2.errors import ConfigError

HEAD_KIND = {
    "classification": "sequence", "pair_classification": "sequence", "regression": "sequence",
    "multiple_choice": "choice", "token_classification": "token",
}
PAIR_ENCODINGS = ("cross", "bi")


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str, pooled: torch.Tensor | None,
         normalize: bool = False) -> torch.Tensor:
    """hidden (B, T, h), mask (B, T) -> (B, h) by [CLS], masked mean, or the backbone's pooler; with
    ``normalize`` each row scaled to unit L2 norm (as a sentence-transformers model's Normalize module)."""
    if how == "cls":
        x = hidden[:, 0]
    elif how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        x = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    elif how == "pooler":
        if pooled is None:  # ELECTRA's, or a checkpoint without pooler weights (load_backbone drops its random one)
            raise ConfigError("backbone.pooling = 'pooler' needs a backbone with a trained pooler layer, and this "
                              "one has none (or its weights file lacks it): set backbone.pooling to 'cls' or 'mean'")
        x = pooled
    else:
        raise ValueError(f"pooling {how!r}: expected 'cls', 'mean' or 'pooler'")
    return nn.functional.normalize(x, dim=-1) if normalize else x


def pair_features(x: torch.Tensor, regression: bool) -> torch.Tensor:
    """x (2B, h), rows 2i / 2i+1 = the two texts of pair i -> (B, 4h) [u, v, |u-v|, u*v], or (B, 1) cos(u, v)."""
    u, v = x[0::2], x[1::2]
    if regression:
        return nn.functional.cosine_similarity(u, v, dim=-1).unsqueeze(-1)
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


class Head(nn.Module):
    """sequence: (B, h) -> (B, n_out) [squeezed to (B,) for regression]; token: (B, T, h) -> (B, T, n_out);
    choice: (B*C, h) -> (B, C); bi pair: (2B, h) -> (B, n_out) or (B,)."""

    def __init__(self, hidden: int, task_type: str, n_out: int, dropout: float, pair_encoding: str) -> None:
        super().__init__()
        if pair_encoding not in PAIR_ENCODINGS:
            raise ValueError(f"pair_encoding {pair_encoding!r}: expected one of {PAIR_ENCODINGS}")
        self.task_type, self.kind = task_type, HEAD_KIND[task_type]
        self.bi = pair_encoding == "bi"
        if self.bi and self.kind != "sequence":
            raise ValueError(f"pair_encoding 'bi' is for pair classification and regression, not {task_type!r}")
        regression = task_type == "regression"
        out = 1 if self.kind == "choice" or regression else n_out
        width = (1 if regression else 4 * hidden) if self.bi else hidden
        self.dropout = nn.Dropout(0.0 if self.bi and regression else dropout)
        self.linear = nn.Linear(width, out)
        if self.bi and regression:  # cosine -> label units: set by the fitted head, no gradient
            nn.init.ones_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
            self.linear.requires_grad_(False)

    @property
    def mse(self) -> bool:
        """Whether this head trains by MSE in label units (regression, not a bi head's CoSENT)."""
        return self.task_type == "regression" and not self.bi

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the linear layer reads: x itself, or the pair features of a bi head ((2B, h) -> (B, d))."""
        return pair_features(x, self.task_type == "regression") if self.bi else x

    def forward(self, x: torch.Tensor, n_choices: int = 0) -> torch.Tensor:
        y = self.linear(self.dropout(self.features(x)))
        if self.kind == "choice":
            return y.view(-1, n_choices)  # (B, C)
        if self.task_type == "regression":
            return y.squeeze(-1)  # (B,)
        return y

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, cosent_scale: float) -> torch.Tensor:
        """The task's loss; a bi regression head trains the cosine's ranking (CoSENT) through its fixed map: the
        cosine itself, or its negative where the labels fall as it rises (a distance): the fitted map's sign."""
        if self.bi and self.task_type == "regression":
            w, b = self.linear.weight.reshape(()), self.linear.bias.reshape(())
            return cosent((logits.float() - b) / w.abs(), labels.float(), cosent_scale)
        return task_loss(self.task_type, logits, labels)


def cosent(scores: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """CoSENT (Su 2022, as sentence-transformers' CoSENTLoss): log(1 + sum over pairs with
    labels_i > labels_j of exp(scale * (s_j - s_i))). scores, labels (B,)."""
    diff = scale * (scores[None, :] - scores[:, None])  # [i, j] = s_j - s_i
    diff = diff - (1 - (labels[:, None] > labels[None, :]).to(diff.dtype)) * 1e12
    return torch.logsumexp(torch.cat([torch.zeros(1, device=diff.device, dtype=diff.dtype), diff.flatten()]), 0)


def task_loss(task_type: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task_type == "regression":
        return nn.functional.mse_loss(logits.float(), labels.float())
    if task_type == "token_classification":
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
    return nn.functional.cross_entropy(logits.float(), labels)
