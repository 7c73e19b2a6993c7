import dataclasses

import pytest

from ptv2.release import gate
from ptv2.tracking import registry
from ptv2.tracking import store as tracking
from ptv2.evidence import agreement, baseline, paired_permutation
from ptv2.release.gate import Evidence, decide


def _acc(pred, gold):
    return 100.0 * sum(p == g for p, g in zip(pred, gold)) / len(gold)


def test_gate_decisions():
    ev = lambda **kw: Evidence(**{"metric": "accuracy", "challenger": 80.0,  # noqa: E731
                                  "baselines": {"trivial": (50.0, 0.001), "frozen": (70.0, 0.01)}, **kw})
    assert decide(ev(), 0.05).promoted  # beats both baselines, no champion yet
    d = decide(ev(challenger=49.5, baselines={"trivial": (50.0, 0.7), "frozen": (60.0, 1.0)}), 0.05)
    assert not d.promoted and "frozen baseline" in d.reason  # the stronger one is named first
    # beats the trivial baseline but not the frozen backbone: refused, and the tags record both
    d = decide(ev(challenger=76.0, baselines={"trivial": (50.0, 0.001), "frozen": (75.0, 0.4)}), 0.05)
    assert not d.promoted and "not better than the frozen baseline" in d.reason
    t = d.tags()
    assert t["gate.baseline"] == "frozen" and t["gate.trivial_metric"] == "50.0000" and t["gate.p_vs_frozen"] == "0.4000"
    assert t["gate.p_vs_baseline"] == "0.4000" and t["gate.baseline_metric"] == "75.0000"
    assert decide(ev(champion=70.0, p_champion=0.01), 0.05).promoted
    assert not decide(ev(champion=79.0, p_champion=0.3), 0.05).promoted  # not shown better: keep the champion
    d = decide(ev(parity_ok=False), 0.05)
    assert not d.promoted and "parity" in d.reason
    assert decide(ev(champion=70.0, p_champion=0.01), 0.05).tags()["gate.champion_metric"] == "70.0000"


def test_paired_permutation_knows_what_a_difference_means_on_that_many_examples():
    gold = [i % 3 for i in range(56)]  # CB-sized dev set: one example is 1.8 points
    a = list(gold)
    b = list(gold)
    for i in range(3):  # three flips: 5.4 points
        b[i] = (b[i] + 1) % 3
    delta, p = paired_permutation(_acc, gold, a, b, samples=2000)
    assert delta == pytest.approx(300 / 56) and p == pytest.approx(1 / 8, abs=0.03)  # sign test: 3 of 3
    big = [g if i >= 20 else (g + 1) % 3 for i, g in enumerate(gold)]
    assert paired_permutation(_acc, gold, a, big, samples=2000)[1] < 0.01
    assert paired_permutation(_acc, gold, a, a, samples=500)[1] == 1.0  # identical: never better
    assert paired_permutation(_acc, gold, a, big, margin=50.0, samples=500)[1] == 1.0  # 35.7 points do not clear a 50 margin
    with pytest.raises(ValueError, match="aligned"):
        paired_permutation(_acc, gold, a, b[:-1], samples=10)


def test_the_paired_test_on_a_correlation_does_not_see_each_models_scale():
    """Regression: a STS-B model whose outputs are on the 0-5 label scale, against the frozen baseline's raw
    cosines (0-1): swapping raw values scrambled both lists, and a real gain read p ~ 0.5 (dev: +0.22
    pearson on 1,500 pairs, p = 0.48; standardized p = 0.003), so the gate could never promote it."""
    import numpy as np

    from ptv2.evidence import scale_free
    from ptv2.training.metrics import scorer

    rng = np.random.default_rng(0)
    gold, noise = rng.normal(size=800), rng.normal(scale=0.6, size=800)
    worse = list(0.3 * (gold + noise) + 0.6)  # cosine-like scale
    better = list(5 * (gold + 0.9 * noise) + 2.5)  # the same model, a little less noise, on a 0-5-like scale
    pearson = scorer("pearson")
    assert scale_free("pearson") and scale_free("spearman") and not scale_free("accuracy")
    delta, p_raw = paired_permutation(pearson, list(gold), better, worse, samples=500)
    delta_std, p = paired_permutation(pearson, list(gold), better, worse, samples=500, standardize=True)
    assert delta_std == pytest.approx(delta) and delta > 1.0  # the metric itself does not change
    assert p < 0.01 and p_raw > 0.2  # raw: +2 points read as chance
    # the trivial train-mean model (a constant) standardizes to zeros instead of dividing by 0
    assert paired_permutation(pearson, list(gold), better, [2.5] * 800, samples=200, standardize=True)[1] < 0.01


