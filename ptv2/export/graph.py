"""Torch modules that define what goes into the ONNX graphs (no I/O here).

- ``PromptInputEncoder``: the frozen backbone with the deep prompt as an *input*
  ``prefix`` (L, 2, B, H, P, D) -> last hidden state (B, T, h). One graph serves every task,
  and rows of one batch may carry different tasks' prompts (mixed-task batches).
  Without a prefix (merged LoRA/AdaLoRA, fine-tuned) the graph has no ``prefix`` input.
- ``InputPromptEncoder``: Prompt Tuning / P-Tuning v1: the trained input-layer prompt as a constant before
  the word embeddings -> the real tokens' last hidden state (B, T, h); a graph of its own per task.
- ``BakedTaskModel``: one task's prompt and head folded in as constants -> logits.
"""
from __future__ import annotations

import torch
from torch import nn

from ptv2.model.inject import encode, encode_with_input_prompt
from ptv2.prefix import BATCH_AXIS, task_layout
from ptv2.model.prompted import PromptedModel


class PromptInputEncoder(nn.Module):
    """The frozen backbone as a graph; the deep prompt, when there is one, is an input."""

    def __init__(self, model: PromptedModel) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                prefix: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids/attention_mask/token_type_ids (B, T); prefix (L, 2, B, H, P, D) or None (merged
        adapters, fine-tuned: the weights carry what was trained) -> (B, T, h)."""
        kv = None if prefix is None else [(prefix[i, 0], prefix[i, 1]) for i in range(prefix.shape[0])]
        hidden, _ = encode(self.backbone, input_ids, attention_mask, token_type_ids, kv)
        return hidden


class InputPromptEncoder(nn.Module):
    """The frozen backbone behind a trained input-layer prompt, held as a constant: the same virtual tokens go
    before every row (P-Tuning v1's encoder runs once here, as at inference), so the graph's inputs are the plain
    ids and its output is shaped as ``PromptInputEncoder``'s."""

    def __init__(self, model: PromptedModel) -> None:
        super().__init__()
        self.backbone = model.backbone
        with torch.no_grad():
            self.register_buffer("virtual", model.input_prompt(1).detach().clone())  # (1, k, h)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """input_ids/attention_mask/token_type_ids (B, T) -> (B, T, h), the real tokens' states only."""
        virtual = self.virtual.expand(input_ids.shape[0], -1, -1)
        hidden, _ = encode_with_input_prompt(self.backbone, input_ids, attention_mask, token_type_ids, virtual)
        return hidden


class BakedTaskModel(nn.Module):
    """One task, prompt and head as constants: (B, T) ids -> logits."""

    def __init__(self, model: PromptedModel, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(batch, self.task)


def prompt_tensor(model: PromptedModel, task: str | None = None) -> torch.Tensor:
    """The trained prompt as plain prefixes (MLP and the task's factor folded): (L, 2, H, P, D)."""
    p = model.prompt
    L, H, D = p.n_layers, p.n_heads, p.head_dim
    return task_layout(model.task_prompt(task).detach(), L, H, D).contiguous()


def batch_prefix(prompts: list[torch.Tensor]) -> torch.Tensor:
    """Per-row prompts (each (L, 2, H, P, D), same P) -> the graph's (L, 2, B, H, P, D) input."""
    return torch.stack(prompts, dim=BATCH_AXIS)

