"""Multi-task sampling: how often each task's batch is drawn in the pretraining mixture.

Strategies (rates r_t over tasks, sizes n_t, per-task weights w_t):
- ``proportional``: r_t ∝ w_t · min(n_t, K)            (T5's examples-proportional with cap K)
- ``temperature``:  r_t ∝ (w_t · min(n_t, K)) ** (1/T)  (T = 1 is proportional, T → ∞ uniform)
- ``uniform``:      r_t ∝ w_t
A plan lists an epoch's batches; a batch is a list of (task, row ids) parts. Task-homogeneous
batches (the default: each head sees its own batch, as the paper's multi-task NER) have one
part; mixed batches draw each row's task by the rates and hold one part per task present.
All randomness comes from the generator passed in.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ptv2.data.collate import length_grouped_batches

Part = tuple[str, list[int]]
Plan = list[list[Part]]
STRATEGIES = ("proportional", "temperature", "uniform")


def mixture_rates(sizes: dict[str, int], strategy: str, cap: int, temperature: float,
                  weights: dict[str, float]) -> dict[str, float]:
    """Sampling probability per task (sums to 1); the arguments are ``pretrain``'s keys."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {list(STRATEGIES)}")
    weights = weights or {}
    logs = {}  # log r_t: (w · n) ** (1/T) overflowed a float at T = 0.001 (a traceback for the user)
    for t, n in sizes.items():
        size = min(n, cap) if cap else n
        w = math.log(weights.get(t, 1.0))
        logs[t] = w if strategy == "uniform" else \
            (w + math.log(size)) / (temperature if strategy == "temperature" else 1.0)
    top = max(logs.values())
    raw = {t: math.exp(v - top) for t, v in logs.items()}
    total = sum(raw.values())
    return {t: v / total for t, v in raw.items()}


def mixture_planner(lengths: dict[str, list[int]], batch_size: int, rates: dict[str, float], n_batches: int,
                    group: bool = True, mixed: bool = False) -> Callable[[torch.Generator], Plan]:
    """Planner for ``fit``: ``n_batches`` batches per epoch, tasks drawn by ``rates``: one task per batch
    (``mixed=False``), or per row (``mixed=True``). A task whose rows run out is reshuffled and cycled
    (small tasks repeat under upsampling)."""
    tasks = list(rates)
    probs = torch.tensor([rates[t] for t in tasks], dtype=torch.double)

    def homogeneous(g: torch.Generator) -> Plan:
        draws = torch.multinomial(probs, n_batches, replacement=True, generator=g).tolist()
        queues: dict[str, list[list[int]]] = {t: [] for t in tasks}
        out: Plan = []
        for k in draws:
            t = tasks[k]
            if not queues[t]:
                queues[t] = length_grouped_batches(lengths[t], batch_size, g, group)
            out.append([(t, queues[t].pop())])
        return out

    def mixed_rows(g: torch.Generator) -> Plan:
        draws = torch.multinomial(probs, n_batches * batch_size, replacement=True, generator=g).view(n_batches, -1)
        queues: dict[str, list[int]] = {t: [] for t in tasks}
        out: Plan = []
        for row in draws:
            parts = []
            for k, n in enumerate(torch.bincount(row, minlength=len(tasks)).tolist()):
                t, ids = tasks[k], []
                while len(ids) < n:
                    if not queues[t]:
                        queues[t] = torch.randperm(len(lengths[t]), generator=g).tolist()
                    ids.append(queues[t].pop())
                if ids:
                    parts.append((t, ids))
            out.append(parts)
        return out

    return mixed_rows if mixed else homogeneous
