import collections
import dataclasses

import pytest
import torch

from helpers import head, prompted, tiny_params
from ptv2.training.artifacts import read_adapter, read_spec, weights_sha
from ptv2.training.build import init_from_pretrained, model_from_spec, spec_from_config
from ptv2.config import config_from_dict
from ptv2.data.mixture import mixture_planner, mixture_rates
from ptv2.errors import ArtifactError, ConfigError
from ptv2.training.driver import adapt, pretrain, train


def test_rates_per_strategy():
    sizes = {"a": 1000, "b": 100, "c": 10}
    p = mixture_rates(sizes, "proportional", 0, 1.0, {})
    assert p["a"] == pytest.approx(1000 / 1110)
    capped = mixture_rates(sizes, "proportional", 100, 1.0, {})
    assert capped["a"] == pytest.approx(capped["b"]) == pytest.approx(100 / 210)
    t = mixture_rates(sizes, "temperature", 0, 2.0, {})
    assert t["c"] > p["c"] and t["a"] < p["a"]
    assert mixture_rates(sizes, "temperature", 0, 1.0, {}) == pytest.approx(p)
    u = mixture_rates(sizes, "uniform", 0, 1.0, {"a": 2.0})
    assert u == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    # regression (session 34): (w * n) ** (1/T) overflowed a float at T = 0.001, as did huge weights (a traceback)
    assert mixture_rates(sizes, "temperature", 0, 0.001, {}) == pytest.approx({"a": 1.0, "b": 0.0, "c": 0.0})
    assert mixture_rates(sizes, "proportional", 0, 1.0, {t: 1e308 for t in sizes}) == pytest.approx(p)


@pytest.mark.parametrize("strategy,kw", [("proportional", {"cap": 300}), ("temperature", {"temperature": 3.0}),
                                         ("uniform", {})])
def test_sampled_proportions_match_rates_and_are_seeded(strategy, kw):
    lengths = {"a": [5] * 1000, "b": [7] * 100, "c": [3] * 30}
    rates = mixture_rates({t: len(v) for t, v in lengths.items()}, strategy, **{"cap": 0, "temperature": 1.0,
                                                                               "weights": {}, **kw})
    plan = mixture_planner(lengths, 4, rates, 4000)
    p1 = plan(torch.Generator().manual_seed(1))
    assert p1 == plan(torch.Generator().manual_seed(1))
    assert all(len(batch) == 1 for batch in p1)  # task-homogeneous: one part per batch
    counts = collections.Counter(t for [(t, _)] in p1)
    for t, r in rates.items():
        assert counts[t] / 4000 == pytest.approx(r, abs=0.03)
    for [(t, idx)] in p1[:200]:  # valid row ids
        assert all(0 <= i < len(lengths[t]) for i in idx)


def test_mixed_batches_sample_rows_by_rate_and_cycle_each_task():
    lengths = {"a": [5] * 50, "b": [7] * 20, "c": [3] * 9}
    rates = mixture_rates({t: len(v) for t, v in lengths.items()}, "uniform", 0, 1.0, {})
    plan = mixture_planner(lengths, 8, rates, 600, mixed=True)
    p1 = plan(torch.Generator().manual_seed(3))
    assert p1 == plan(torch.Generator().manual_seed(3)) != plan(torch.Generator().manual_seed(4))
    assert all(sum(len(idx) for _, idx in batch) == 8 for batch in p1)
    assert sum(len(batch) > 1 for batch in p1) > 500  # most batches hold rows of several tasks
    rows = collections.Counter()
    for batch in p1:
        assert len({t for t, _ in batch}) == len(batch)  # one part per task present
        for t, idx in batch:
            assert all(0 <= i < len(lengths[t]) for i in idx)
            rows[t] += len(idx)
    for t in lengths:
        assert rows[t] / (600 * 8) == pytest.approx(1 / 3, abs=0.03)
    first_c = [i for batch in p1 for t, idx in batch if t == "c" for i in idx][:9]
    assert sorted(first_c) == list(range(9))  # each pass over a task sees every row once