def test_the_paired_test_swaps_numbers_in_numpy_with_the_same_answer_as_lists():
    """Regression (speed): swapping each pair in Python lists took 2.1 s per test on STS-B dev (2,000 swaps,
    scipy's pearsonr each time), ~30 s of a pipeline run; numbers now swap in numpy and r is computed directly.
    Boxed predictions (one-element tuples) still take the list path: both must give the same p and delta."""
    import numpy as np
    from scipy import stats

    from ptv2.training.metrics import compute, scorer

    rng = np.random.default_rng(3)
    gold = rng.uniform(0, 5, 300)
    a, b = gold + rng.normal(0, 1.0, 300), gold + rng.normal(0, 1.3, 300)
    assert compute(["pearson"], a, gold)["pearson"] == pytest.approx(100 * stats.pearsonr(a, gold)[0], abs=1e-9)
    for metric, x, y, g in (("pearson", list(a), list(b), list(gold)),
                            ("accuracy", [int(v > 2.5) for v in a], [int(v > 2.5) for v in b], [int(v > 2.5) for v in gold])):
        score = scorer(metric)
        boxed = lambda pred, gold, score=score: score([p[0] for p in pred], [q[0] for q in gold])  # noqa: E731
        fast = paired_permutation(score, g, x, y, samples=300, seed=5)
        slow = paired_permutation(boxed, [(v,) for v in g], [(v,) for v in x], [(v,) for v in y], samples=300, seed=5)
        assert fast == pytest.approx(slow, abs=1e-12) and fast[0] > 0 and 0 < fast[1] < 1, metric


def test_entity_f1_is_seqevals_and_its_paired_test_swaps_counts_with_the_same_answer():
    """Regression (speed): the paired test rescored every swapped pair of tag-sequence lists with seqeval (0.08 s
    a call on CoNLL-2003 dev here, 4,000 calls per test), so a token task's promote stage ran for many minutes.
    Entity F1 now comes from per-sentence counts, which the test swaps: seqeval's value, the same delta and p."""
    import numpy as np
    from seqeval.metrics import f1_score

    from ptv2.training.metrics import compute, scorer

    rng = np.random.default_rng(7)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]  # I- with no B- starts a chunk too
    sent = lambda: [str(t) for t in rng.choice(tags, rng.integers(1, 12))]  # noqa: E731
    gold = [sent() for _ in range(120)]
    noisy = lambda k: [[t if rng.random() > k else str(rng.choice(tags)) for t in s] for s in gold]  # noqa: E731
    a, b = noisy(0.15), noisy(0.4)
    for x in (a, b, gold, [["O"] * len(s) for s in gold]):
        assert compute(["entity_f1"], x, gold)["entity_f1"] == pytest.approx(100 * f1_score(gold, x), abs=1e-9)
    plain = lambda pred, gold: 100 * f1_score(gold, pred)  # noqa: E731  (the old path: rescoring lists)
    fast = paired_permutation(scorer("entity_f1"), gold, a, b, samples=300, seed=5)
    slow = paired_permutation(plain, gold, a, b, samples=300, seed=5)
    assert fast == pytest.approx(slow, abs=1e-9) and fast[0] > 0 and 0 < fast[1] < 1
    assert paired_permutation(scorer("entity_f1"), gold, a, b, margin=3.0, samples=300, seed=5)[1] >= fast[1]
    from ptv2.training.metrics import Decomposed, entity_counts, f1_of_counts

    calls = []
    counted = Decomposed(lambda p, g: calls.append(1) or entity_counts(p, g), f1_of_counts)
    assert paired_permutation(counted, gold, a, b, samples=300, seed=5) == pytest.approx(fast, abs=1e-12)
    assert len(calls) == 4  # the observed delta (2) and the two count tables: none per swap


def test_trivial_baselines():
    assert baseline("classification", [1, 0, 1, 1], 3) == [1, 1, 1]
    assert baseline("pair_classification", [0, 1], 2) == [0, 0]  # a tie: the lowest id
    assert baseline("regression", [1.0, 3.0], 2) == [2.0, 2.0]
    assert baseline("token_classification", [2, 1], 2) == [["O", "O"], ["O"]]
    assert agreement([1, 2, 3], [1, 2, 0]) == pytest.approx(2 / 3)
    assert agreement([1.0, 2.0], [1.05, 2.5], tol=0.1) == 0.5


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.init_store(tmp_path, "t")
    return tmp_path


