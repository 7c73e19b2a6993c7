import pytest

from ptv2.tracking import registry
from ptv2.tracking import store as tracking
from ptv2.tracking.registry import decide


def test_gate_decisions():
    assert decide(80.0, None).promoted
    assert decide(80.0, 80.0).promoted  # "at least" the champion
    assert not decide(79.9, 80.0).promoted
    assert not decide(80.5, 80.0, margin=1.0).promoted
    d = decide(90.0, 80.0, parity_ok=False)
    assert not d.promoted and "parity" in d.reason
    assert d.tags()["gate.champion_metric"] == "80.0000"


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


def test_register_and_gate_is_per_task_and_keeps_better_champion(store):
    a1 = registry.register_and_gate(store, "ptv2-a", _run_with_model(store, "1"), 70.0, "accuracy", "e1")
    assert a1.promoted and a1.version == "1"
    worse = registry.register_and_gate(store, "ptv2-a", _run_with_model(store, "2"), 60.0, "accuracy", "e1")
    assert not worse.promoted and worse.champion == 70.0
    b1 = registry.register_and_gate(store, "ptv2-b", _run_with_model(store, "3"), 10.0, "accuracy", "e1")
    assert b1.promoted  # a worse task elsewhere does not block this one
    assert tracking.alias_version(store, "ptv2-a", "champion")[0] == "1"
    assert tracking.alias_version(store, "ptv2-a", "challenger")[0] == "2"
    rows = {(r["name"], r["version"]): r for r in tracking.list_versions(store, "ptv2-")}
    assert rows[("ptv2-a", "2")]["tags"]["gate.promoted"] == "false"
    assert "champion" in rows[("ptv2-a", "1")]["aliases"]


def test_champion_rescored_when_eval_data_changed(store):
    registry.register_and_gate(store, "ptv2-a", _run_with_model(store, "1"), 90.0, "accuracy", "old")
    seen = []

    def rescore(version):
        seen.append(version)
        return 50.0  # on the new eval data the old champion is much worse

    d = registry.register_and_gate(store, "ptv2-a", _run_with_model(store, "2"), 60.0, "accuracy", "new",
                                   rescore_champion=rescore)
    assert seen == ["1"] and d.promoted and d.champion == 50.0


def test_two_projects_in_one_process_keep_their_own_stores(tmp_path, monkeypatch):
    """Regression: MLflow 3's set_tracking_uri exports MLFLOW_TRACKING_URI, so the second project used in
    one process (and every stage it spawned) logged into the first project's registry."""
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    tracking.init_store(a, "t")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    tracking.init_store(b, "t")
    assert (a / "mlruns.db").is_file() and (b / "mlruns.db").is_file()
