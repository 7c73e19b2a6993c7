"""oneDNN's implicit bf16 for fp32 matmuls (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``, torch
>= 2.9) against plain fp32, on the frozen backbone's step as ptv2 takes it: forward + backward to the
inputs only (no weight gradients), fp32 tensors throughout, so none of autocast's casts.

    python bench/matmul_precision.py --batch 32 --length 40

Prints ms per step for each setting (alternating, twice each, after 3 warm-up steps) and how far the
outputs and input gradients of the bf16 setting move from fp32's.
"""
from __future__ import annotations

import argparse
import time

import torch

from ptv2.cli.common import count
from ptv2.model.backbone import load_backbone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--batch", type=count, default=32)
    ap.add_argument("--length", type=count, default=40)
    ap.add_argument("--steps", type=count, default=10)
    a = ap.parse_args()
    torch.manual_seed(0)
    model, _ = load_backbone(a.backbone)
    model.eval().requires_grad_(False)
    ids = torch.randint(1000, 20000, (a.batch, a.length))
    mask = torch.ones_like(ids)

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        emb = model.embeddings.word_embeddings(ids).detach().requires_grad_(True)
        out = model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        out.mean(1).pow(2).sum().backward()
        return out.detach(), emb.grad

    last: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for precision in ("ieee", "bf16", "ieee", "bf16"):
        torch.backends.mkldnn.matmul.fp32_precision = precision
        for _ in range(3):
            step()
        t = time.perf_counter()
        for _ in range(a.steps):
            last[precision] = step()
        print(f"{precision}: {(time.perf_counter() - t) / a.steps * 1000:.1f} ms/step", flush=True)
    (o1, g1), (o2, g2) = last["ieee"], last["bf16"]
    print(f"bf16 vs ieee: max |output diff| {float((o1 - o2).abs().max()):.4f}, "
          f"input-gradient relative error {float((g1 - g2).norm() / g1.norm()):.4f}")


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