def _run_with_model(root, text):
    (root / "m").mkdir(exist_ok=True)
    (root / "m" / "w.txt").write_text(text)
    with tracking.start_run(root, "t", "r", {"a": {"b": 1}}, {"x": "y"}) as run:
        run.log_artifacts(root / "m", "model")
        return run.id


def _data(correct: int, champion_correct: int = 0, n: int = 60):
    gold = [i % 2 for i in range(n)]
    wrong = lambda k: [g if i < k else 1 - g for i, g in enumerate(gold)]  # noqa: E731
    return gate.GateData("accuracy", _acc, gold, wrong(correct), {"trivial": [0] * n},
                             lambda version: wrong(champion_correct))


def test_the_gate_promotes_a_similarity_model_on_another_scale_than_the_frozen_cosine(store):
    """Regression: the gate's tests against the baselines and the champion standardize correlation metrics."""
    import numpy as np

    from ptv2.training.metrics import scorer

    rng = np.random.default_rng(1)
    gold, noise = rng.normal(size=800), rng.normal(scale=0.6, size=800)
    cosine = list(0.3 * (gold + noise) + 0.6)
    data = gate.GateData("pearson", scorer("pearson"), list(gold), list(5 * (gold + 0.9 * noise) + 2.5),
                         {"trivial": [2.5] * 800, "frozen": cosine}, lambda version: cosine)
    d = gate.register_and_gate(store, "ptv2-sts", _run_with_model(store, "s"), "model", data, 0.05, 0.0, 500)
    assert d.promoted, d.reason
    assert float(registry.alias_version(store, "ptv2-sts", "champion")[1]["gate.p_vs_frozen"]) < 0.01


def test_register_and_gate_is_per_task_and_keeps_a_champion_not_shown_worse(store):
    a1 = gate.register_and_gate(store, "ptv2-a", _run_with_model(store, "1"), "model", _data(54), 0.05, 0.0, 2000)
    assert a1.promoted and a1.version == "1"
    tie = gate.register_and_gate(store, "ptv2-a", _run_with_model(store, "2"), "model", _data(55, 54), 0.05, 0.0, 2000)
    assert not tie.promoted and tie.evidence.champion == 90.0 and tie.evidence.p_champion > 0.05
    chance = gate.register_and_gate(store, "ptv2-b", _run_with_model(store, "3"), "model", _data(31), 0.05, 0.0, 2000)
    assert not chance.promoted and "baseline" in chance.reason  # 51.7 % vs 50 %: chance
    b2 = gate.register_and_gate(store, "ptv2-b", _run_with_model(store, "4"), "model", _data(50), 0.05, 0.0, 2000)
    assert b2.promoted  # the other task's refusals do not matter
    assert registry.alias_version(store, "ptv2-a", "champion")[0] == "1"
    assert registry.alias_version(store, "ptv2-a", "challenger")[0] == "2"
    rows = {(r["name"], r["version"]): r for r in registry.list_versions(store, "ptv2-")}
    t = rows[("ptv2-a", "2")]["tags"]
    assert t["gate.promoted"] == "false" and t["gate.baseline_metric"] == "50.0000" and float(t["gate.p_vs_champion"]) > 0.05
    assert "paired permutation" in t["gate.test"] and "champion" in rows[("ptv2-a", "1")]["aliases"]


def test_a_champion_that_cannot_answer_the_task_any_more_is_not_compared(store, caplog):
    """Regression (session 32): a task that became a pair task (``text_b`` added in params.yaml) made the
    promote stage fail on every run: its champion's bundle refused the dev rows ("this task takes one text; drop
    'text_pair'"). Such a champion is not compared: the challenger is judged on the baselines, and says why."""
    a1 = gate.register_and_gate(store, "ptv2-u", _run_with_model(store, "u1"), "model", _data(54), 0.05, 0.0, 2000)
    assert a1.promoted

    def unfit(version):
        raise gate.ChampionUnfit("answers classification of one text, the task is pair_classification of a text "
                                 "pair now")

    for correct, promoted in ((31, False), (54, True)):  # at chance it still loses to the trivial baseline
        data = dataclasses.replace(_data(correct), champion_predictions=unfit)
        d = gate.register_and_gate(store, "ptv2-u", _run_with_model(store, f"u{correct}"), "model", data, 0.05, 0.0,
                                   2000)
        assert d.promoted == promoted and d.evidence.champion is None, d
    assert d.reason.endswith("; champion v1 answers classification of one text, the task is pair_classification "
                             "of a text pair now"), d.reason
    assert registry.alias_version(store, "ptv2-u", "champion")[0] == d.version == "3"
    assert "judged on the baselines alone" in caplog.text


