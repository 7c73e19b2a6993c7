"""Every method of the prompt-tuning family on the tiny model: what trains, round trip, evaluate."""
import pytest
import torch

from helpers import head, tiny_params, train_task
from ptv2.training.artifacts import read_adapter
from ptv2.training.build import load_model, model_from_spec, spec_from_config
from ptv2.config import config_from_dict
from ptv2.model.ensemble import combine, member_logits
from ptv2.training.inference import evaluate_saved

EXPECT = {  # method -> prefixes of the parameters that train (besides heads)
    "ptv2": ("prompt.prefix",), "prefix_tuning": ("prompt.embedding", "prompt.mlp"),
    "prompt_tuning": ("input_prompt.embedding",), "ptuning_v1": ("input_prompt.",),
    "lora": ("backbone.base_model.model.",), "adalora": ("backbone.base_model.model.",),
}


def _cfg(root, tiny_dir, method, **prompt):
    d = tiny_params(root, tiny_dir, method=method, epochs={m: 1 for m in ("ptv2", "prefix_tuning", "prompt_tuning",
                    "ptuning_v1", "lora", "adalora", "qlora", "finetune")}, head_init="random")
    d["prompt"].update({"reparam_hidden": 16, **prompt})
    return config_from_dict(d)


@pytest.mark.parametrize("method", list(EXPECT))
def test_method_trains_only_its_parameters_and_round_trips(root, tiny_dir, method):
    cfg = _cfg(root, tiny_dir, method, template="[v] what [v]" if method == "ptuning_v1" else "")
    model, _ = model_from_spec(spec_from_config(cfg, {"sent": head()}))
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains and all(n.startswith(EXPECT[method] + ("heads.",)) for n in trains), sorted(trains)[:5]
    if method in ("lora", "adalora"):
        assert all("lora_" in n for n in trains if n.startswith("backbone."))
    run = train_task(cfg, "sent", root / method)
    state, saved = read_adapter(root / method / "model")
    loaded, _, _ = load_model(root / method / "model")
    for k, v in loaded.trainable_state().items():
        assert torch.equal(v, state[k]), k
    assert evaluate_saved(cfg, root / method / "model", "sent", "dev") == pytest.approx(run.metrics["dev"]["sent"])
    if method == "prefix_tuning":  # folded: saved as a plain deep prompt
        assert saved.method == "ptv2" and saved.trained_as == "prefix_tuning"
        assert set(k for k in state if k.startswith("prompt.")) == {"prompt.prefix"}


def test_prefix_fold_gives_the_same_logits(root, tiny_dir):
    cfg = _cfg(root, tiny_dir, "prefix_tuning")
    train_task(cfg, "sent", root / "pt", report_splits=())
    trained, tok = model_from_spec(spec_from_config(cfg, {"sent": head()}))
    ck = root / "pt/checkpoint/trainable.safetensors"
    from safetensors.torch import load_file

    trained.load_state_dict(load_file(str(ck)), strict=False)  # the unfolded (MLP) weights
    folded, _, _ = load_model(root / "pt/model")
    enc = tok(["good film", "bad plot"], padding=True, return_tensors="pt")
    b = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    torch.testing.assert_close(trained.eval()(b, "sent"), folded(b, "sent"), atol=1e-5, rtol=1e-5)


def test_prompt_tuning_inits(root, tiny_dir):
    for init, words in (("vocab", ""), ("words", "good film")):
        cfg = _cfg(root, tiny_dir, "prompt_tuning", init=init, init_words=words, length=3)
        model, tok = model_from_spec(spec_from_config(cfg, {"t": head()}))
        emb = model.backbone.get_input_embeddings().weight
        rows = model.input_prompt.embedding
        assert all(any(torch.equal(r, e) for e in emb) for r in rows)  # copied vocabulary rows
        if init == "words":
            ids = tok("good film", add_special_tokens=False)["input_ids"]
            assert torch.equal(rows[0], emb[ids[0]]) and torch.equal(rows[2], emb[ids[0]])


def test_qlora_on_cpu_is_a_clear_error(root, tiny_dir, capsys):
    import yaml

    from ptv2.cli import main

    p = root / "params.yaml"
    d = tiny_params(root, tiny_dir, method="qlora", epochs={"qlora": 1, "ptv2": 1})
    p.write_text(yaml.safe_dump(d))
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert main(["train", "--params", str(p), "--task", "sent"]) == 2
    err = capsys.readouterr().err
    assert "qlora' needs a CUDA GPU" in err and "Traceback" not in err


def test_ensemble_of_identical_prompts_equals_one(root, tiny_dir):
    cfg = _cfg(root, tiny_dir, "prompt_tuning")
    train_task(cfg, "sent", root / "m", report_splits=())
    one, tok, _ = load_model(root / "m/model")
    twin, _, _ = load_model(root / "m/model", backbone=one.backbone, tokenizer=tok)
    enc = tok(["good film", "bad plot", "the cat"], padding=True, return_tensors="pt")
    b = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    k = member_logits([one, twin], "sent", b)
    assert k.shape == (2, 3, 2)
    torch.testing.assert_close(k[0], one(b, "sent"), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k[1], k[0])
    assert torch.equal(combine(k), one(b, "sent").argmax(-1))


def test_majority_vote_and_mean_prob_on_crafted_logits():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]],   # member 1: class 0, class 1
                           [[0.0, 0.1], [0.0, 1.0]],   # member 2: class 1 (barely), class 1
                           [[0.0, 0.1], [3.0, 0.0]]])  # member 3: class 1 (barely), class 0
    assert combine(logits, "vote").tolist() == [1, 1]
    assert combine(logits, "mean_prob").tolist() == [0, 1]  # member 1's confidence wins row 0
    with pytest.raises(ValueError):
        combine(logits, "max")


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_wrapping_a_backbone_in_lora_warns_of_nothing(tiny, method):
    """Regression (session 37): every LoRA run's log carried transformers' FutureWarning "`is_gradient_checkpointing`
    is deprecated", raised by peft reading that property while wrapping the backbone."""
    import warnings

    from ptv2.model.lora import wrap

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        wrapped = wrap(tiny[0], method, r=2, alpha=4, dropout=0.0, targets=["query", "value"], total_steps=20)
    assert any("lora_" in n for n, p in wrapped.named_parameters() if p.requires_grad)
    assert not [str(w.message) for w in seen if issubclass(w.category, FutureWarning)]
