"""Copy a backbone folder with its safetensors weights cast to another float dtype (ints kept).

    python bench/cast_weights.py SRC DST fp16   # writes DST/model.fp16.safetensors (carried to a GPU machine)
    python bench/cast_weights.py SRC DST fp32   # writes DST/model.safetensors (what transformers loads)

Used by bench/gpu_session.sh: all-MiniLM-L6-v2's fp32 file is over the device tool's 64 MiB limit.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

NAMES = {"fp16": ("model.fp16.safetensors", torch.float16), "fp32": ("model.safetensors", torch.float32)}


def main(src: str, dst: str, dtype: str) -> None:
    name, want = NAMES[dtype]
    src_dir, dst_dir = Path(src), Path(dst)
    (weights,) = src_dir.glob("*.safetensors")  # exactly one weights file in a backbone folder
    shutil.rmtree(dst_dir, ignore_errors=True)
    shutil.copytree(src_dir, dst_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    sd = load_file(weights)
    save_file({k: v.to(want) if v.is_floating_point() else v for k, v in sd.items()}, dst_dir / name)
    print(f"{dst_dir / name}: {sum(v.numel() for v in sd.values())} values, {weights.name} -> {dtype}")


if __name__ == "__main__":
    main(*sys.argv[1:])
