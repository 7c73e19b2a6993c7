"""The prompt's settings, one dataclass in one place: params.yaml's ``prompt:`` section (held by the config)
and the ``prompt`` of every saved model's spec (``model.spec.ModelSpec``), as peft saves its own config as
the adapter's. Pure data: no torch, no I/O; a bad value is one ConfigError naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ptv2.errors import check_value


@dataclass(frozen=True)
class PromptConfig:
    length: int  # P virtual tokens per layer; 0 = plain backbone
    reparam: bool  # Prefix-Tuning's MLP reparameterization
    reparam_hidden: int
    dropout: float
    init: Literal["random", "vocab", "words", "quiet"]  # input prompts: embeddings; deep prompts: those tokens'
    # keys/values; quiet (deep prompts): keys against each layer's mean query, values 0 (model.prompts.start_quiet)
    quiet_margin: float  # init quiet: how far below 0 the mean query scores the prompt's keys
    init_words: str  # prompt_tuning with init: words
    template: str  # ptuning_v1: e.g. "[v] [v] question [v]"; "" = length x [v]
    encoder: Literal["lstm", "mlp"]  # ptuning_v1 prompt encoder
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_targets: list[str]

    def __post_init__(self) -> None:
        check_value(0 <= self.length <= 256, "length", self.length, "an integer in [0, 256]")
        check_value(self.lora_r >= 1, "lora_r", self.lora_r, "an integer >= 1")
        # peft takes a negative dropout as none and a negative alpha as a sign flip of the update, silently
        check_value(self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "an integer > 0 (LoRA's scale is alpha / r)")
        check_value(0.0 <= self.lora_dropout < 1.0, "lora_dropout", self.lora_dropout, "a float in [0, 1)")
        check_value(self.reparam_hidden >= 1, "reparam_hidden", self.reparam_hidden, ">= 1")
        check_value(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "a float in [0, 1)")
        check_value(self.quiet_margin > 0, "quiet_margin", self.quiet_margin, "a float > 0, e.g. 5")
