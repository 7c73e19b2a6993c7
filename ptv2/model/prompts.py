"""Deep prompts (P-Tuning v2): P trainable key/value vectors per layer, per head.

Parameters are stored flat, (P, L*2*H*D) like P-Tuning v2's prefix encoder; optionally produced
by Prefix-Tuning's MLP reparameterization from (P, hidden) embeddings.

``TaskFactors`` (multi-task pretraining, optional) gives each task a low-rank multiplicative
factor on the shared prompt, as Multitask Prompt Tuning (Wang et al. 2023) does for input
prompts, here over the deep prompt: prompt_t = shared ∘ (U_t V_t), U_t (P, r), V_t (r, L*2*H*D).
"""
from __future__ import annotations

import torch
from torch import nn

from ptv2.prefix import BATCH_AXIS, flat_layout, task_layout


class DeepPrompt(nn.Module):
    """``forward(batch)`` -> list over layers of (key, value), each (B, heads, P, head_dim)."""

    def __init__(self, n_layers: int, n_heads: int, head_dim: int, length: int,
                 reparam: bool, reparam_hidden: int, dropout: float,
                 init_std: float = 0.02) -> None:
        super().__init__()
        self.n_layers, self.n_heads, self.head_dim, self.length = n_layers, n_heads, head_dim, length
        width = n_layers * 2 * n_heads * head_dim
        self.reparam = reparam
        if reparam:
            hidden = n_heads * head_dim
            self.embedding = nn.Parameter(torch.randn(length, hidden) * init_std)  # (P, hidden)
            self.mlp = nn.Sequential(nn.Linear(hidden, reparam_hidden), nn.Tanh(), nn.Linear(reparam_hidden, width))
        else:
            self.prefix = nn.Parameter(torch.randn(length, width) * init_std)  # (P, L*2*H*D)
        self.dropout = nn.Dropout(dropout)

    @torch.no_grad()
    def start_from(self, kv: list[tuple[torch.Tensor, torch.Tensor]], positions: list[int], generator: torch.Generator,
                   noise_std: float = 0.02) -> None:
        """Start as the keys/values real tokens get at each layer: ``kv`` per layer (K, V), each (1, H, T, D);
        prompt slot p copies token ``positions[p % len(positions)]``, plus N(0, noise_std) noise so repeated
        slots do not stay identical (they would get identical gradients)."""
        P = self.length
        pos = torch.tensor([positions[p % len(positions)] for p in range(P)])
        x = torch.stack([torch.stack([k[0][:, pos], v[0][:, pos]]) for k, v in kv])  # (L, 2, H, P, D)
        self._start(x, generator, noise_std)

    @torch.no_grad()
    def start_quiet(self, query_means: torch.Tensor, margin: float, generator: torch.Generator,
                    noise_std: float = 0.02) -> None:
        """Start as (almost) no prompt at all: at each layer and head the keys point against the mean query
        (query_means (L, H, D), ``inject.query_means``) so that the mean query scores them -``margin``, and
        the values are 0, plus N(0, noise_std) noise. The frozen backbone's features are kept at step 0
        (pooled-embedding cosine to the unprompted model 0.999 on CB texts at margin 5, vs 0.985 for N(0, 0.02))."""
        L, H, D = query_means.shape
        k = -margin * D ** 0.5 * query_means / (query_means * query_means).sum(-1, keepdim=True)  # (L, H, D)
        x = torch.zeros(L, 2, H, self.length, D)
        x[:, 0] = k.unsqueeze(2)  # keys; values stay 0
        self._start(x, generator, noise_std)

    def _start(self, x: torch.Tensor, generator: torch.Generator, noise_std: float) -> None:
        """The prompt becomes ``x`` (L, 2, H, P, D) plus N(0, noise_std) noise, in the flat layout forward() reads."""
        flat = flat_layout(x)  # (P, L*2*H*D)
        self.prefix.copy_(flat + torch.randn(flat.shape, generator=generator) * noise_std)

    def flat(self) -> torch.Tensor:
        """(P, L*2*H*D): the prompt as plain prefixes (folds the MLP when reparameterized)."""
        return self.mlp(self.embedding) if self.reparam else self.prefix

    def forward(self, batch_size: int, scale: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``scale``: an optional (P, L*2*H*D) elementwise factor (a task's, see TaskFactors)."""
        P, L, H, D = self.length, self.n_layers, self.n_heads, self.head_dim
        flat = self.flat() if scale is None else self.flat() * scale
        x = self.dropout(flat)  # (P, L*2*H*D)
        x = task_layout(x, L, H, D)  # (L, 2, H, P, D)
        x = x.unsqueeze(BATCH_AXIS).expand(L, 2, batch_size, H, P, D)  # (L, 2, B, H, P, D)
        return [(x[layer, 0], x[layer, 1]) for layer in range(L)]


class TaskFactors(nn.Module):
    """Per-task rank-r factors W_t = U_t V_t (P, width), initialised to all ones (W_t = 1: every task
    starts from the shared prompt itself)."""

    def __init__(self, tasks: list[str], length: int, width: int, rank: int) -> None:
        super().__init__()
        self.u = nn.ParameterDict({t: nn.Parameter(torch.full((length, rank), 1.0 / rank)) for t in tasks})
        self.v = nn.ParameterDict({t: nn.Parameter(torch.ones(rank, width)) for t in tasks})

    def forward(self, task: str) -> torch.Tensor:
        """(P, width) factor of ``task``."""
        return self.u[task] @ self.v[task]
