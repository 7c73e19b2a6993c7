"""What makes training fast on the machine at hand: autocast precision and compilation.

``use_bf16`` turns ``train.precision`` into this machine's choice, ``autocast`` applies it to a training
forward (torch's own autocast, not accelerate's ``mixed_precision``: that is fixed once per process, and one
process may train several models). ``auto`` means bf16 on CUDA; on a CPU with native bf16 kernels it means
what ``bf16_speedup`` measures for this backbone on this machine (cached per machine, torch, threads and
backbone shape), and fp32 where those kernels are emulated (AVX2: 20x slower per step,
reports/bench_speed.md). Under bf16 on a CPU the backbone runs eager attention (``bf16_attention``): the CPU
SDPA kernel's bf16 backward is why bf16 with SDPA gained only 1.09x on AVX512-BF16 cores (reports/
bench_speed_s19.md); the AMX runs where it lost (bench_speed_amx.md) used SDPA too, not re-measured.
``compiled`` runs ``torch.compile`` on the backbone's forward for the duration of training only: module
names, state dicts and ONNX export see the plain module.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

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


MIN_SPEEDUP = 1.15  # auto picks bf16 on a CPU only this much faster per step: a closer call is timing noise


def use_bf16(precision: str, cuda: bool, speedup: Callable[[], float] | None = None) -> bool:
    """Whether training forwards run under bf16 autocast for ``train.precision`` on this machine;
    ``speedup`` measures fp32 / bf16 step time (auto on a CPU with native bf16 kernels only)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: expected auto, fp32 or bf16")
    if precision != "auto":
        return precision == "bf16"
    if cuda:
        return True
    if not cpu_has_native_bf16() or speedup is None:
        log.info("precision auto on CPU: fp32 (bf16 is emulated here; train.precision: bf16 forces it)")
        return False
    ratio = speedup()
    chosen = ratio >= MIN_SPEEDUP
    log.info("precision auto on CPU: %s (a bf16 step measured %.2fx the speed of fp32 here, %s %.2fx; "
             "train.precision: fp32 or bf16 fixes it)", "bf16" if chosen else "fp32", ratio,
             "at least" if chosen else "below", MIN_SPEEDUP)
    return chosen


def cache_file() -> Path:
    """Where measured speed choices are kept across runs (``$XDG_CACHE_HOME/ptv2``, else ``~/.cache/ptv2``)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory (a bare container user): the temp folder
            import tempfile

            base = tempfile.gettempdir()
    return Path(base) / "ptv2" / "bf16_speedup.json"


def _machine_key(backbone: nn.Module) -> str:
    """This CPU, torch and thread count, and the backbone's shape: what a step time depends on."""
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = " ".join(sorted({f for f in info.split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}))
        name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    except OSError:
        name = platform.processor()
    c = backbone.config
    shape = f"{c.model_type}-L{c.num_hidden_layers}-H{c.hidden_size}-A{c.num_attention_heads}-I{c.intermediate_size}"
    return f"{name} [{flags}] x{os.cpu_count()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {shape}"


def bf16_speedup(backbone: nn.Module) -> float:
    """fp32 / bf16 time of a training step of ``backbone`` on this machine, measured once (a few seconds)
    and then read from ``cache_file()``."""
    from ptv2.files import write_json

    key, path = _machine_key(backbone), cache_file()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), (int, float)):
        return float(known[key])
    try:
        ratio = round(measure_bf16_speedup(backbone), 3)
    except (RuntimeError, TypeError, ValueError) as e:  # auto never fails a run: it trains as it always could
        log.warning("could not measure bf16 against fp32 on this backbone (%s): training in fp32", e)
        return 0.0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {**known, key: ratio})
    except OSError as e:  # a read-only home still trains; it measures again next time
        log.warning("could not keep the measured bf16 speed-up in %s: %s", path, e)
    return ratio


def measure_bf16_speedup(backbone: nn.Module, rows: int = 32, length: int = 64, repeats: int = 3) -> float:
    """Median fp32 / bf16 time of a forward + backward to the inputs of ``backbone`` at (rows, length):
    fp32 in its own attention, bf16 autocast with eager attention, as training runs them. Leaves the
    backbone's mode, its gradients and the global RNG as they were."""
    cpu = torch.device("cpu")
    was_training = backbone.training
    backbone.eval()
    with torch.random.fork_rng(devices=[]), _restoring_mode(backbone, was_training):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, backbone.config.vocab_size, (rows, length), generator=g)
        mask = torch.ones_like(ids)

        def step(bf16: bool) -> float:
            t0 = time.perf_counter()
            x = backbone.get_input_embeddings()(ids).detach().requires_grad_(True)
            with bf16_attention(backbone, cpu, bf16), autocast(cpu, bf16):  # as an epoch runs it
                out = backbone(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
            torch.autograd.grad(out.float().sum(), x)
            return time.perf_counter() - t0

        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(repeats + 1):  # the first round warms up each path
            for bf16 in (False, True):
                t = step(bf16)
                if i:
                    times[bf16].append(t)
    return statistics.median(times[False]) / statistics.median(times[True])


@contextmanager
def _restoring_mode(module: nn.Module, training: bool) -> Iterator[None]:
    try:
        yield
    finally:
        module.train(training)


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast on ``device`` when ``bf16``; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@contextmanager
def bf16_attention(backbone: nn.Module, device: torch.device, bf16: bool) -> Iterator[nn.Module]:
    """Within the block a CPU backbone trained under bf16 autocast runs eager attention: the CPU
    SDPA kernel's bf16 backward took 25 ms a layer at 64 x (16 + 25) tokens against 5 ms in fp32, 38 % of
    the step; eager attention under autocast made the whole step 1.9x faster than fp32 SDPA."""
    if not bf16 or device.type != "cpu":
        yield backbone
        return
    from ptv2.model.inject import attention

    with attention(backbone, "eager") as b:
        yield b


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
