"""The GPU check: one short script for a lent GPU machine (also runs on CPU as a smoke test).

    python bench/gpu_check.py --out reports/gpu_check            # on the GPU: table + JSON
    python bench/gpu_check.py --device cpu --sizes tiny --steps 2 --out /tmp/gpu_check   # the suite's smoke run

Standalone on the GPU image (torch, transformers, onnxruntime, peft, accelerate; no datasets, mlflow,
prefect, dvc, no MiniLM weights): it imports only ``ptv2.model`` and ``ptv2.export`` and builds random-init
BERT encoders from a config. What it measures, each row in one process:

1. **Train step**, deep prompt (method ptv2: frozen backbone, prompt + head train) against full fine-tuning
   at the same batch, fp32 and bf16 autocast: examples/s, peak device memory, MFU.
   MFU = model FLOPs per step / step time / the device's bf16 dense peak (``--peak-tflops``; H100/H200
   SXM: 989 TFLOP/s). Model FLOPs of one forward = 2 x (encoder-layer parameters) x B x T (the matmuls)
   + 4 x L x B x T x (P + T) x h (scores QK^T and the weighted sum over P + T keys). A training step is
   3 forwards for full fine-tuning (activation and weight gradients) and 2 for the deep prompt (the frozen
   weights need no weight gradients: only activation gradients flow back to the prompt).
2. **Injection checks** on the device: P = 0 equals the plain backbone exactly; a row's prompted output
   does not depend on the padding of its batch; a prompt changes the output.
3. **QLoRA**: one 4-bit (bitsandbytes nf4) LoRA step on a CUDA device, or one line saying why not.
4. **ONNX**: the tiny model's prompt-as-input encoder exported and run by onnxruntime (CUDA provider
   when present, else CPU), max |ORT - PyTorch|.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ptv2.model.inject import encode  # noqa: E402
from ptv2.cli.common import count, non_negative  # noqa: E402
from ptv2.files import atomic_write_text  # noqa: E402
from ptv2.model.prompted import MethodInputs, PromptedModel  # noqa: E402
from ptv2.model.spec import HeadSpec, ModelSpec  # noqa: E402
from ptv2.prompt import PromptConfig  # noqa: E402

# (layers, hidden, heads, intermediate): MiniLM-L6 (all-MiniLM-L6-v2), BERT-base, BERT-large; tiny for the smoke run
SIZES = {"tiny": (2, 32, 4, 64), "minilm-l6": (6, 384, 12, 1536), "bert-base": (12, 768, 12, 3072),
         "bert-large": (24, 1024, 16, 4096)}
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}  # bf16 dense, SXM / datasheet
VOCAB = 30522


def backbone_of(size: str, device: str):
    """A random-init BertModel of ``size`` built on ``device`` (no weights download)."""
    from transformers import BertConfig, BertModel

    L, h, H, ff = SIZES[size]
    cfg = BertConfig(vocab_size=VOCAB if size != "tiny" else 64, hidden_size=h, num_hidden_layers=L,
                     num_attention_heads=H, intermediate_size=ff, max_position_embeddings=512)
    torch.manual_seed(0)
    with torch.device(device):
        return BertModel(cfg)


def spec_of(method: str, prompt_length: int) -> ModelSpec:
    head = HeadSpec(type="classification", labels=["0", "1"], metrics=["accuracy"], text_b=False,
                    pair_encoding="cross")
    prompt = PromptConfig(length=prompt_length, reparam=False, reparam_hidden=512, dropout=0.0, init="random",
                          quiet_margin=5.0, init_words="", template="", encoder="mlp", lora_r=8, lora_alpha=16,
                          lora_dropout=0.05, lora_targets=["query", "value"])
    return ModelSpec(method=method, backbone="random-init", pooling="mean", normalize=False, max_length=512,
                     head_dropout=0.1, prompt=prompt, tasks={"t": head}, task_rank=0)


def model_flops(backbone, batch: int, seq: int, prompt_length: int, method: str) -> float:
    """Model FLOPs of one training step (the formula in the module docstring)."""
    c = backbone.config
    layer_params = sum(p.numel() for p in backbone.encoder.parameters())
    forward = 2 * layer_params * batch * seq + 4 * c.num_hidden_layers * batch * seq * (prompt_length + seq) * c.hidden_size
    return forward * (3 if method == "finetune" else 2)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def train_step_row(size: str, method: str, dtype: str, device: str, batch: int, seq: int, prompt_length: int,
                   steps: int, peak_tflops: float | None) -> dict[str, Any]:
    """Time ``steps`` AdamW steps of ``method`` on one fixed random batch (after 2 warm-up steps)."""
    backbone = backbone_of(size, device)
    P = prompt_length if method == "ptv2" else 0
    model = PromptedModel(backbone, spec_of(method, P), MethodInputs(seed=0, total_steps=10)).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    b = {"input_ids": torch.randint(5, backbone.config.vocab_size, (batch, seq), generator=g).to(device),
         "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
         "token_type_ids": torch.zeros(batch, seq, dtype=torch.long, device=device)}
    labels = torch.randint(0, 2, (batch,), generator=g).to(device)
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def step() -> None:
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = model(b, "t")
        loss = model.loss("t", logits, labels, 20.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    _sync(device)
    if kind == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    sec = (time.perf_counter() - t0) / steps
    flops = model_flops(backbone, batch, seq, P, method)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"size": size, "method": method, "dtype": dtype, "batch": batch, "seq": seq, "prompt_length": P,
            "trainable": trainable, "step_s": round(sec, 5), "examples_per_s": round(batch / sec, 1),
            "peak_mem_mb": None if (m := _peak_mb(device)) is None else round(m, 1),
            "tflops": round(flops / sec / 1e12, 2),
            "mfu": None if not peak_tflops else round(flops / sec / (peak_tflops * 1e12), 4)}


def injection_checks(device: str) -> dict[str, Any]:
    """The deep-prompt injection's equalities on ``device`` (fp32, eval mode)."""
    backbone = backbone_of("tiny", device).eval()
    model = PromptedModel(backbone, spec_of("ptv2", 4), MethodInputs(seed=0, total_steps=10)).to(device).eval()
    ids = torch.tensor([[2, 7, 9, 11, 3, 0, 0], [2, 8, 10, 12, 13, 14, 3]], device=device)
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    with torch.no_grad():
        empty = [(k[:, :, :0], v[:, :, :0]) for k, v in model.prompt(2)]
        p0 = encode(backbone, ids, mask, types, empty)[0]
        plain = backbone(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        both = encode(backbone, ids, mask, types, model.prompt(2))[0]
        alone = encode(backbone, ids[:1, :5], mask[:1, :5], types[:1, :5], model.prompt(1))[0]
    pad_diff = float((both[0, :5] - alone[0]).abs().max())
    return {"p0_equals_backbone": bool(torch.equal(p0, plain)),
            "padding_invariance_max_abs": pad_diff, "padding_invariant": pad_diff < 1e-5,
            "prompt_changes_output": bool(not torch.allclose(both, plain, atol=1e-4))}


def qlora_check(device: str) -> dict[str, Any]:
    """One 4-bit LoRA train step at BERT-base size, or why it did not run."""
    if not device.startswith("cuda"):
        return {"ran": False, "why": "QLoRA needs a CUDA device (bitsandbytes 4-bit kernels); skipped on cpu"}
    try:
        import bitsandbytes  # noqa: F401
        from peft import prepare_model_for_kbit_training
        from transformers import BertModel, BitsAndBytesConfig
    except ImportError as e:
        return {"ran": False, "why": f"bitsandbytes / peft not installed ({e.name}): QLoRA skipped"}
    with tempfile.TemporaryDirectory() as tmp:
        backbone_of("bert-base", "cpu").save_pretrained(tmp)
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        base = prepare_model_for_kbit_training(BertModel.from_pretrained(tmp, quantization_config=q,
                                                                         device_map={"": 0}))
    model = PromptedModel(base, spec_of("lora", 0), MethodInputs(seed=0, total_steps=10)).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(5, VOCAB, (16, 128), device=device)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    t0 = time.perf_counter()
    loss = model.loss("t", model(b, "t"), torch.zeros(16, dtype=torch.long, device=device), 20.0)
    loss.backward()
    opt.step()
    _sync(device)
    return {"ran": True, "loss": round(float(loss), 4), "step_s": round(time.perf_counter() - t0, 3),
            "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def onnx_check(device: str) -> dict[str, Any]:
    """The tiny model's prompt-as-input encoder on onnxruntime (CUDA provider when present)."""
    try:
        import onnxruntime as ort

        from ptv2.export.graph import batch_prefix, prompt_tensor
        from ptv2.export.onnx_export import export_encoder
    except ImportError as e:
        return {"ran": False, "why": f"{e.name} not installed: ONNX check skipped"}
    model = PromptedModel(backbone_of("tiny", "cpu").eval(), spec_of("ptv2", 4), MethodInputs(0, 10)).eval()
    want = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    provider = want if want in ort.get_available_providers() else "CPUExecutionProvider"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = export_encoder(model, Path(tmp) / "encoder.onnx")
        except Exception as e:  # noqa: BLE001 - e.g. the exporter's own dependency missing on this image
            return {"ran": False, "why": f"export failed: {type(e).__name__}: {e}"}
        sess = ort.InferenceSession(str(path), providers=[provider])
    ids = torch.tensor([[2, 7, 9, 11, 3, 0], [2, 8, 10, 12, 13, 3]])
    mask, types = (ids != 0).long(), torch.zeros_like(ids)
    prefix = batch_prefix([prompt_tensor(model)] * 2)
    with torch.no_grad():
        ref = encode(model.backbone, ids, mask, types, model.prompt(2))[0].numpy()
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy(),
                          "prefix": prefix.numpy()})[0]
    real = mask.numpy().astype(bool)
    return {"ran": True, "provider": sess.get_providers()[0], "max_abs_diff": float(abs(got - ref)[real].max())}