def test_mixed_batch_step_equals_the_row_weighted_sum_of_its_parts(root, tiny_dir):
    """A mixed batch's gradient is the row-weighted mean of its tasks' losses (one optimizer step)."""
    from ptv2.training.loop import _run_epoch
    from ptv2.data.collate import Collator
    from ptv2.data.tasks import load_task_data
    from ptv2.training.splits import encode
    from ptv2.training.build import head_spec
    from ptv2.model.heads import task_loss
    from ptv2.training.units import label_sd

    cfg = _cfg(root, tiny_dir)
    data = {t: load_task_data(cfg, t) for t in ("sent", "reg")}
    model, tok = model_from_spec(spec_from_config(cfg, {t: head_spec(cfg, d) for t, d in data.items()}), seed=0)
    model.eval()  # no dropout: the two computations must match exactly
    train = {t: encode(d, "train", tok, 32, "cross") for t, d in data.items()}
    parts = [("sent", [0, 1, 2]), ("reg", [0])]
    coll = {t: Collator(tok.pad_token_id, model.task_types[t]) for t in train}
    expected = 0.0
    sd = label_sd(model, train)  # a regression MSE counts in units of its labels' variance
    assert sd["sent"] == 1.0 and sd["reg"] > 0.1
    for t, idx in parts:
        b = coll[t]([train[t].feats[j] for j in idx])
        expected = expected + task_loss(model.task_types[t], model(b, t), b["labels"]) / sd[t] ** 2 * len(idx) / 4
    expected.backward()
    want = model.prompt.prefix.grad.clone()
    model.zero_grad()

    class Acc:  # the accelerate surface _run_epoch uses, minus the optimizer step
        device, process_index, num_processes, is_main_process = torch.device("cpu"), 0, 1, True
        unwrap_model = staticmethod(lambda m: m)
        backward = staticmethod(lambda loss: loss.backward())

    class NoStep:
        def step(self): pass
        def zero_grad(self, set_to_none=True): pass
    model.train = lambda mode=True: model  # keep eval mode (dropout off) inside _run_epoch
    _run_epoch(model, NoStep(), NoStep(), Acc(), [parts], train, coll, cfg.train, 1, 1, None, False,
               {t: s * s for t, s in sd.items()})
    assert torch.allclose(model.prompt.prefix.grad, want, atol=1e-6)


def test_a_low_temperature_mixture_trains_and_names_the_tasks_it_starves(root, tiny_dir, caplog):
    import logging

    cfg = _cfg(root, tiny_dir, strategy="temperature", temperature=0.001, weights={"sent": 2.0})
    with caplog.at_level(logging.WARNING, logger="ptv2"):
        pretrain(cfg)
    rates = read_spec(root / "pre/model").mixture["rates"]
    assert rates["sent"] == pytest.approx(1.0)
    for t in ("pair", "reg"):  # 12 batches x 2 epochs, none of them theirs
        assert f"mixture: task {t} is drawn for about 0 of 24 batches in 2 epochs" in caplog.text
    assert "task sent is drawn" not in caplog.text


