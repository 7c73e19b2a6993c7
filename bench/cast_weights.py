"""Copy a backbone folder with its safetensors weights cast to another float dtype (ints kept).

    python bench/cast_weights.py SRC DST fp16   # writes DST/model.fp16.safetensors (carried to a GPU machine)
    python bench/cast_weights.py SRC DST fp32   # writes DST/model.safetensors (what transformers loads)

Used by bench/gpu_session.sh: all-MiniLM-L6-v2's fp32 file is over the device tool's 64 MiB limit.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

NAMES = {"fp16": ("model.fp16.safetensors", torch.float16), "fp32": ("model.safetensors", torch.float32)}


def _refuse(why: str) -> None:
    print(f"cast_weights: error: {why}", file=sys.stderr)
    raise SystemExit(2)


def main(src: str, dst: str, dtype: str) -> None:
    name, want = NAMES[dtype]
    src_dir, dst_dir = Path(src), Path(dst)
    weights = sorted(src_dir.glob("*.safetensors"))
    if len(weights) != 1:  # exactly one weights file in a backbone folder
        _refuse(f"{src_dir} holds {len(weights)} *.safetensors files; give a backbone folder with one")
    if dst_dir.exists() and not (dst_dir / "config.json").is_file():  # it is replaced: never a folder of other things
        _refuse(f"{dst_dir} exists and is no backbone folder (no config.json); give a new folder")
    shutil.rmtree(dst_dir, ignore_errors=True)
    shutil.copytree(src_dir, dst_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    sd = load_file(weights[0])
    save_file({k: v.to(want) if v.is_floating_point() else v for k, v in sd.items()}, dst_dir / name)
    print(f"{dst_dir / name}: {sum(v.numel() for v in sd.values())} values, {weights[0].name} -> {dtype}")


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        ap.add_argument("src", help="a backbone folder (config.json, one *.safetensors)")
        ap.add_argument("dst", help="the folder to write (replaced if it is a backbone folder, else refused)")
        ap.add_argument("dtype", choices=sorted(NAMES))
        a = ap.parse_args()
        main(a.src, a.dst, a.dtype)
