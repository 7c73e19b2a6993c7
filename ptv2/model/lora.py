"""LoRA / AdaLoRA through peft (a well-kept implementation; not rewritten here)."""
from __future__ import annotations

import warnings
from typing import Any

from torch import nn


def wrap(backbone: nn.Module, method: str, r: int, alpha: int, dropout: float, targets: list[str],
         total_steps: int = 1000) -> nn.Module:
    """Freeze ``backbone`` and add (Ada)LoRA adapters to ``targets`` (e.g. query, value)."""
    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    if method == "adalora":
        cfg: Any = AdaLoraConfig(init_r=max(r + 4, 12), target_r=r, lora_alpha=alpha, lora_dropout=dropout,
                                 target_modules=targets, total_step=max(total_steps, 10),
                                 tinit=max(1, total_steps // 10), tfinal=max(1, total_steps // 5))
    else:
        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing`: a FutureWarning in every LoRA run's log
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return get_peft_model(backbone, cfg)