def test_pretrain_with_mixed_batches_runs_and_is_recorded(root, tiny_dir, capsys):
    cfg = _cfg(root, tiny_dir, batching="mixed")
    run = pretrain(cfg)
    assert run.record["epochs_run"] == 2 and set(run.metrics["val"]) == {"sent", "pair", "reg"}
    assert read_spec(root / "pre/model").mixture["batching"] == "mixed"
    # a multi-task model answered `predict` / `evaluate` without --task as its first task, silently (session 25)
    import yaml

    from ptv2.cli import main

    (root / "p.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    for cmd in (["predict", "--text", "good film"], ["evaluate"]):
        assert main([cmd[0], "--params", str(root / "p.yaml"), "--model", str(root / "pre/model"), *cmd[1:]]) == 2
        assert "this model serves ['pair', 'reg', 'sent']: pass --task" in capsys.readouterr().err
    assert main(["predict", "--params", str(root / "p.yaml"), "--model", str(root / "pre/model"), "--task", "sent",
                 "--text", "good film"]) == 0


def _cfg(root, tiny_dir, **pre):
    d = tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1}, head_init="random")  # these test training
    d["pretrain"] = {**d["pretrain"], "tasks": ["sent", "pair", "reg"], "epochs": 2, "batches_per_epoch": 12,
                     "out_dir": str(root / "pre"), **pre}
    return config_from_dict(d)


def test_heads_get_gradients_only_from_their_task(root, tiny_dir, tiny):
    cfg = _cfg(root, tiny_dir)
    backbone, tok = tiny
    model = prompted(backbone, {"sent": ("classification", 2), "reg": ("regression", 1)}, prompt_length=2,
                     prompt_dropout=0.0, head_dropout=0.0)
    enc = tok(["good film", "bad film"], padding=True, return_tensors="pt")
    b = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    model(b, "sent").sum().backward()
    assert all(p.grad is not None for p in model.heads["sent"].parameters())
    assert all(p.grad is None for p in model.heads["reg"].parameters())
    assert model.prompt.prefix.grad is not None
    assert cfg.pretrain.tasks == ["sent", "pair", "reg"]


def test_pretrain_then_adapt_end_to_end(root, tiny_dir, monkeypatch):
    import ptv2.model.prompted as prompted_module

    cfg = _cfg(root, tiny_dir)
    assert cfg.prompt.init == "quiet"
    starts: list[int] = []
    real = prompted_module.query_means
    monkeypatch.setattr(prompted_module, "query_means", lambda *a: starts.append(1) or real(*a))
    run = pretrain(cfg)
    assert starts  # the pretrained prompt started quiet
    assert run.record["best_epoch"] >= 1 and set(run.metrics["val"]) == {"sent", "pair", "reg"}
    state, meta = read_adapter(root / "pre/model")
    assert set(meta.tasks) == {"sent", "pair", "reg"}
    assert {k.split(".")[1] for k in state if k.startswith("heads.")} == {"sent", "pair", "reg"}
    mix = read_spec(root / "pre/model").mixture
    assert mix["tasks"] == ["sent", "pair", "reg"] and sum(mix["rates"].values()) == pytest.approx(1)

    # adaptation starts exactly from the pretrained prompt (+ head for a mixture task)
    model, _ = model_from_spec(meta.with_tasks({"sent": meta.tasks["sent"]}), seed=123)
    keys = init_from_pretrained(model, root / "pre/model", "sent")
    assert any(k.startswith("heads.sent") for k in keys)
    for k in keys:
        assert torch.equal(model.state_dict()[k], state[k])

    starts.clear()
    run = adapt(cfg, "sent")  # task in the mixture
    assert "dev" in run.metrics
    held_out = adapt(cfg, "mc", out_dir=root / "adapt-mc")  # a task left out of the mixture
    assert "val" in held_out.metrics
    # regression: adapting measured a quiet start (a pass over 64 rows) that the copied prompt then replaced
    assert not starts