def test_a_changed_task_form_is_named_from_the_champions_manifest():
    from ptv2.config import TaskSpec
    from ptv2.export.checks import form_change

    single = {"type": "classification", "labels": ["0", "1"], "text_b": False}
    common = {"format": "tsv", "metrics": ["accuracy"], "files": {"train": "t.tsv"}, "text_a": "{a}", "labels": ["0", "1"]}
    pair = TaskSpec(type="pair_classification", text_b="{b}", **common)
    assert form_change(single, pair) == ("answers classification of one text, the task is pair_classification of a "
                                         "text pair now")
    assert form_change({**single, "type": "pair_classification", "text_b": True}, pair) == ""
    assert form_change({**single, "labels": ["no", "yes"]}, TaskSpec(type="classification", **common)) == ""  # scored


def test_a_registered_model_uri_may_name_the_latest_version(store):
    """Regression (session 31): MLflow's ``models:/NAME/latest`` was refused as "not a registered model URI"."""
    from ptv2.errors import ArtifactError

    for k in range(3):
        registry.register_version(store, "ptv2-l", _run_with_model(store, str(k)), "model", {})
    assert registry.resolve_model(store, "models:/ptv2-l/latest") == ("ptv2-l", "3")
    assert registry.resolve_model(store, "models:/ptv2-l/2") == ("ptv2-l", "2")
    with pytest.raises(ArtifactError, match="no registered model 'ptv2-none'"):
        registry.resolve_model(store, "models:/ptv2-none/latest")


def test_a_dev_set_too_small_for_the_paired_test_is_said(store, caplog):
    """Regression: on a dev set of 4 examples no paired test reaches p < 0.05 (its smallest is about 1/16), so
    every challenger and the frozen baseline were refused, run after run, each time for a p-value: now the gate
    says no model can be promoted on it and what to do."""
    from ptv2.evidence import too_few

    assert too_few(4, 0.05) == "4 example(s): no paired test on them reaches p <= 0.05 (its smallest is about 1/2^4 = 0.0625)"
    assert too_few(5, 0.05) is None and too_few(2000, 0.05) is None and too_few(3, 0.2) is None
    with caplog.at_level("WARNING"):
        d = gate.register_and_gate(store, "ptv2-tiny", _run_with_model(store, "t"), "model", _data(4, n=4), 0.05, 0.0,
                                   2000)
    assert not d.promoted
    assert "ptv2-tiny: dev has 4 example(s): no paired test on them reaches p <= 0.05" in caplog.text
    assert "no model can be promoted on it: give the task more dev rows" in caplog.text


def test_the_gate_refuses_a_challenger_that_beats_the_trivial_baseline_but_not_the_frozen_one(store):
    n = 200
    gold = [i % 2 for i in range(n)]
    wrong = lambda k: [g if i < k else 1 - g for i, g in enumerate(gold)]  # noqa: E731
    data = gate.GateData("accuracy", _acc, gold, wrong(160), {"trivial": [0] * n, "frozen": wrong(158)},
                             lambda version: [0] * n)
    d = gate.register_and_gate(store, "ptv2-f", _run_with_model(store, "f"), "model", data, 0.05, 0.0, 2000)
    assert not d.promoted and "frozen baseline" in d.reason  # 80 % vs 79 %: not shown better
    assert registry.alias_version(store, "ptv2-f", "champion") is None
    t = {r["version"]: r for r in registry.list_versions(store, "ptv2-f")}["1"]["tags"]
    assert float(t["gate.p_vs_trivial"]) < 0.05 and float(t["gate.p_vs_frozen"]) > 0.05
    assert t["gate.frozen_metric"] == "79.0000" and t["gate.baseline"] == "frozen"
    better = dict(data.__dict__, challenger=wrong(190))  # 95 % beats both
    assert gate.register_and_gate(store, "ptv2-f", _run_with_model(store, "g"), "model",
                                      gate.GateData(**better), 0.05, 0.0, 2000).promoted


