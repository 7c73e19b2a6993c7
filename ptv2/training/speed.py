"""What makes training fast on the machine at hand: autocast precision and compilation.

``use_bf16`` turns ``train.precision`` into this machine's choice, ``autocast`` applies it to a training
forward (torch's own autocast, not accelerate's ``mixed_precision``: that is fixed once per process, and one
process may train several models). ``auto`` means bf16 on CUDA and fp32 on every CPU: measured, bf16 never
won a ptv2 epoch on a CPU. Emulated (AVX2) it is 20x slower per step (reports/bench_speed.md); even with
native kernels (AMX-BF16) one MRPC epoch took 1.21-1.52x the fp32 time (reports/bench_speed_amx.md): the
casts around a small, short-sequence frozen encoder cost more than the bf16 matmuls save. ``compiled`` runs
``torch.compile`` on the backbone's forward for the duration of training only: module names, state dicts
and ONNX export see the plain module.
"""
from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """oneDNN's own verdict (AVX512-BF16 / AMX-BF16 present); False when torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(precision: str, cuda: bool) -> bool:
    """Whether training forwards run under bf16 autocast for ``train.precision`` on this machine."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: expected auto, fp32 or bf16")
    if precision != "auto":
        return precision == "bf16"
    if cuda:
        return True
    log.info("precision auto on CPU: fp32 (bf16 measured slower for ptv2 on CPUs, %s; "
             "train.precision: bf16 forces it)",
             "native bf16 kernels here" if cpu_has_native_bf16() else "emulated here")
    return False


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast on ``device`` when ``bf16``; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@contextmanager
def compiled(module: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """Within the block ``module.forward`` is ``torch.compile``d (dynamic shapes: length-grouped batches
    vary in length); after it, the module's own forward again."""
    if not enabled:
        yield module
        return
    module.forward = torch.compile(module.forward, dynamic=True)  # an instance attribute over the class's
    try:
        yield module
    finally:
        del module.forward