def table(rows: list[dict[str, Any]]) -> str:
    """The train-step rows as markdown, with each deep-prompt row's speed against full fine-tuning's."""
    ft = {(r["size"], r["dtype"]): r["examples_per_s"] for r in rows if r["method"] == "finetune"}
    head = "| size | method | dtype | batch x seq | P | trainable | examples/s | vs finetune | peak MB | TFLOP/s | MFU |"
    out = [head, "|" + "|".join(["---"] * 11) + "|"]
    for r in rows:
        ratio = r["examples_per_s"] / ft[(r["size"], r["dtype"])] if (r["size"], r["dtype"]) in ft else None
        cells = [r["size"], r["method"], r["dtype"], f'{r["batch"]} x {r["seq"]}', r["prompt_length"],
                 f'{r["trainable"]:,}', r["examples_per_s"], "—" if ratio is None else f"{ratio:.2f}x",
                 "—" if r["peak_mem_mb"] is None else r["peak_mem_mb"], r["tflops"],
                 "—" if r["mfu"] is None else f'{100 * r["mfu"]:.1f} %']
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def _guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One check's result, or the one line saying how it failed (the other checks still run)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a report of what broke on this machine is the point
        print(f"{name}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
        return {"ran": False, "error": f"{type(e).__name__}: {e}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="minilm-l6,bert-base,bert-large", help=f"comma list of {sorted(SIZES)}")
    ap.add_argument("--batch", type=count, default=64)
    ap.add_argument("--seq", type=count, default=128)
    ap.add_argument("--prompt-length", type=count, default=16)
    ap.add_argument("--steps", type=count, default=10)
    ap.add_argument("--peak-tflops", type=non_negative, default=0.0, help="bf16 dense peak; 0 = from the GPU's name")
    ap.add_argument("--out", default="reports/gpu_check", help="writes <out>.md and <out>.json")
    a = ap.parse_args(argv)
    sizes = [s for s in a.sizes.split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad or (a.device.startswith("cuda") and not torch.cuda.is_available()):
        print(f"gpu_check: unknown sizes {bad} (expected {sorted(SIZES)})" if bad else
              f"gpu_check: --device {a.device} but torch.cuda.is_available() is False; use --device cpu",
              file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    peak = a.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    env = {"device": name, "torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "peak_bf16_tflops": peak}
    print(json.dumps(env), flush=True)
    rows = []
    for size in sizes:
        for method in ("ptv2", "finetune"):
            for dtype in ("fp32", "bf16"):
                r = _guarded(f"{size} {method} {dtype}", lambda: train_step_row(
                    size, method, dtype, a.device, a.batch, a.seq, a.prompt_length, a.steps, peak))
                if "step_s" in r:
                    rows.append(r)
                    print(json.dumps(r), flush=True)
                if a.device.startswith("cuda"):
                    torch.cuda.empty_cache()
    checks = {"injection": _guarded("injection", lambda: injection_checks(a.device)),
              "qlora": _guarded("qlora", lambda: qlora_check(a.device)),
              "onnx": _guarded("onnx", lambda: onnx_check(a.device))}
    print(json.dumps(checks), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"env": env, "train_step": rows, "checks": checks}, indent=1))
    cmd = "python bench/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [f"# GPU check: {name}", "", f"`{cmd}`; torch {env['torch']}, transformers {env['transformers']}; "
          f"bf16 dense peak {peak or '—'} TFLOP/s. MFU formula: bench/gpu_check.py's docstring.", "",
          table(rows), "", "Checks:", ""] + [f"- {k}: `{json.dumps(v)}`" for k, v in checks.items()]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    print(table(rows))
    ok = len(rows) == 4 * len(sizes) and checks["injection"].get("p0_equals_backbone") and \
        checks["injection"].get("padding_invariant") and checks["injection"].get("prompt_changes_output")
    return 0 if ok else 1


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        sys.exit(main())
