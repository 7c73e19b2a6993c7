import json

import pytest
import torch

from helpers import tiny_params, train_task
from ptv2.training.artifacts import WEIGHTS, read_adapter
from ptv2.training.build import load_model
from ptv2.config import config_from_dict
from ptv2.errors import ArtifactError
from ptv2.training.inference import evaluate_saved, predict_texts


def test_train_tiny_end_to_end_learns_and_saves(root, tiny_dir):
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 6, "finetune": 6}, lr={"ptv2": 3e-2, "finetune": 1e-3}))
    run = train_task(cfg, "sent", root / "out")
    assert run.metrics["dev"]["sent"]["accuracy"] >= 85.0  # separable task
    assert run.trainable / run.total < 0.2
    m = json.loads((root / "out/metrics.json").read_text())
    # epoch 0: heads fitted on the untrained features (LP-FT), then 6 training epochs
    assert m["best_epoch"] == run.record["best_epoch"] and [h["epoch"] for h in m["history"]] == list(range(7))
    assert m["history"][0]["train_loss"] is None and "fitted_heads" in m["history"][0]
    assert (root / "out/model" / WEIGHTS).stat().st_size < 100_000
    again = evaluate_saved(cfg, root / "out/model", "sent", "dev")
    assert again == pytest.approx(run.metrics["dev"]["sent"])
    pred = predict_texts(root / "out/model", ["the movie was great", "the plot was awful"], batch_size=2)
    assert [p["label"] for p in pred] == ["1", "0"] and all(0.5 < p["score"] <= 1 for p in pred)


@pytest.mark.parametrize("task", ["pair", "reg", "mc", "ner"])
def test_each_task_type_trains_and_evaluates(root, tiny_dir, task):
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1}))
    run = train_task(cfg, task, root / "runs" / task, report_splits=())
    assert set(run.metrics["val"][task]) == set(cfg.task(task).metrics)


def test_artifact_round_trip_is_exact(root, tiny_dir):
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1}))
    train_task(cfg, "sent", root / "out", report_splits=())
    state, _ = read_adapter(root / "out/model")
    model, _, _ = load_model(root / "out/model")
    for k, v in model.trainable_state().items():
        assert torch.equal(v, state[k]), k


def test_tampered_artifact_is_refused(root, tiny_dir):
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1}))
    train_task(cfg, "sent", root / "out", report_splits=())
    w = root / "out/model" / WEIGHTS
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_model(root / "out/model")