def test_a_pretrained_prompt_that_kept_step0_is_not_a_start(root, tiny_dir, monkeypatch):
    """Pretraining that kept its step 0 taught its prompt nothing: adaptation starts from the task's own quiet
    start with the task's own quiet_margin (as `ptv2 train` does), and the pretrained folder must still fit."""
    import json

    import ptv2.model.prompts as prompts_module

    d = tiny_params(root, tiny_dir, epochs={"ptv2": 1})
    d["pretrain"] = {**d["pretrain"], "tasks": ["sent", "pair"], "epochs": 1, "batches_per_epoch": 4,
                     "out_dir": str(root / "pre")}
    d["tasks"]["sent"] = {**d["tasks"]["sent"], "quiet_margin": 2.5}
    cfg = config_from_dict(d)
    assert cfg.prompt_for(["sent"]).quiet_margin == 2.5 and cfg.prompt_for(["sent", "pair"]) == cfg.prompt
    with pytest.raises(ConfigError, match="quiet_margin"):
        config_from_dict({**d, "tasks": {**d["tasks"], "pair": {**d["tasks"]["pair"], "quiet_margin": 0}}})
    pretrain(cfg)
    record = root / "pre/metrics.json"
    learned = {**json.loads(record.read_text()), "best_epoch": 1}
    record.write_text(json.dumps(learned))
    copied = adapt(cfg, "sent", root / "pre/model", root / "a1")
    assert copied.record["start"] == "pretrained" and copied.record["init_from"] == str(root / "pre/model")
    assert read_spec(root / "a1/model").adapted_from["path"] == str(root / "pre/model")

    record.write_text(json.dumps({**learned, "best_epoch": 0}))
    margins: list[float] = []
    real = prompts_module.DeepPrompt.start_quiet
    monkeypatch.setattr(prompts_module.DeepPrompt, "start_quiet",
                        lambda self, q, margin, g: margins.append(margin) or real(self, q, margin, g))
    own = adapt(cfg, "sent", root / "pre/model", root / "a2")
    assert own.record["start"] == "own (pretraining kept its step 0)" and own.record["init_from"] == ""
    assert margins == [2.5]  # the task's own quiet start, measured on its own rows
    assert read_spec(root / "a2/model").adapted_from == {} and read_spec(root / "a2/model").prompt.quiet_margin == 2.5
    other = config_from_dict({**d, "prompt": {**d["prompt"], "length": d["prompt"]["length"] + 2}})
    with pytest.raises(ArtifactError, match="other prompt settings"):  # not a start, but still checked
        adapt(other, "sent", root / "pre/model", root / "a3")


def test_adapt_refuses_a_different_prompt_shape(root, tiny_dir):
    cfg = _cfg(root, tiny_dir)
    pretrain(cfg)
    d = tiny_params(root, tiny_dir)
    other = config_from_dict({**d, "prompt": {**d["prompt"], "length": 6}})
    with pytest.raises(ArtifactError, match=f"other prompt settings \\(prompt.length {d['prompt']['length']} there, 6 "
                                            f"here\\)"):
        adapt(other, "sent", root / "pre/model", root / "x")
    # session 45: a frozen baseline's model (P = 0) as the start said "other prompt settings (['prompt.length'])"
    from ptv2.training.driver import train

    train(cfg, ["sent"], root / "frozen", frozen=True)
    with pytest.raises(ArtifactError, match=r"has no prompt to start from \(prompt.length 0 there, 4 here: a frozen "
                                            r"baseline\?\): adapt from a pretrained prompt"):
        adapt(cfg, "sent", root / "frozen/model", root / "y")


def test_pretrain_needs_tasks_and_known_names(root, tiny_dir):
    d = tiny_params(root, tiny_dir)
    with pytest.raises(ConfigError, match="pretrain.tasks"):
        config_from_dict({**d, "pretrain": {**d["pretrain"], "tasks": []}})
    with pytest.raises(ConfigError, match="a task defined under 'tasks:'"):
        config_from_dict({**d, "pretrain": {**d["pretrain"], "tasks": ["nope"]}})


def test_adapt_with_nothing_pretrained_says_to_pretrain(root, tiny_dir):
    """Regression (session 25): `ptv2 adapt --task T` before any pretraining said the default folder "is not a
    ptv2 model folder …; train one with 'ptv2 train'" (the wrong command)."""
    from ptv2.errors import ArtifactError

    cfg = _cfg(root, tiny_dir, out_dir=str(root / "never-pretrained"))
    with pytest.raises(ArtifactError, match=r"no pretrained prompt at .*never-pretrained/model.*run 'ptv2 pretrain'"):
        adapt(cfg, "sent", out_dir=root / "a")
    assert not (root / "a").exists()


