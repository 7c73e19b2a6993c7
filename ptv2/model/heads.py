"""Plain linear heads (no verbalizer) on pooled or per-token hidden states."""
from __future__ import annotations

import torch
from torch import nn

HEAD_KIND = {
    "classification": "sequence", "pair_classification": "sequence", "regression": "sequence",
    "multiple_choice": "choice", "token_classification": "token",
}


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str, pooled: torch.Tensor | None) -> torch.Tensor:
    """hidden (B, T, h), mask (B, T) -> (B, h) by [CLS], masked mean, or the backbone's pooler."""
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if how == "pooler":
        if pooled is None:
            raise ValueError("pooling 'pooler' needs a backbone with a pooler layer; use 'cls' or 'mean'")
        return pooled
    raise ValueError(f"pooling {how!r}: expected 'cls', 'mean' or 'pooler'")


class Head(nn.Module):
    """sequence: (B, h) -> (B, n_out) [squeezed to (B,) for regression];
    token: (B, T, h) -> (B, T, n_out); choice: (B*C, h) -> (B, C)."""

    def __init__(self, hidden: int, task_type: str, n_out: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.task_type, self.kind = task_type, HEAD_KIND[task_type]
        out = 1 if self.kind == "choice" or task_type == "regression" else n_out
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor, n_choices: int = 0) -> torch.Tensor:
        y = self.linear(self.dropout(x))
        if self.kind == "choice":
            return y.view(-1, n_choices)  # (B, C)
        if self.task_type == "regression":
            return y.squeeze(-1)  # (B,)
        return y


def task_loss(task_type: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task_type == "regression":
        return nn.functional.mse_loss(logits.float(), labels.float())
    if task_type == "token_classification":
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
    return nn.functional.cross_entropy(logits.float(), labels)
