"""Input-layer prompts (the baselines P-Tuning v2 is compared against).

- ``InputPrompt``: Prompt Tuning (Lester et al. 2021): k virtual-token embeddings prepended to
  the word embeddings; initialised randomly, from sampled vocabulary rows, or from given words.
- ``PromptEncoderPrompt``: P-Tuning v1 (Liu et al. 2021): virtual tokens produced by a prompt
  encoder (bi-LSTM + MLP, or MLP) from k learned inputs; a template may mix virtual tokens with
  real anchor words (e.g. ``[v] [v] question [v]``), whose frozen word embeddings are used as is.
"""
from __future__ import annotations

import torch
from torch import nn

VIRTUAL = "[v]"


class InputPrompt(nn.Module):
    """``forward(B)`` -> (B, k, h) virtual-token embeddings."""

    def __init__(self, length: int, word_embeddings: nn.Embedding, init: str = "random",
                 init_ids: list[int] | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        h = word_embeddings.embedding_dim
        if init in ("random", "quiet"):  # quiet starts deep prompts only (prompts.DeepPrompt.start_quiet)
            w = torch.randn(length, h, generator=generator) * word_embeddings.weight.std().item()
        elif init == "vocab":  # rows of the vocabulary, sampled (skip the first 1000: special/rare ids)
            lo = min(1000, word_embeddings.num_embeddings - 1)
            idx = torch.randint(lo, word_embeddings.num_embeddings, (length,), generator=generator)
            w = word_embeddings.weight[idx].detach().clone()
        elif init == "words":
            if not init_ids:
                raise ValueError("prompt.init 'words' needs prompt.init_words (text whose tokens start the prompt)")
            ids = (init_ids * (length // len(init_ids) + 1))[:length]  # repeat to length k
            w = word_embeddings.weight[torch.tensor(ids)].detach().clone()
        else:
            raise ValueError(f"prompt.init {init!r}: expected 'random', 'vocab', 'words' or 'quiet'")
        self.embedding = nn.Parameter(w)  # (k, h)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.embedding.unsqueeze(0).expand(batch_size, -1, -1)


class PromptEncoderPrompt(nn.Module):
    """P-Tuning v1. ``template``: tokens; ``[v]`` = virtual, anything else = an anchor word id."""

    def __init__(self, template: list[str], anchor_ids: dict[str, list[int]], word_embeddings: nn.Embedding,
                 encoder: str, hidden: int) -> None:
        super().__init__()
        h = word_embeddings.embedding_dim
        self.slots: list[tuple[str, list[int]]] = [(t, [] if t == VIRTUAL else anchor_ids[t]) for t in template]
        n_virtual = sum(t == VIRTUAL for t in template)
        if n_virtual == 0:
            raise ValueError(f"prompt template {template} has no virtual token {VIRTUAL!r}")
        self.inputs = nn.Parameter(torch.randn(n_virtual, h) * 0.02)  # (n_v, h)
        self._wte = (word_embeddings,)  # frozen, shared with the backbone: kept out of this module's state
        self.encoder_kind = encoder
        if encoder == "lstm":
            self.lstm = nn.LSTM(h, hidden // 2, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, h))
        elif encoder == "mlp":
            self.mlp = nn.Sequential(nn.Linear(h, hidden), nn.ReLU(), nn.Linear(hidden, h))
        else:
            raise ValueError(f"prompt.encoder {encoder!r}: expected 'lstm' or 'mlp'")

    def virtual(self) -> torch.Tensor:
        x = self.inputs.unsqueeze(0)  # (1, n_v, h)
        if self.encoder_kind == "lstm":
            x, _ = self.lstm(x)
        return self.mlp(x)[0]  # (n_v, h)

    def forward(self, batch_size: int) -> torch.Tensor:
        v, k, parts = self.virtual(), 0, []
        for tok, ids in self.slots:
            if tok == VIRTUAL:
                parts.append(v[k:k + 1]); k += 1
            else:
                parts.append(self._wte[0].weight[torch.tensor(ids, device=v.device)].detach())
        return torch.cat(parts, 0).unsqueeze(0).expand(batch_size, -1, -1)  # (B, len, h)