def test_transfer_table_on_tiny(root, tiny_dir):
    from ptv2.experiments.transfer import transfer

    cfg = _cfg(root, tiny_dir)
    out = root / "multitask.md"
    transfer(cfg, ["sent", "pair"], ["pair"], [1, 2], out, root / "work")
    md = out.read_text()
    rows = [[c.strip() for c in line.split("|")[1:3]] for line in md.splitlines() if line.startswith("|")]
    assert ["sent", "accuracy"] in rows and ["pair", "accuracy"] in rows and "average (b) − (a)" in md
    # the header names the method (session 37: a table of train.method lora read "prompt length 4" and no method)
    assert f"Backbone `{tiny_dir}`, method `ptv2`, prompt length 4, seeds [1, 2]" in md
    from ptv2.experiments.transfer import trained_with

    lora = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, method="lora", epochs={"lora": 1}))
    assert trained_with(lora) == "method `lora`"
    # the table's plot (session 30: transfer wrote tables only), linked from it
    assert "![transfer](multitask.png)" in md and out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    import json

    res = json.loads(out.with_suffix(".json").read_text())
    assert len(res["sent"]["a"]) == 2 and len(res["sent"]["b"]) == 2 and len(res["sent"]["c"]) == 1
    assert res["sent"]["d"] == [] and len(res["pair"]["d"]) == 2  # only held-out tasks get (d)
    _, held = read_adapter(root / "work/pretrain_without_pair/model")
    assert held.mixture["tasks"] == ["sent", "reg"]  # (d) never saw the held-out task
    mtime = (root / "work/sent/a_seed1/metrics.json").stat().st_mtime
    b_mtime = (root / "work/sent/b_seed1/metrics.json").stat().st_mtime
    transfer(cfg, ["sent", "pair"], ["pair"], [1, 2], out, root / "work")  # finished runs are reused
    assert (root / "work/sent/a_seed1/metrics.json").stat().st_mtime == mtime
    assert (root / "work/sent/b_seed1/metrics.json").stat().st_mtime == b_mtime
    # regression: a pretraining rerun with other settings used to leave the adapted (b) runs stale
    # (they were keyed by the pretrained folder's path); now they are keyed by its weights
    transfer(_cfg(root, tiny_dir, strategy="uniform"), ["sent"], [], [1], out, root / "work")
    assert (root / "work/sent/a_seed1/metrics.json").stat().st_mtime == mtime
    assert (root / "work/sent/b_seed1/metrics.json").stat().st_mtime > b_mtime
    new_pre = weights_sha(root / "work/pretrain_all/model")
    b_meta = read_spec(root / "work/sent/b_seed1/model")
    assert b_meta.adapted_from["weights_sha256"] == new_pre  # not resumed from the stale checkpoint


def test_transfer_holds_each_task_out_in_turn(root, tiny_dir):
    from ptv2.experiments.transfer import transfer

    cfg = _cfg(root, tiny_dir)
    transfer(cfg, ["sent", "pair"], ["sent", "pair"], [1], root / "t.md", root / "w")
    for h, rest in (("sent", ["pair", "reg"]), ("pair", ["sent", "reg"])):
        assert read_adapter(root / f"w/pretrain_without_{h}/model")[1].mixture["tasks"] == rest
    import json

    res = json.loads((root / "t.json").read_text())
    assert len(res["sent"]["d"]) == 1 and len(res["pair"]["d"]) == 1
    # a held-out task outside the mixture: its (b) already is a held-out transfer, nothing is pretrained for it
    small = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, tasks=["sent", "reg"]))
    transfer(small, ["pair"], ["pair"], [1], root / "t2.md", root / "w2")
    assert not (root / "w2/pretrain_without_pair").exists()
    assert json.loads((root / "t2.json").read_text())["pair"]["d"] == []
    # regression (session 36): the mixture's only task held out left (d) nothing to pretrain on, found after
    # pretrain_all had run ("no task to train: name one (--task)"); refused before any run
    alone = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, tasks=["sent"]))
    with pytest.raises(ConfigError, match=r"--held-out sent: pretrain.tasks \['sent'\] without it leaves no mixture"):
        transfer(alone, ["sent"], ["sent"], [1], root / "t3.md", root / "w3")
    assert not (root / "w3").exists()


