"""The deep prompt's three layouts, in one place for the model, the exporter and the server (torch tensors
and numpy arrays alike, no import of either):

- flat    (P, L*2*H*D): how a prompt is a parameter, trained and stored in a model folder;
- task    (L, 2, H, P, D): one task's prompt in a bundle (``tasks/<task>.safetensors``), per layer keys/values;
- batched (L, 2, B, H, P, D): the encoder graph's ``prefix`` input, each row its own task's prompt.

L layers, 2 = key / value, H heads, P prompt length, D head size, B batch.
"""
from __future__ import annotations

from typing import Any

BATCH_AXIS = 2  # where the batch axis goes when task prompts are stacked into the graph's prefix input
_FLAT_TO_TASK = (1, 2, 3, 0, 4)  # (P, L, 2, H, D) -> (L, 2, H, P, D)
_TASK_TO_FLAT = (3, 0, 1, 2, 4)


def _permute(x: Any, order: tuple[int, ...]) -> Any:
    return x.permute(*order) if hasattr(x, "permute") else x.transpose(order)


def task_layout(flat: Any, n_layers: int, n_heads: int, head_dim: int) -> Any:
    """(P, L*2*H*D) -> (L, 2, H, P, D)."""
    return _permute(flat.reshape(flat.shape[0], n_layers, 2, n_heads, head_dim), _FLAT_TO_TASK)


def flat_layout(task: Any) -> Any:
    """(L, 2, H, P, D) -> (P, L*2*H*D)."""
    return _permute(task, _TASK_TO_FLAT).reshape(task.shape[3], -1)


def prompt_fits(prompt_shape: Any, batched_shape: Any) -> bool:
    """Does one task's prompt (L, 2, H, P, D) fit the graph's prefix input (L, 2, B, H, P, D)? Any P: the
    prompt length is a dynamic axis of the graph, like the batch; so are named (non-int) axes."""
    want = [d for i, d in enumerate(batched_shape) if i != BATCH_AXIS]  # (L, 2, H, P, D)
    return len(prompt_shape) == 5 and all(i == 3 or not isinstance(w, int) or w == g
                                          for i, (w, g) in enumerate(zip(want, prompt_shape)))