def test_killed_run_resumes_to_the_same_result(root, tiny_dir, monkeypatch):
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 3, "finetune": 3}))
    ref = train_task(cfg, "sent", root / "ref", report_splits=())
    from ptv2.training import loop as train_mod

    orig, calls = train_mod._run_epoch, {"n": 0}

    def dies_in_epoch_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if killed mid-epoch
        return orig(*a, **k)

    monkeypatch.setattr(train_mod, "_run_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_task(cfg, "sent", root / "part", report_splits=())
    ck = root / "part/checkpoint/state.json"
    assert json.loads(ck.read_text())["state"]["epoch"] == 2
    monkeypatch.setattr(train_mod, "_run_epoch", orig)
    resumed = train_task(cfg, "sent", root / "part", report_splits=())
    assert resumed.record["epochs_run"] == 3
    assert [h["val_score"] for h in resumed.history] == pytest.approx([h["val_score"] for h in ref.history])
    a, _ = read_adapter(root / "ref/model")
    b, _ = read_adapter(root / "part/model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_a_model_whose_backbone_files_changed_since_training_is_refused(root, tiny_dir, tmp_path):
    """Regression (session 39): a model folder names its backbone and holds only its prompt and heads; weights
    replaced behind that name (a backbone folder retrained in place, an upgraded package) loaded silently under
    the old prompt, answering wrongly, and a finished run was reused as if trained on them. The spec records the
    backbone files' sha256; loading checks it, and the run key holds it."""
    import shutil

    from safetensors.torch import load_file, save_file

    bb = tmp_path / "backbone"
    shutil.copytree(tiny_dir, bb)
    cfg = config_from_dict(tiny_params(root, bb, epochs={"ptv2": 1, "finetune": 1}))
    first = train_task(cfg, "sent", root / "out", report_splits=())
    load_model(root / "out/model")  # unchanged: loads
    weights = load_file(str(bb / "model.safetensors"))
    name = sorted(weights)[0]
    save_file({**weights, name: weights[name] + 0.5}, str(bb / "model.safetensors"))
    with pytest.raises(ArtifactError, match=r"out/model: trained on backbone .*whose files have changed since"):
        load_model(root / "out/model")
    again = train_task(cfg, "sent", root / "out", report_splits=())  # not reused: trained on these weights
    assert again.record["key"] != first.record["key"]
    load_model(root / "out/model")


@pytest.mark.parametrize("record", ["{not json", "[1, 2]", "null"])
def test_a_finished_run_is_reused_unless_its_record_is_damaged(root, tiny_dir, caplog, record):
    """A finished run is reused (its model untouched); regression (session 35): a damaged metrics.json beside it
    was a JSONDecodeError / AttributeError traceback on the rerun; now the run is trained again and rewrites it."""
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1}))
    first = train_task(cfg, "sent", root / "out", report_splits=())
    weights = root / "out/model/adapter.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert train_task(cfg, "sent", root / "out", report_splits=()).record == first.record
    assert weights.stat().st_mtime_ns == stamp  # reused: not trained again
    (root / "out/metrics.json").write_text(record)
    with caplog.at_level("WARNING", logger="ptv2.training.driver"):
        again = train_task(cfg, "sent", root / "out", report_splits=())
    assert "metrics.json" in caplog.text and "the run is trained again" in caplog.text
    assert again.record["key"] == first.record["key"]
    assert json.loads((root / "out/metrics.json").read_text())["key"] == first.record["key"]


@pytest.mark.parametrize("damage", ["adapter.safetensors", "adapter_config.json", "manifest.json"])
def test_a_finished_run_whose_model_is_damaged_is_trained_again_to_the_same_model(root, tiny_dir, caplog, damage):
    """Regression (session 36): a finished run's damaged model folder was reused as it was (`ptv2 transfer` adapted
    from it: "checksum mismatch ...; retrain or restore it", naming no way to retrain), and training it again
    resumed the finished checkpoint, whose end reads the damaged folder back. Both now check the folder."""
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 2, "finetune": 2}))
    first = train_task(cfg, "sent", root / "out", report_splits=())
    weights = root / "out/model/adapter.safetensors"
    good = weights.read_bytes()
    target = root / "out/model" / damage
    if damage == "manifest.json":  # still a ptv2 model folder's manifest (so the rerun may replace it), wrong sum
        target.write_text(target.read_text().replace(json.loads(target.read_text())["files"]["adapter.safetensors"],
                                                     "0" * 64))
    else:
        target.write_bytes(target.read_bytes()[:50])
    with caplog.at_level("WARNING"):
        again = train_task(cfg, "sent", root / "out", report_splits=())
    assert "holds a damaged model" in caplog.text and "the run is trained again" in caplog.text
    assert f"checkpoint {root / 'out/checkpoint'} continues a model folder that is damaged" in caplog.text
    assert again.record["key"] == first.record["key"] and weights.read_bytes() == good
    read_adapter(root / "out/model")  # whole again


