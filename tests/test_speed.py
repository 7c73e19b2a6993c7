"""Training speed settings (ptv2.training.speed): each turns off cleanly and gives the fp32 eager
results within its tolerance on the tiny model; fp32 eager stays the tested reference elsewhere."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny_params, train_task
from ptv2.config import config_from_dict
from ptv2.errors import ConfigError
from ptv2.training import speed
from ptv2.training.artifacts import WEIGHTS


@pytest.mark.parametrize("precision,cuda,native,want", [
    ("fp32", True, True, False), ("bf16", False, False, True), ("auto", True, False, True),
    ("auto", False, True, False), ("auto", False, False, False)])
def test_precision_auto_is_bf16_only_on_cuda(monkeypatch, precision, cuda, native, want):
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: native)
    assert speed.use_bf16(precision, cuda) is want


def test_a_precision_outside_the_choices_is_a_config_error(root, tiny_dir):
    with pytest.raises(ConfigError, match="precision"):
        config_from_dict(tiny_params(root, tiny_dir, precision="fp16"))


def _train(root, tiny_dir, name, **train):
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 2, "finetune": 2}, head_init="random", **train))
    run = train_task(cfg, "sent", root / name, report_splits=())
    return run, load_file(str(root / name / "model" / WEIGHTS))


def test_bf16_autocast_trains_within_tolerance_of_fp32(root, tiny_dir):
    ref, w32 = _train(root, tiny_dir, "fp32")
    run, w16 = _train(root, tiny_dir, "bf16", precision="bf16")
    assert not all(torch.equal(w32[k], w16[k]) for k in w32)  # autocast did run in bf16
    for k in w32:
        torch.testing.assert_close(w16[k], w32[k], atol=2e-2, rtol=0.1)
    losses = [[h["train_loss"] for h in r.record["history"]] for r in (ref, run)]
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


@pytest.mark.skipif(not (__import__("shutil").which("cc") or __import__("shutil").which("gcc")),
                    reason="torch.compile's CPU backend needs a C compiler")
def test_compiled_backbone_trains_the_same_and_is_plain_afterwards(root, tiny_dir, monkeypatch):
    seen = []
    orig = speed.compiled

    def spy(module, enabled):
        seen.append(enabled)
        return orig(module, enabled)

    monkeypatch.setattr("ptv2.training.loop.compiled", spy)
    _, eager = _train(root, tiny_dir, "eager")
    run, comp = _train(root, tiny_dir, "compiled", compile=True)
    assert seen == [False, False, True, True]
    for k in eager:
        torch.testing.assert_close(comp[k], eager[k], atol=1e-4, rtol=1e-4)


def test_compiled_restores_the_module_forward(tiny):
    backbone, _ = tiny
    with speed.compiled(backbone, True) as m:
        assert "forward" in vars(m)
    assert "forward" not in vars(backbone)
    with speed.compiled(backbone, False) as m:
        assert "forward" not in vars(m)
