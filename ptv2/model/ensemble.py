"""Prompt ensembling (Lester et al. 2021): several prompts trained on one task (different seeds),
combined at inference in ONE batched forward over the shared frozen backbone."""
from __future__ import annotations

import torch

from ptv2.model.inject import encode, encode_with_input_prompt
from ptv2.model.prompted import PromptedModel


@torch.no_grad()
def member_logits(models: list[PromptedModel], task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(K, B, n) logits of K members (prompt_tuning or ptv2, one shared backbone) from one forward
    over a (K*B, T) batch: member k's prompt is gathered for its rows."""
    K, B = len(models), batch["input_ids"].shape[0]
    first = models[0]
    if any(m.backbone is not first.backbone for m in models):
        raise ValueError("ensemble members must share one backbone object (load them with backbone=...)")
    big = {k: v.repeat(K, *[1] * (v.dim() - 1)) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                                  "token_type_ids")}
    if all(m.input_prompt is not None for m in models):
        virtual = torch.cat([m.input_prompt(B) for m in models], dim=0)  # (K*B, k, h)
        hidden, pooled = encode_with_input_prompt(first.backbone, big["input_ids"], big["attention_mask"],
                                                  big.get("token_type_ids"), virtual)
    elif all(m.prompt is not None for m in models):
        per = [m.prompt(B) for m in models]  # K x L x (K_l, V_l) each (B, H, P, D)
        prefix = [(torch.cat([p[layer][0] for p in per]), torch.cat([p[layer][1] for p in per]))
                  for layer in range(len(per[0]))]
        hidden, pooled = encode(first.backbone, big["input_ids"], big["attention_mask"], big.get("token_type_ids"),
                                prefix)
    else:
        raise ValueError("ensemble members must all be prompt_tuning or all deep-prompt (ptv2) models")
    out = []
    for k, m in enumerate(models):
        rows = slice(k * B, (k + 1) * B)
        sub = {key: v[rows] for key, v in big.items()}
        out.append(m.apply_head(task, hidden[rows], sub, None if pooled is None else pooled[rows]))
    return torch.stack(out)


def combine(logits: torch.Tensor, how: str = "mean_prob") -> torch.Tensor:
    """(K, B, n) -> (B,) predicted class: averaged probabilities, or majority vote (ties: lowest id)."""
    if how == "mean_prob":
        return logits.softmax(-1).mean(0).argmax(-1)
    if how == "vote":
        votes = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).sum(0)  # (B, n)
        return votes.argmax(-1)
    raise ValueError(f"ensemble combine {how!r}: expected 'mean_prob' or 'vote'")