@pytest.mark.parametrize("damage", ["weights truncated", "optim.pt missing", "state.json not JSON"])
def test_a_damaged_checkpoint_is_dropped_and_the_run_starts_fresh(root, tiny_dir, monkeypatch, caplog, damage):
    """Regression (session 35): a checkpoint was loaded unverified, so a damaged one (a truncated
    trainable.safetensors) ended the rerun in a SafetensorError traceback; now each file's sha256 is checked first
    and a damaged checkpoint is dropped with a warning: the run trains from the start to the same result."""
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 2, "finetune": 2}))
    ref = train_task(cfg, "sent", root / "ref", report_splits=())
    from ptv2.training import loop as train_mod

    orig = train_mod._run_epoch
    monkeypatch.setattr(train_mod, "_run_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 1: the checkpoint holds step 0
        train_task(cfg, "sent", root / "part", report_splits=())
    monkeypatch.setattr(train_mod, "_run_epoch", orig)
    ck = root / "part/checkpoint"
    if damage == "weights truncated":
        (ck / "trainable.safetensors").write_bytes((ck / "trainable.safetensors").read_bytes()[:100])
    elif damage == "optim.pt missing":
        (ck / "optim.pt").unlink()
    else:
        (ck / "state.json").write_text("{not json")
    with caplog.at_level("WARNING", logger="ptv2.training.checkpoint"):
        again = train_task(cfg, "sent", root / "part", report_splits=())
    assert f"checkpoint {ck} is damaged" in caplog.text
    assert [h["val_score"] for h in again.history] == pytest.approx([h["val_score"] for h in ref.history])


def test_a_checkpoint_whose_optimizer_groups_do_not_fit_starts_fresh(root, tiny_dir, monkeypatch, caplog):
    # regression (session 38): a regression head's parameters got AdamW groups of their own; a checkpoint saved
    # with other groups (another version's) ended the resumed run in optimizer.load_state_dict's ValueError
    from ptv2.training import loop as train_mod

    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 2, "finetune": 2}))
    ref = train_task(cfg, "reg", root / "ref", report_splits=())
    orig = train_mod._run_epoch
    monkeypatch.setattr(train_mod, "_run_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 1: the checkpoint holds step 0 and three groups
        train_task(cfg, "reg", root / "part", report_splits=())
    monkeypatch.setattr(train_mod, "_run_epoch", orig)
    real = train_mod.param_groups
    monkeypatch.setattr(train_mod, "param_groups", lambda core, sd, lr, wd: real(core, dict.fromkeys(sd, 1.0), lr, wd))
    with caplog.at_level("WARNING", logger="ptv2.training.checkpoint"):
        again = train_task(cfg, "reg", root / "part", report_splits=())
    assert f"checkpoint {root / 'part/checkpoint'} does not fit this run's optimizer" in caplog.text
    assert len(again.history) == len(ref.history) == 3


@pytest.mark.parametrize("omp, num_threads, want", [(None, 0, 1), ("3", 0, None), (None, 2, 2)])
def test_training_threads_follow_a_cpu_quota_unless_told(root, tiny_dir, monkeypatch, caplog, omp, num_threads,
                                                          want):
    """Regression: torch sizes its pool to the cores, blind to a cgroup's CPU quota (a container's --cpus, a
    Kubernetes limit), so training there ran more threads than the quota pays for. With train.num_threads 0 and no
    OMP_NUM_THREADS, a quota of fewer CPUs sets torch's threads; either setting wins over it (an OMP_NUM_THREADS
    above the process's CPUs is said)."""
    from ptv2.training import loop

    threads = torch.get_num_threads()
    monkeypatch.setattr(loop, "quota_threads", lambda: 1)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    try:
        torch.set_num_threads(4)
        cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1}, num_threads=num_threads))
        with caplog.at_level("WARNING"):
            train_task(cfg, "sent", root / f"threads-{omp}-{num_threads}", report_splits=())
        assert torch.get_num_threads() == (4 if want is None else want)
        said = "OMP_NUM_THREADS=3 runs more torch threads than the 1 CPU(s) this process has" in caplog.text
        assert said == (omp == "3")
    finally:
        torch.set_num_threads(threads)