def test_a_champion_promoted_by_another_pipeline_while_the_gate_compares_is_the_one_it_must_beat(store, caplog):
    """Regression (session 39): two pipelines on one store (`dvc exp run --queue -j 2`, two clones on one tracking
    server) each compared with the champion they read first; the last to finish took the alias, here from a better
    model promoted while the gate ran (50 of 60 right replaced 60 of 60)."""
    import fcntl
    import logging

    gold = [i % 2 for i in range(60)]
    wrong = lambda k: [g if i < k else 1 - g for i, g in enumerate(gold)]  # noqa: E731
    gate.register_and_gate(store, "ptv2-r", _run_with_model(store, "1"), "model", _data(45), 0.05, 0.0, 2000)
    held = []

    def champion_predictions(version):  # meanwhile, another pipeline's better model is promoted
        lock = registry.gate_lock_path(store)
        with open(lock, "a+") as f:  # this gate holds the store's lock while it compares: a local gate would wait
            with pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not held:
            held.append(registry.register_version(store, "ptv2-r", _run_with_model(store, "3"), "model", {}))
            registry.set_alias(store, "ptv2-r", "champion", held[0])
        return wrong(60) if version == held[0] else wrong(45)

    data = dataclasses.replace(_data(50), champion_predictions=champion_predictions)
    with caplog.at_level(logging.WARNING, logger="ptv2.release.gate"):
        d = gate.register_and_gate(store, "ptv2-r", _run_with_model(store, "2"), "model", data, 0.05, 0.0, 2000)
    assert not d.promoted and d.evidence.champion == 100.0, d.reason
    assert registry.alias_version(store, "ptv2-r", "champion")[0] == held[0] == "3"
    assert "the champion moved from v1 to v3 while this gate compared" in caplog.text
    with open(registry.gate_lock_path(store), "a+") as f:  # released after the gate
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_gate_says_when_the_version_it_judged_is_the_frozen_baseline(store, caplog):
    """Regression (session 37): the promote stage logged "ptv2-sent v2: promoted to champion (...)" for the frozen
    baseline as for a trained model: a reader took the served baseline for a trained model that had won."""
    import logging

    with caplog.at_level(logging.INFO, logger="ptv2.release.gate"):
        gate.register_and_gate(store, "ptv2-z", _run_with_model(store, "t"), "model", _data(50), 0.05, 0.0, 200,
                               tags={"candidate": "trained"})
        gate.register_and_gate(store, "ptv2-z", _run_with_model(store, "f"), "model", _data(40), 0.05, 0.0, 200,
                               tags={"candidate": "frozen"})
    lines = [r.getMessage() for r in caplog.records if r.name == "ptv2.release.gate"]
    assert lines[0].startswith("ptv2-z v1: promoted to champion (") and "frozen" not in lines[0]
    assert lines[1].startswith("ptv2-z v2 (the frozen baseline): promoted to champion ("), lines


def test_mlflow_info_lines_stay_out_of_the_logs():
    """Regression (session 37): every promote and publish stage logged MLflow's INFO lines ("Validating input
    example against model signature", "Creating initial MLflow database tables...") among its own."""
    import logging
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}
    code = "import logging, ptv2.tracking.store, mlflow; print(logging.getLogger('mlflow').getEffectiveLevel())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert int(out) == logging.WARNING
    env["MLFLOW_LOGGING_LEVEL"] = "DEBUG"  # a level the user set is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert int(out) == logging.DEBUG


def test_two_projects_in_one_process_keep_their_own_stores(tmp_path, monkeypatch):
    """Regression: MLflow 3's set_tracking_uri exports MLFLOW_TRACKING_URI, so the second project used in
    one process (and every stage it spawned) logged into the first project's registry."""
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    tracking.init_store(a, "t")
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    tracking.init_store(b, "t")
    assert (a / "mlruns.db").is_file() and (b / "mlruns.db").is_file()


