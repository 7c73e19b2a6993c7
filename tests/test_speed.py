"""Training speed settings (ptv2.training.speed): each turns off cleanly and gives the fp32 eager
results within its tolerance on the tiny model; fp32 eager stays the tested reference elsewhere."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny_params, train_task
from ptv2.config import config_from_dict
from ptv2.errors import ConfigError
from ptv2.training import speed
from ptv2.training.artifacts import WEIGHTS


@pytest.mark.parametrize("precision,cuda,native,ratio,want", [
    ("fp32", True, True, 2.0, False), ("bf16", False, False, 0.5, True), ("auto", True, False, 0.5, True),
    ("auto", False, True, 1.8, True), ("auto", False, True, 1.1, False), ("auto", False, False, 1.8, False)])
def test_precision_auto_is_bf16_on_cuda_and_where_measured_faster_on_a_cpu(monkeypatch, precision, cuda, native,
                                                                           ratio, want):
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: native)
    measured = []
    assert speed.use_bf16(precision, cuda, lambda: measured.append(1) or ratio) is want
    # only auto on a CPU with native bf16 kernels measures anything
    assert measured == ([1] if precision == "auto" and not cuda and native else [])


def test_the_bf16_speedup_is_measured_once_per_machine_and_backbone(tiny, tmp_path, monkeypatch):
    backbone, _ = tiny
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runs = []
    monkeypatch.setattr(speed, "measure_bf16_speedup", lambda b: runs.append(b) or 1.234)
    assert speed.bf16_speedup(backbone) == 1.234
    assert speed.bf16_speedup(backbone) == 1.234 and len(runs) == 1  # read back from the cache
    assert list(json.loads(speed.cache_file().read_text()).values()) == [1.234]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # another thread count is another measurement
        assert speed.bf16_speedup(backbone) == 1.234 and len(runs) == 2
    finally:
        torch.set_num_threads(threads)
    speed.cache_file().write_text("{not json")  # a damaged cache is measured again, not an error
    assert speed.bf16_speedup(backbone) == 1.234 and len(runs) == 3


def test_the_cache_lives_under_xdg_else_home_else_the_temp_folder(tmp_path, monkeypatch):
    import tempfile
    from pathlib import Path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert speed.cache_file() == tmp_path / "ptv2" / "bf16_speedup.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert speed.cache_file() == Path.home() / ".cache" / "ptv2" / "bf16_speedup.json"

    def homeless():
        raise RuntimeError("Could not determine home directory")

    monkeypatch.setattr(Path, "home", staticmethod(homeless))
    assert speed.cache_file() == Path(tempfile.gettempdir()) / "ptv2" / "bf16_speedup.json"


def test_measuring_the_speedup_leaves_the_backbone_and_the_rng_as_they_were(tiny):
    backbone, _ = tiny
    backbone.train()
    backbone.requires_grad_(True)  # a fine-tuned backbone: the probe must not leave gradients on it
    attn = backbone.config._attn_implementation
    state = torch.get_rng_state()
    ratio = speed.measure_bf16_speedup(backbone, rows=4, length=8, repeats=1)
    assert ratio > 0 and torch.equal(torch.get_rng_state(), state)
    assert backbone.training and backbone.config._attn_implementation == attn
    assert all(p.grad is None for p in backbone.parameters())


def test_the_speedup_is_measured_through_a_lora_wrapper_and_a_failure_means_fp32(tiny, tmp_path, monkeypatch):
    from ptv2.model.lora import wrap

    backbone, _ = tiny
    wrapped = wrap(backbone, "lora", 2, 4, 0.0, ["query", "value"], 10)
    assert speed.measure_bf16_speedup(wrapped, rows=2, length=4, repeats=1) > 0
    assert all(p.grad is None for p in wrapped.parameters())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def broken(b):
        raise RuntimeError("no inputs_embeds here")

    monkeypatch.setattr(speed, "measure_bf16_speedup", broken)
    assert speed.bf16_speedup(backbone) == 0.0 and not speed.cache_file().exists()  # not kept: measured next time
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    assert speed.use_bf16("auto", False, lambda: speed.bf16_speedup(backbone)) is False


def test_bf16_on_a_cpu_runs_eager_attention_for_the_block_only(tiny):
    backbone, _ = tiny
    before = backbone.config._attn_implementation
    assert before != "eager"  # else the test shows nothing
    with speed.bf16_attention(backbone, torch.device("cpu"), True):
        assert backbone.config._attn_implementation == "eager"
    assert backbone.config._attn_implementation == before
    for device, bf16 in ((torch.device("cpu"), False), (torch.device("meta"), True)):  # fp32, or not a CPU
        with speed.bf16_attention(backbone, device, bf16):
            assert backbone.config._attn_implementation == before


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
    assert (ref.record["precision"], run.record["precision"]) == ("fp32", "bf16")
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


@pytest.mark.parametrize("ratio,want", [(2.0, "bf16"), (1.0, "fp32")])
def test_a_run_on_auto_trains_in_what_this_machine_measured_and_records_it(root, tiny_dir, monkeypatch, ratio, want):
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr("ptv2.training.loop.bf16_speedup", lambda backbone: ratio)
    run, _ = _train(root, tiny_dir, want, precision="auto")
    assert run.record["precision"] == want