def test_a_val_split_too_small_for_the_paired_test_is_said(root, tiny_dir, caplog):
    """Regression: with 3 val rows no paired test reaches select_alpha 0.1 (its smallest p is about 1/8), so step 0
    was kept whatever the training did, silently; the run now says so and what to change."""
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1}, val_max=3))
    with caplog.at_level("WARNING"):
        run = train_task(cfg, "sent", root / "tiny-val", report_splits=())
    assert run.record["best_epoch"] == 0
    assert ("val has 3 example(s): no paired test on them reaches p <= 0.1 (its smallest is about 1/2^3 = 0.125), so "
            "step 0 stays the model whatever the training does") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        train_task(config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1})), "sent",
                   root / "enough-val", report_splits=())
    assert "no paired test" not in caplog.text


def test_finetune_method_runs_same_loop(root, tiny_dir):
    cfg = config_from_dict(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1}, method="finetune"))
    run = train_task(cfg, "sent", root / "ft", report_splits=())
    assert run.trainable == run.total
    state, spec = read_adapter(root / "ft/model")
    assert spec.method == "finetune" and any(k.startswith("backbone.") for k in state)


def test_optimizer_uses_the_configured_methods_rate_even_when_the_model_trains_as_another(root, tiny_dir, monkeypatch):
    """Regression: qlora builds a LoRA model (model.method 'lora'); fit read lr.lora while the run key
    hashed lr.qlora. Both now read fingerprint.learning_rate."""
    import dataclasses

    from ptv2.training import loop
    from ptv2.training.fingerprint import run_key

    cfg = config_from_dict(tiny_params(root, tiny_dir, method="lora", epochs={"lora": 1, "qlora": 1},
                                       lr={"lora": 0.5, "qlora": 0.0123}))
    seen = []
    real = torch.optim.AdamW
    monkeypatch.setattr(loop.torch.optim, "AdamW",
                        lambda groups, **kw: seen.append(groups[0]["lr"]) or real(groups, **kw))
    as_qlora = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, method="qlora"))
    # what build.model_from_spec does for qlora off a GPU-less test: a LoRA model under the qlora config
    monkeypatch.setattr("ptv2.training.driver.check_device", lambda c: None)
    from ptv2.training import driver

    real_build = driver.model_from_spec
    monkeypatch.setattr(driver, "model_from_spec", lambda spec, *a, **k: real_build(
        dataclasses.replace(spec, method="lora"), *a, **k))
    train_task(as_qlora, "sent", root / "q", report_splits=())
    assert seen == [0.0123]
    bumped = dataclasses.replace(as_qlora, train=dataclasses.replace(as_qlora.train, lr={"lora": 0.5, "qlora": 0.02}))
    assert run_key(bumped, ["sent"]) != run_key(as_qlora, ["sent"])
    other = dataclasses.replace(as_qlora, train=dataclasses.replace(as_qlora.train, lr={"lora": 0.9, "qlora": 0.0123}))
    assert run_key(other, ["sent"]) == run_key(as_qlora, ["sent"])


def test_regression_training_does_not_depend_on_the_labels_scale(root, tiny_dir):
    # regression (session 38): the head predicts in label units, so its MSE, AdamW's absolute steps and its weight
    # decay scaled with the labels: labels on a scale of 1e-4 exploded (loss 1e5, val -99.9 pearson) where the same
    # labels on 0..5 trained; labels near 5e8 gave a loss of 1e12, which outweighed every other task of a mixture
    import random

    rng = random.Random(0)
    rows = [(k, " ".join(["good"] * k + ["the"] * (5 - k)), rng.random())
            for k in (rng.randint(0, 5) for _ in range(150))]
    task = {"type": "regression", "format": "tsv", "header": False, "columns": ["text", "y"], "text_a": "{text}",
            "label": "y", "metrics": ["pearson"], "files": {"train": "num/train.tsv"}}
    (root / "num").mkdir()
    runs = {}
    for scale, shift in ((1.0, 0.0), (1e-4, 0.0), (1e4, 3e5)):
        (root / "num/train.tsv").write_text("".join(f"{t}\t{(k + 0.3 * u) * scale + shift!r}\n" for k, t, u in rows))
        params = tiny_params(root, tiny_dir, epochs={"ptv2": 3}, weight_decay=0.1)
        cfg = config_from_dict({**params, "tasks": {**params["tasks"], "num": task}})
        runs[scale] = [(round(h["train_loss"], 3), round(h["val_score"], 1)) for h in
                       train_task(cfg, "num", root / f"num{scale}", report_splits=()).history if h["epoch"]]
    # the same losses (in units of the labels' variance) and val scores at every scale, up to the fitted head's
    # start (an L-BFGS fit on these near-collinear features lands apart along directions the rows barely see)
    for scale, history in runs.items():
        assert len(history) == 3 and all(loss < 0.5 for loss, _ in history), runs
        assert [val for _, val in history] == pytest.approx([val for _, val in runs[1.0]], abs=0.5), runs


