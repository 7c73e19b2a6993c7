"""PromptedModel: frozen backbone + deep prompt + one head per task, routed by task name.

One class for every supported backbone and head; the method switch decides what trains:
- ``ptv2``: deep prompt + heads train, backbone frozen;
- ``finetune``: backbone + heads train, no prompt (the reference P-Tuning v2 is judged against).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from ptv2.model.heads import Head, pool
from ptv2.model.inject import encode
from ptv2.model.prompts import DeepPrompt

METHODS = ("ptv2", "finetune")


class PromptedModel(nn.Module):
    def __init__(self, backbone: PreTrainedModel, tasks: dict[str, tuple[str, int]], method: str = "ptv2",
                 pooling: str = "mean", prompt_length: int = 16, reparam: bool = False,
                 reparam_hidden: int = 512, prompt_dropout: float = 0.1, head_dropout: float = 0.1) -> None:
        """tasks: name -> (task type, number of labels)."""
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method {method!r}: expected one of {list(METHODS)}")
        self.method, self.pooling, self.backbone = method, pooling, backbone
        c = backbone.config
        self.prompt: DeepPrompt | None = None
        if method == "ptv2":
            self.prompt = DeepPrompt(c.num_hidden_layers, c.num_attention_heads,
                                     c.hidden_size // c.num_attention_heads, prompt_length,
                                     reparam, reparam_hidden, prompt_dropout)
        self.heads = nn.ModuleDict({name: Head(c.hidden_size, t, n, head_dropout) for name, (t, n) in tasks.items()})
        self.task_types = {name: t for name, (t, _) in tasks.items()}
        self.backbone.requires_grad_(method == "finetune")

    def train(self, mode: bool = True) -> "PromptedModel":
        super().train(mode)
        if self.method != "finetune":
            self.backbone.eval()  # frozen backbone: its dropout stays off, as P-Tuning v2 does not tune it
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What an artifact stores: the parameters this method trains."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith("backbone.") or self.method == "finetune"}

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        """batch: input_ids/attention_mask/token_type_ids (N, T), N = B or B*C. Returns logits:
        (B, n_labels), (B,) regression, (B, C) multiple choice, (B, T, n_labels) tokens."""
        if task not in self.heads:
            raise KeyError(f"task {task!r} has no head; heads: {sorted(self.heads)}")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        prefix = self.prompt(ids.shape[0]) if self.prompt is not None else None
        hidden, pooled = encode(self.backbone, ids, mask, batch.get("token_type_ids"), prefix)
        head = self.heads[task]
        if head.kind == "token":
            return head(hidden)
        n_choices = int(batch["n_choices"]) if "n_choices" in batch else 0
        return head(pool(hidden, mask, self.pooling, pooled), n_choices)


def count_parameters(model: PromptedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