def test_mlflows_environment_cannot_take_the_runs_or_models_elsewhere(store, monkeypatch, caplog):
    """Regression: with MLFLOW_REGISTRY_URI set (say, another project's store) `ptv2 registry` read, and the gate
    registered into, that store (creating it) while the runs went to this one; with MLFLOW_RUN_ID set (a user's
    run, or `mlflow run`'s) every stage resumed that run, the second refused with "Changing param values"."""
    import mlflow

    from ptv2.errors import TrackingError

    first = _run_with_model(store, "a")
    monkeypatch.setenv("MLFLOW_RUN_ID", first)
    with caplog.at_level("WARNING"):
        second = _run_with_model(store, "b")
    assert second != first and f"MLFLOW_RUN_ID={first} is ignored" in caplog.text
    other = store / "other.db"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{other}")
    with pytest.raises(TrackingError, match="MLFLOW_REGISTRY_URI .*other.db.* is not the tracking store"):
        registry.register_version(store, "m", second, "model", {})
    with pytest.raises(TrackingError, match="unset MLFLOW_REGISTRY_URI"):
        tracking.check_tracking(store)  # what stages check before their work
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tracking.tracking_uri(store) + "/")  # the same store: fine
    assert registry.register_version(store, "m", second, "model", {}) == "1"
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    mlflow.set_registry_uri(f"sqlite:///{other}")  # another library in this process (MLflow exports it too)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    assert registry.register_version(store, "m", second, "model", {}) == "2"
    assert not other.exists()


def test_the_registry_is_read_past_mlflows_first_page(store):
    """Regression: the registry was listed from MLflow's first page of registered models (100): on a store that
    holds more (a team's server, other projects' models first in name order) `ptv2 registry` missed this one's."""
    client = registry._mlflow(store).MlflowClient()
    for i in range(101):
        client.create_registered_model(f"a-other-{i:03d}")
    run = _run_with_model(store, "x")
    registry.register_version(store, "zz-ptv2-sent", run, "model", {})
    registry.register_version(store, "zz-ptv2-sent", run, "model", {})
    assert [(r["name"], r["version"]) for r in registry.list_versions(store, "zz-ptv2-")] == [("zz-ptv2-sent", "1"),
                                                                                           ("zz-ptv2-sent", "2")]
    assert len(registry.list_versions(store)) == 2  # every page, without a prefix too
    assert registry.resolve_model(store, "models:/zz-ptv2-sent/latest") == ("zz-ptv2-sent", "2")