def test_a_trained_epoch_replaces_step_0_only_when_the_paired_test_on_val_says_so(root, tiny_dir):
    """Regression (reports/frozen_bar_seeds.md): on CB's 25 val examples an epoch 3 examples above step 0
    was picked and lost to the frozen baseline on dev in 3 of 3 seeds. The p-value of each epoch against
    step 0 is recorded (``after_epoch`` keeps step 0 where none reaches the level: the test below). A level that
    test cannot reach with that many swaps is refused at load: it kept step 0 whatever the training did."""
    from ptv2.errors import ConfigError

    kw = dict(epochs={"ptv2": 4, "finetune": 4}, lr={"ptv2": 3e-2, "finetune": 1e-3}, select_samples=200,
              head_l2=[10.0])  # a step-0 head shrunk to chance: training beats it clearly
    free = train_task(config_from_dict(tiny_params(root, tiny_dir, select_alpha=1.0, **kw)), "sent", root / "a",
                      report_splits=())
    hist = free.history
    assert hist[0]["val_score"] < max(h["val_score"] for h in hist[1:])  # training did beat step 0 on val
    assert free.record["best_epoch"] > 0
    assert min(h["p_vs_step0"] for h in hist[1:]) < 0.05 and all(0 < h["p_vs_step0"] <= 1 for h in hist[1:])
    with pytest.raises(ConfigError, match=r"select_samples = 200 is not allowed: expected at least 999999 swaps: "
                                          r"with fewer, no p-value reaches select_alpha = 1e-06"):
        config_from_dict(tiny_params(root, tiny_dir, select_alpha=1e-6, **kw))
    worse = min(hist[1:], key=lambda h: h["val_score"])
    assert worse["val_score"] > hist[0]["val_score"] or worse["p_vs_step0"] == 1.0  # not above step 0: p = 1


def test_patience_counts_epochs_without_a_new_best_val_score_not_without_a_kept_epoch():
    """Regression (reports/sst2_start.md): SST-2's val rose 80.6 -> 80.0, 81.5, 81.6 with no epoch yet
    significant against step 0, and patience 3 stopped it; its 4th epoch was the first the paired test kept
    (82.0 at p 0.05, dev +3.5 after 6). Patience asks 'still learning?', selection 'better than the start?'."""
    from ptv2.training.loop import after_epoch

    state = {"best_score": 80.6, "top_score": 80.6, "best_epoch": 0, "bad_epochs": 0}
    kept = [after_epoch(state, e, s, p, 0.1, 3) for e, (s, p) in
            enumerate([(80.0, 1.0), (81.5, 0.18), (81.6, 0.12), (82.0, 0.05)], start=1)]
    assert kept == [False, False, False, True] and state["best_epoch"] == 4 and not state["stopped"]
    for e in (5, 6, 7):  # flat from here (at the top, then below it): three epochs with no new best, then stop
        assert not after_epoch(state, e, 81.9, 0.2, 0.1, 3)
    assert state["stopped"] and state["best_epoch"] == 4 and state["epoch"] == 7
    never = {"best_score": 1.0, "top_score": 1.0, "best_epoch": 0, "bad_epochs": 0}
    for e in range(1, 10):
        after_epoch(never, e, 0.5, 1.0, 0.1, 0)  # patience 0: never stops
    assert not never["stopped"] and never["bad_epochs"] == 9
    old = {"best_score": 2.0, "best_epoch": 0, "bad_epochs": 0}  # a checkpoint from before top_score resumes
    assert not after_epoch(old, 1, 2.5, 0.5, 0.1, 3) and old["top_score"] == 2.5 and old["bad_epochs"] == 0