def test_task_factors_pretrain_fold_into_the_adapted_prompt(root, tiny_dir, tiny):
    """Per-task low-rank factors: start as the identity (W = 1), train per task, are saved, and a
    mixture task adapts from shared ∘ W_task; a task outside the mixture from the shared prompt."""
    cfg = _cfg(root, tiny_dir, task_rank=2)
    fresh = prompted(tiny[0], {"sent": ("classification", 2), "reg": ("regression", 1)}, prompt_length=2, task_rank=2)
    assert torch.equal(fresh.task_prompt("sent"), fresh.prompt.prefix)  # identity at init
    pretrain(cfg)
    state, meta = read_adapter(root / "pre/model")
    assert meta.task_rank == 2 and state["task_factors.u.sent"].shape == (4, 2)
    w_sent = state["task_factors.u.sent"] @ state["task_factors.v.sent"]
    assert not torch.allclose(w_sent, torch.ones_like(w_sent))  # the factor trained
    assert not torch.allclose(w_sent, state["task_factors.u.reg"] @ state["task_factors.v.reg"])

    one = dataclasses.replace(meta, tasks={"sent": meta.tasks["sent"]}, task_rank=0)
    model, _ = model_from_spec(one, seed=5)
    init_from_pretrained(model, root / "pre/model", "sent")
    assert model.task_factors is None
    assert torch.allclose(model.prompt.prefix, state["prompt.prefix"] * w_sent)
    other = one.with_tasks({"mc": head([], "multiple_choice")})
    m2, _ = model_from_spec(other, seed=5)
    init_from_pretrained(m2, root / "pre/model", "mc")
    assert torch.equal(m2.prompt.prefix, state["prompt.prefix"])


def test_task_factors_need_plain_deep_prompts(root, tiny_dir):
    d = tiny_params(root, tiny_dir, method="prefix_tuning", epochs={"prefix_tuning": 1})
    d["pretrain"] = {**d["pretrain"], "tasks": ["sent"], "task_rank": 1}
    with pytest.raises(ConfigError, match="pretrain.task_rank = 1 needs train.method ptv2"):
        pretrain(config_from_dict(d))


def test_adapt_refuses_another_method_and_copies_lora_weights(root, tiny_dir):
    d = tiny_params(root, tiny_dir, method="lora", epochs={"lora": 1, "ptv2": 1}, lr={"lora": 5e-2, "ptv2": 1e-2})
    d["pretrain"] = {**d["pretrain"], "tasks": ["sent", "pair"], "epochs": 1, "batches_per_epoch": 6,
                     "out_dir": str(root / "pre")}
    pretrain(config_from_dict(d))
    state, _ = read_adapter(root / "pre/model")
    run = adapt(config_from_dict(d), "sent", root / "pre/model", root / "a", )
    assert run.metrics["val"]
    d2 = {**d, "train": {**d["train"], "method": "ptv2"}}
    with pytest.raises(ArtifactError, match="pretrained with method 'lora', this run uses 'ptv2'"):
        adapt(config_from_dict(d2), "sent", root / "pre/model", root / "b")
    meta = read_spec(root / "pre/model")
    model, _ = model_from_spec(meta.with_tasks({"sent": meta.tasks["sent"]}), seed=9)
    keys = init_from_pretrained(model, root / "pre/model", "sent")
    lora_keys = [k for k in keys if "lora_" in k]
    assert lora_keys and all(torch.equal(model.state_dict()[k], state[k]) for k in lora_keys)