def test_a_users_sqlite_store_is_read_in_the_project_and_keeps_its_artifacts_beside_it(tmp_path, monkeypatch):
    """Regression: MLFLOW_TRACKING_URI=sqlite:///mlruns.db (relative, as MLflow's docs write it) was read in the
    working folder, which under `dvc exp run --temp` is a temporary copy of the project: the experiment logged and
    registered into a store of its own there, deleted with the copy (live: "ptv2-sent v1" where the project's store
    held 15 versions). And a user's sqlite store put artifacts in ./mlruns of wherever its experiment was created."""
    project = tmp_path / "proj"
    temp = project / ".dvc/tmp/exps/tmpabc"  # where `dvc exp run --temp` runs the stages
    temp.mkdir(parents=True)
    monkeypatch.chdir(temp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///mlruns.db")  # the same store, written the same way
    assert tracking.tracking_uri(temp) == f"sqlite:///{project / 'mlruns.db'}"
    tracking.check_tracking(temp)
    exp = tracking.init_store(temp, "t")
    where = registry._mlflow(temp).MlflowClient().get_experiment(exp).artifact_location
    assert where == (project / "mlartifacts").as_uri()
    assert (project / "mlruns.db").is_file() and not (temp / "mlruns.db").exists()
    team = tmp_path / "team" / "store.db"  # an absolute one elsewhere: its artifacts beside it, not in ./mlruns
    team.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{team}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    exp = tracking.init_store(temp, "t")
    assert registry._mlflow(temp).MlflowClient().get_experiment(exp).artifact_location == (team.parent / "mlartifacts").as_uri()
    assert not (temp / "mlruns").exists()


def test_a_project_whose_path_holds_url_characters_keeps_its_store_in_it(tmp_path, monkeypatch):
    """Regression (session 42): the store's URI was 'sqlite:///' + the path, which SQLAlchemy reads as a URL: in a
    project at '/tmp/run 100%41' every stage failed after MLflow's 100 s of retries ('unable to open database
    file': '%41' read as 'A'), and at '/data/q?1' the store was a database at '/data/q'."""
    from pathlib import Path

    from ptv2.tracking import health

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = tmp_path / "run 100%41 #x" / "q?1=2"
    project.mkdir(parents=True)
    assert health.sqlite_file(tracking.tracking_uri(project)) == project / "mlruns.db"
    # a user's relative store is read in the project, quoted, its query kept
    assert tracking._in_project("sqlite:///team%2541.db?timeout=30", project) == \
        f"sqlite:///{str(project).replace('%', '%25').replace('?', '%3F')}/team%2541.db?timeout=30"
    assert health.sqlite_file(tracking._in_project("sqlite:///team%2541.db?timeout=30", project)) == \
        project / "team%41.db"
    with tracking.start_run(project, "t", "r", {"a": 1}, {}) as run:
        run.log_metrics({"m": 1.0})
    monkeypatch.setattr(health, "_CHECKED", set())  # checked when the store did not exist yet: again, now it does
    tracking.check_tracking(project)  # the damaged-store check reads this file too (an SQLite URI of its own)
    assert (project / "mlruns.db").is_file()
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [str(Path("run 100%41 #x/q?1=2/mlruns.db"))], files  # no database at 'run 100A …' or '…/q'
    exp = tracking.init_store(project, "t")
    assert registry._mlflow(project).MlflowClient().get_experiment(exp).artifact_location == \
        (project / "mlartifacts").as_uri()
    assert registry.list_versions(project) == []


def test_a_constant_regression_baseline_scores_zero_not_nan():
    """Regression: the train-mean baseline of STS-B scored nan (np.std of equal floats was 1e-16), so the
    registry tagged baseline 'nan' and every comparison with it was False."""
    import numpy as np

    from ptv2.training import metrics

    rng = np.random.default_rng(0)
    gold = list(rng.uniform(0, 5, 200))
    base = baseline("regression", list(rng.uniform(0, 5, 5749)), 200)
    for name in ("pearson", "spearman"):
        assert metrics.compute([name], base, gold)[name] == 0.0


def test_a_registered_version_whose_artifacts_are_gone_is_one_clear_error(store, tmp_path):
    import shutil

    from ptv2.errors import ArtifactError

    v = registry.register_version(store, "ptv2-gone", _run_with_model(store, "1"), "model", {})
    assert (registry.download_version(store, "ptv2-gone", v, tmp_path / "ok") / "w.txt").read_text() == "1"
    shutil.rmtree(store / "mlartifacts")  # the artifact store lost the files; the registry still lists them
    with pytest.raises(ArtifactError, match=r"models:/ptv2-gone/1 cannot be downloaded .*dvc repro --force promote@"):
        registry.download_version(store, "ptv2-gone", v, tmp_path / "again")


@pytest.mark.parametrize("copy", [False, True])
def test_a_moved_or_copied_project_reads_and_writes_its_own_store(tmp_path, monkeypatch, copy):
    """Regression (session 27): the project's mlruns.db keeps absolute file:// locations, so in a moved project
    `ptv2 serve` / `predict --model models:/…` / the promote stage's champion found no files ("cannot be
    downloaded; register the task again", which failed the same way), and new runs wrote into the old folder
    (recreating it; into the original, for a copy)."""
    import shutil

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    tracking.init_store(old, "t")
    v = registry.register_version(old, "ptv2-m", _run_with_model(old, "1"), "model", {})
    (shutil.copytree if copy else shutil.move)(old, new)
    before = sorted(p.relative_to(old) for p in old.rglob("*")) if copy else None
    assert registry.version_files(new, "ptv2-m", v).startswith((new / "mlartifacts").as_uri() + "/")
    assert (registry.download_version(new, "ptv2-m", v, tmp_path / "dl") / "w.txt").read_text() == "1"
    v2 = registry.register_version(new, "ptv2-m", _run_with_model(new, "2"), "model", {})  # a new run, after
    assert registry.version_files(new, "ptv2-m", v2) == f"models:/ptv2-m/{v2}"  # where the store says: here
    assert (registry.download_version(new, "ptv2-m", v2, tmp_path / "dl2") / "w.txt").read_text() == "2"
    if copy:  # the original is untouched, and still reads its own files
        assert sorted(p.relative_to(old) for p in old.rglob("*")) == before
        assert registry.version_files(old, "ptv2-m", v) == f"models:/ptv2-m/{v}"
    else:
        assert not old.exists()


def test_a_tracked_run_is_tagged_with_the_precision_it_trained_in(store, tiny_dir):
    import mlflow

    from helpers import tiny_params
    from ptv2.config import config_from_dict

    cfg = config_from_dict(tiny_params(store, tiny_dir))
    with tracking.tracked(cfg, store, "adapt@sent", "adapt-sent") as (run, on_log):
        on_log({"precision": "bf16"})  # what the training loop says once it has chosen
        on_log({"step_loss": 0.5, "epoch": 1, "step": 0})
        run_id = run.id
    got = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri(store)).get_run(run_id)
    assert got.data.tags["ptv2.precision"] == "bf16" and got.data.params["train.precision"] == "fp32"
    assert "train/step_loss" in got.data.metrics