class _ModelOnMeta(torch.nn.Module):
    """Stands in for a model on an accelerator: its weights live on the ``meta`` device, and its forward
    records the device of each batch it is given (returning CPU logits so the caller can finish)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2, device="meta"))
        self.task_types, self.seen = {"t": "classification"}, []

    def forward(self, batch, task):
        self.seen.append(batch["input_ids"].device.type)
        return torch.zeros(batch["input_ids"].shape[0], 2)


def test_evaluation_feeds_batches_on_the_models_own_device():
    """Regression (found on the lent H200): ``ptv2 train --set train.device=cuda`` trained, then its dev report
    fed the CUDA model CPU batches ("index is on cpu, different from other tensors on cuda:0"), exit 1."""
    from ptv2.training.evaluate import predict_logits

    model = _ModelOnMeta()
    feats = [{"input_ids": [2, 7, 3], "token_type_ids": [0, 0, 0], "label": 1},
             {"input_ids": [2, 3], "token_type_ids": [0, 0], "label": 0}]
    out = predict_logits(model, "t", feats, pad_id=0, batch_size=1)
    assert model.seen == ["meta", "meta"] and len(out) == 2
    predict_logits(model, "t", feats, pad_id=0, batch_size=2, device="cpu")  # an explicit device still wins
    assert model.seen[-1] == "cpu"


def test_classification_metrics_match_sklearn_whatever_ids_a_split_holds():
    # regression (session 28): f1 switched to macro-F1 when an array held an id above 1, so a 3-class task's F1
    # was binary on a split without the third class; mcc read a 3-class task as class 1 against class 0 only
    import numpy as np
    from sklearn.metrics import f1_score, matthews_corrcoef

    from ptv2.training.metrics import compute

    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        gold, pred = rng.integers(0, k, 200), rng.integers(0, k, 200)
        pred[:120] = gold[:120]  # a better-than-chance predictor
        got = compute(["mcc", "f1_macro"], pred, gold)
        assert got["mcc"] == pytest.approx(100 * matthews_corrcoef(gold, pred), abs=1e-9)
        assert got["f1_macro"] == pytest.approx(100 * f1_score(gold, pred, average="macro"), abs=1e-9)
        if k == 2:
            assert compute(["f1"], pred, gold)["f1"] == pytest.approx(100 * f1_score(gold, pred), abs=1e-9)
    three, two = np.array([0, 1, 2, 2, 1, 0]), np.array([0, 1, 1, 1, 0, 0])  # the same task, two splits
    assert compute(["f1_macro"], three, three)["f1_macro"] == compute(["f1_macro"], two, two)["f1_macro"] == 100.0
    assert compute(["f1"], two, 1 - two)["f1"] == 0.0 and compute(["mcc"], two, 1 - two)["mcc"] == -100.0
    assert compute(["mcc"], np.zeros(6, int), three)["mcc"] == 0.0  # a constant predictor: undefined, 0


def test_a_nan_prediction_scores_no_correlation():
    # regression (session 34): min(1.0, nan) is 1.0, so NaN predictions (a diverged model) read pearson 100.00
    import numpy as np

    from ptv2.training.metrics import compute

    gold = np.linspace(0, 5, 40)
    for pred in (np.full(40, np.nan), np.where(np.arange(40) == 3, np.nan, gold)):
        assert compute(["pearson", "spearman"], pred, gold) == {"pearson": 0.0, "spearman": 0.0}
    assert compute(["pearson"], gold, gold)["pearson"] == pytest.approx(100.0)
