"""How a regression task's label scale enters training, so that training does not depend on it.

A cross-encoded regression head predicts in label units (its fitted weights carry the labels' standard deviation
``sd`` and mean). Left alone, three things then scaled with the labels: the MSE (labels near 5e8 gave a loss of
1e12, and a mixture's shared prompt learned that task alone), AdamW's steps on the head (an absolute ``lr`` per
step: labels on a scale of 1e-4 exploded, val fell to -99.9 pearson), and its weight decay (pulling a bias of 5e8
towards 0 by 1.5e5 a step). Here the loss is divided by the labels' variance, and the head's parameters step ``sd``
times the rate with ``1 / sd`` the decay (the same decay per step), its bias undecayed: a head on standardised
labels, in label units. Classification, CoSENT (bi similarity) and token losses are scale-free: unit 1.
"""
from __future__ import annotations

from typing import Any

import torch

from ptv2.model.prompted import PromptedModel


def label_sd(core: PromptedModel, train: dict[str, Any]) -> dict[str, float]:
    """task -> the standard deviation of its train labels, for tasks whose head is trained by MSE; 1 elsewhere.
    ``train``: task -> an encoded split (``.ds``, the normalised rows)."""
    out = dict.fromkeys(train, 1.0)
    for t, split in train.items():
        if core.heads[t].mse and len(split.ds) > 1:
            sd = float(torch.tensor(split.ds["label"], dtype=torch.float64).std())
            out[t] = sd if sd > 0 else 1.0
    return out


def param_groups(core: PromptedModel, sd: dict[str, float], lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: every trained parameter at ``lr``, but an MSE head's weights at ``lr * sd`` with
    ``weight_decay / sd``, and its bias at ``lr * sd`` undecayed (see the module docstring)."""
    scaled = {id(p): (t, name) for t, s in sd.items() if s != 1.0
              for name, p in core.heads[t].linear.named_parameters()}
    groups = [{"params": [p for p in core.parameters() if p.requires_grad and id(p) not in scaled],
               "lr": lr, "weight_decay": weight_decay}]
    for p in core.parameters():
        if p.requires_grad and id(p) in scaled:
            t, name = scaled[id(p)]
            groups.append({"params": [p], "lr": lr * sd[t],
                           "weight_decay": weight_decay / sd[t] if name == "weight" else 0.0})
    return groups
