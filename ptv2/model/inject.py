"""The only code that knows transformers' cache/attention internals.

Deep prompts enter each layer's self-attention as a key/value cache of length P
(``DynamicCache``), with the attention mask extended by P ones on the left.
Positions: we pass ``position_ids`` explicitly so the real tokens keep positions 0..T-1
(the model would otherwise shift them by P); the prefix has no position, so the full
``max_position_embeddings`` stay usable for text.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Iterator

import torch
from transformers import DynamicCache, PreTrainedModel


@lru_cache(maxsize=None)
def _cache_argument_of(forward: Callable) -> str:
    params = inspect.signature(forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise TypeError(f"{forward.__qualname__} takes neither 'cache' nor 'past_key_values': this transformers "
                    "version cannot take deep prompts through a key/value cache")


def cache_argument(backbone: PreTrainedModel) -> str:
    """The keyword the backbone's ``forward`` takes its key/value cache by: transformers renamed
    ``past_key_values`` to ``cache`` during 5.x (5.17 has the first, 5.24 the second); both work."""
    base = getattr(backbone, "_orig_mod", backbone)  # torch.compile's wrapper
    base = base.get_base_model() if hasattr(base, "get_base_model") else base  # peft's
    return _cache_argument_of(type(base).forward)


def position_ids_for(backbone: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) positions as the model computes them with no cache (RoBERTa offsets by padding_idx+1)."""
    emb = backbone.embeddings
    if hasattr(emb, "create_position_ids_from_input_ids"):
        return emb.create_position_ids_from_input_ids(input_ids, emb.padding_idx, 0)
    T = input_ids.shape[1]
    return torch.arange(T, device=input_ids.device).unsqueeze(0).expand_as(input_ids)


def encode(backbone: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
           token_type_ids: torch.Tensor | None = None,
           prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the encoder with optional deep prompts.

    input_ids, attention_mask, token_type_ids: (B, T); prefix: per layer (K, V), each (B, H, P, D).
    Returns last hidden state (B, T, hidden) and the pooler output (B, hidden) or None.
    """
    kwargs = {}
    if prefix is not None and prefix[0][0].shape[2] > 0:
        B, P = input_ids.shape[0], prefix[0][0].shape[2]
        # A fresh cache each call: DynamicCache.update appends in place.
        kwargs[cache_argument(backbone)] = DynamicCache(ddp_cache_data=[(k, v) for k, v in prefix])
        ones = torch.ones(B, P, dtype=attention_mask.dtype, device=attention_mask.device)
        attention_mask = torch.cat([ones, attention_mask], dim=1)  # (B, P+T)
        kwargs["position_ids"] = position_ids_for(backbone, input_ids)
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                   use_cache=False, **kwargs)
    return out.last_hidden_state, getattr(out, "pooler_output", None)


@torch.no_grad()
def token_key_values(backbone: PreTrainedModel, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The keys and values each layer computes for real tokens: input_ids (1, T) -> per layer (K, V), each
    (1, H, T, D). A deep prompt started from them looks to every layer like tokens it has seen before."""
    cache = DynamicCache()  # each layer appends its (K, V) to it
    was_training = backbone.training
    backbone.eval()
    backbone(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False,
             **{cache_argument(backbone): cache})
    backbone.train(was_training)
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


@torch.no_grad()
def query_means(backbone: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(L, H, D): each layer's mean self-attention query per head over the real tokens of a batch
    (input_ids, attention_mask: (B, T)). A key pointing against it draws almost no attention from any
    token (the queries of a layer share a large common component: cosine 0.45-0.68 to their mean here)."""
    layers = backbone.encoder.layer  # BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA: layer[i].attention.self.query
    H = backbone.config.num_attention_heads
    D = backbone.config.hidden_size // H
    got: dict[int, torch.Tensor] = {}
    hooks = [layer.attention.self.query.register_forward_hook(lambda _m, _i, out, i=i: got.__setitem__(i, out))
             for i, layer in enumerate(layers)]
    was_training = backbone.training
    backbone.eval()
    try:
        backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    keep = attention_mask.unsqueeze(-1).unsqueeze(-1).float()  # (B, T, 1, 1)
    B, T = input_ids.shape
    return torch.stack([(got[i].view(B, T, H, D) * keep).sum((0, 1)) / keep.sum() for i in range(len(layers))])


@contextmanager
def attention(backbone: PreTrainedModel, implementation: str = "eager") -> Iterator[PreTrainedModel]:
    """Within the block the backbone runs transformers' ``implementation`` of attention, then its own
    again. ONNX export uses "eager" (matmul + additive mask + softmax): the traced SDPA path adds an IsNaN +
    Where over every layer's (B, H, T, P+T) scores (15 % of the int8 encoder's time at 1 x 128, measured),
    and onnxruntime's transformer optimizer fuses attention only in the eager pattern."""
    before = backbone.config._attn_implementation
    backbone.set_attn_implementation(implementation)
    try:
        yield backbone
    finally:
        backbone.set_attn_implementation(before)


def encode_with_input_prompt(backbone: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             token_type_ids: torch.Tensor | None, virtual: torch.Tensor) -> tuple[torch.Tensor, None]:
    """Input-layer prompt (Prompt Tuning / P-Tuning v1): virtual (B, k, h) embeddings go before the
    word embeddings of input_ids (B, T); positions run over all k+T slots, as in Lester et al. and
    PEFT. Returns the hidden states of the real tokens only, (B, T, h), and no pooler output."""
    B, k = input_ids.shape[0], virtual.shape[1]
    words = backbone.get_input_embeddings()(input_ids)  # (B, T, h)
    embeds = torch.cat([virtual.to(words.dtype), words], dim=1)  # (B, k+T, h)
    ones = torch.ones(B, k, dtype=attention_mask.dtype, device=attention_mask.device)
    mask = torch.cat([ones, attention_mask], dim=1)
    types = None if token_type_ids is None else torch.cat([torch.zeros_like(ones), token_type_ids], dim=1)
    out = backbone(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types, use_cache=False)
    return out.last_hidden_state[:, k:], None