def test_a_mixture_fits_its_heads_on_at_most_its_cap_of_each_tasks_rows(root, tiny_dir):
    """Pretraining spent 3.2 of its 8.5 minutes fitting heads on every train row of six tasks, several
    times what its epochs sample (the cap); a single-task run still fits on all of its rows."""
    cfg = _cfg(root, tiny_dir, epochs=1, batches_per_epoch=1, cap=7)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, head_init="fit"))
    run = pretrain(cfg)
    fitted = run.record["history"][0]["fitted_heads"]
    sizes = run.record["mixture"]["sizes"]
    assert all(n > 7 for n in sizes.values())  # else the cap would not show
    assert {t: f["train_rows"] for t, f in fitted.items()} == {t: 7 for t in sizes}
    single = train(cfg, ["sent"], root / "single")
    assert single.record["history"][0]["fitted_heads"]["sent"]["train_rows"] == sizes["sent"]  # not capped


def test_a_normalised_mixture_is_adapted_normalised(root, tiny_dir):
    """backbone.normalize reaches the stored spec; a prompt pretrained with the heads reading normalised vectors
    is not adapted by a run whose heads read raw ones (its copied heads would read other features): one error
    naming the setting. Adapted with the same setting, the adapted model keeps it."""
    d = tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1})
    d["backbone"] = {**d["backbone"], "normalize": True}
    d["pretrain"] = {**d["pretrain"], "tasks": ["sent", "pair"], "epochs": 1, "batches_per_epoch": 2,
                     "out_dir": str(root / "pre_norm")}
    pretrain(config_from_dict(d))
    assert read_spec(root / "pre_norm/model").normalize is True
    raw = {**d, "backbone": {**d["backbone"], "normalize": False}}
    # session 45: the line names the values ("(['normalize'])" named the key alone)
    with pytest.raises(ArtifactError, match=r"pretrained with other prompt settings \(normalize True there, False "
                                            r"here\); adapt with the same settings in params.yaml$"):
        adapt(config_from_dict(raw), "sent", root / "pre_norm/model", root / "raw")
    adapt(config_from_dict(d), "sent", root / "pre_norm/model", root / "unit")
    assert read_spec(root / "unit/model").normalize is True


def test_the_pipeline_refuses_prefix_tuning_before_pretraining(root, tiny_dir):
    """Regression (session 37): `train.method: prefix_tuning` through `dvc repro` pretrained the mixture, then every
    adapt stage refused the folded prompt ("pretrained with method 'ptv2', this run uses 'prefix_tuning'"). The
    pretrain stage now refuses it first; `ptv2 pretrain` alone still pretrains it (adapted as ptv2)."""
    import yaml

    from ptv2.stages.pretrain import main

    d = tiny_params(root, tiny_dir, method="prefix_tuning", epochs={"prefix_tuning": 1}, lr={"prefix_tuning": 1e-2})
    d["prompt"]["reparam_hidden"] = 8
    d["pretrain"] = {**d["pretrain"], "epochs": 1, "batches_per_epoch": 2, "out_dir": str(root / "pre")}
    (root / "params.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=r"^train\.method = 'prefix_tuning': the pipeline adapts .* set train\.method "
                                          r"ptv2 with prompt\.reparam true"):
        main(["--params", str(root / "params.yaml"), "--metrics", str(root / "m.json")])
    assert not (root / "pre").exists() and not (root / "m.json").exists()
    pretrain(config_from_dict(d))  # on its own: what the adapt stages could not continue
    with pytest.raises(ArtifactError, match="pretrained with method 'ptv2', this run uses 'prefix_tuning'"):
        adapt(config_from_dict(d), "sent", root / "pre/model", root / "a")