def test_the_report_says_why_a_task_is_not_served_when_its_frozen_baseline_was_refused_too(tmp_path):
    """Regression (session 28, COPA in a pipeline): neither the trained model nor the frozen baseline beat the
    trivial baseline, and the report's "served" column said only "not served: not published"."""
    import json

    from ptv2.stages.report import gate_section

    frozen = {"version": "2", "promoted": False,
              "reason": "not better than the trivial baseline: 60.00 vs 55.00, p = 0.281 >= 0.05"}
    decisions = {"copa": {"challenger": 51.0, "version": "1", "promoted": False, "frozen_candidate": frozen,
                          "reason": "not better than the frozen baseline: 51.00 vs 60.00, p = 1.000 >= 0.05"},
                 "cb": {"challenger": 76.8, "version": "1", "promoted": False, "reason": "not better than the frozen",
                        "frozen_candidate": {**frozen, "promoted": True}}}
    for task, d in decisions.items():
        (tmp_path / f"{task}.json").write_text(json.dumps(d))
    text = gate_section(["copa", "cb"], tmp_path, {"tasks": {"cb": "2"}, "excluded": {}}, "ptv2-all")
    copa = next(line for line in text.splitlines() if line.startswith("| copa"))
    assert "not served: no champion: the frozen baseline v2 was refused too (not better than the trivial " \
           "baseline: 60.00 vs 55.00, p = 0.281 >= 0.05)" in copa
    assert "v2, the frozen baseline" in next(line for line in text.splitlines() if line.startswith("| cb"))
    assert "No longer" not in text
    gone = gate_section(["cb"], tmp_path, {"tasks": {"cb": "2"}, "excluded": {}, "dropped": ["copa"]}, "ptv2-all")
    assert "No longer served by `ptv2-all` (taken out of adapt.tasks): copa;" in gone  # session 33


def test_the_report_names_an_earlier_frozen_champion_as_the_frozen_baseline(tmp_path):
    """Regression (session 36): a rerun whose trained CB model was refused again (the frozen v2 still serving,
    registered by an earlier run) said "v2, an earlier champion": what is served, the frozen baseline, was gone."""
    import json

    from ptv2.stages.report import gate_section

    (tmp_path / "cb.json").write_text(json.dumps({"challenger": 76.8, "version": "3", "promoted": False,
                                                  "reason": "not better than the frozen baseline"}))
    row = lambda publish: next(line for line in gate_section(["cb"], tmp_path, publish, "ptv2-all").splitlines()  # noqa: E731
                               if line.startswith("| cb"))
    assert "v2, the frozen baseline (an earlier champion)" in row({"tasks": {"cb": "2"}, "candidates": {"cb": "frozen"}})
    assert "v2, an earlier champion" in row({"tasks": {"cb": "2"}, "candidates": {"cb": "trained"}})
    assert "v2, an earlier champion" in row({"tasks": {"cb": "2"}})  # a publish.json from before candidates


def test_an_artifact_store_this_user_may_not_read_names_access_not_registering_again(tmp_path, monkeypatch):
    """Regression (session 42): with mlartifacts/ unreadable to this user (mode 000, another user's), `ptv2 predict
    --model models:/…` told them to register the task again, which would not help; the fix named is access."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def denied(**_: object) -> str:  # what MLflow's local artifact repository raised, live under capsh
        raise PermissionError(13, "Permission denied", str(tmp_path / "mlartifacts"))

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", denied)
    monkeypatch.setattr(registry, "version_files", lambda root, name, version: f"models:/{name}/{version}")
    with pytest.raises(registry.UnreadableVersion, match=r"models:/ptv2-all/1 cannot be downloaded \(\[Errno 13\] "
                                                         r"Permission denied: .*\); give this user read access to the "
                                                         r"artifact store$"):
        registry.download_version(tmp_path, "ptv2-all", "1", tmp_path / "dst")
