"""The method comparison: runs per (task, method, seed), table, plot, reuse of finished runs."""
import json
import re

import pytest

from helpers import tiny_params, write_all_formats
from ptv2.experiments.compare import compare
from ptv2.config import config_from_dict
from ptv2.errors import ConfigError


@pytest.fixture()
def cfg(tmp_path, tiny_dir):
    write_all_formats(tmp_path)
    return config_from_dict(tiny_params(tmp_path, tiny_dir, epochs={"ptv2": 1, "prompt_tuning": 1, "lora": 1}))


def test_compare_table_seeds_cost_and_reuse(cfg, tmp_path):
    out, work = tmp_path / "cmp.md", tmp_path / "work"
    results = compare(cfg, ["sent", "pair"], ["ptv2", "prompt_tuning"], [1, 2], out, work, one_seed=("pair",),
                      isolate=False)
    # the frozen backbone with a fitted head is every table's first row: the bar the methods must clear
    assert sorted((r["tasks"][0], r["method"], r["seed"]) for r in results) == sorted(
        [("sent", m, s) for m in ("frozen", "ptv2", "prompt_tuning") for s in (1, 2)]
        + [("pair", m, 1) for m in ("frozen", "ptv2", "prompt_tuning")])
    md = out.read_text()
    assert re.search(r"\|\s*ptv2\s*\|", md) and re.search(r"\|\s*prompt_tuning\s*\|", md)
    assert md.index("| frozen") < md.index("| ptv2")
    assert "sent (accuracy)" in md and "pair (accuracy)" in md
    assert " ± " in md  # sent has two seeds
    rows = {r["method"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    # prompt tuning trains input-layer tokens only: fewer trainable parameters than deep prompts
    assert max(rows["prompt_tuning"]["trainable"]) < min(rows["ptv2"]["trainable"])
    # the head alone (hidden 32, 2 labels): sent's reads u, pair's [u, v, |u-v|, u*v] (bi, whatever pair_encoding)
    assert sorted(set(rows["frozen"]["trainable"])) == [32 * 2 + 2, 4 * 32 * 2 + 2]
    assert len(rows["ptv2"]["dev"]["sent"]) == 2 and len(rows["ptv2"]["dev"]["pair"]) == 1
    assert all(r["artifact_mb"] and r["peak_mb"] for r in rows.values())
    assert out.with_suffix(".png").stat().st_size > 10_000
    mtime = (work / "sent/ptv2/seed1/metrics.json").stat().st_mtime
    compare(cfg, ["sent"], ["ptv2"], [1], out, work, isolate=False)  # finished: reused, not retrained
    assert (work / "sent/ptv2/seed1/metrics.json").stat().st_mtime == mtime


def test_compare_runs_each_in_its_own_process(cfg, tmp_path, capfd):
    """Isolated runs (the default) measure their own peak memory; a failed child is a clear error: its own
    one-line error (session 22: the child's ConfigError traceback, then the parent's RuntimeError traceback)."""
    from ptv2.errors import RunError

    [r] = [x for x in compare(cfg, ["sent"], ["lora"], [1], tmp_path / "c.md", tmp_path / "w") if x["method"] == "lora"]
    assert r["peak_rss_mb"] >= r["loaded_rss_mb"] > 0 and r["trainable_params"] < r["total_params"]
    bad = config_from_dict({**tiny_params(tmp_path, tmp_path / "no-such-backbone")})
    capfd.readouterr()
    with pytest.raises(RunError, match="sent/frozen/seed1 failed"):
        compare(bad, ["sent"], ["ptv2"], [1], tmp_path / "c2.md", tmp_path / "w2")
    err = capfd.readouterr().err
    assert "ptv2: error: backbone" in err and "cannot be loaded" in err and "Traceback" not in err, err


def test_compare_rejects_unknown_method(cfg, tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'loar'"):
        compare(cfg, ["sent"], ["loar"], [1], tmp_path / "c.md", tmp_path / "w")


def test_a_method_without_its_epochs_is_refused_before_any_run(cfg, tmp_path):
    """Regression (session 37): `--methods ptv2,adalora` with no adalora in train.epochs trained every ptv2 run first,
    then ended in "epochs = {...} is not allowed", a key without its section or the fix."""
    with pytest.raises(ConfigError, match=r"^train\.epochs = .*an epoch count for method 'adalora'; add 'adalora' to "
                                          r"train\.lr and train\.epochs"):
        compare(cfg, ["sent"], ["ptv2", "adalora"], [1], tmp_path / "c.md", tmp_path / "w")
    assert not (tmp_path / "w" / "sent").exists()


def test_compare_logs_a_parent_run_with_a_child_per_method_and_task(cfg, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    compare(cfg, ["sent", "pair"], ["ptv2", "lora"], [1, 2], tmp_path / "c.md", tmp_path / "w", one_seed=("pair",),
            isolate=False, track=True)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("ptv2.kind") == "comparison"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {f"{m}/{t}" for m in ("frozen", "ptv2", "lora") for t in ("sent", "pair")}
    hist = client.get_metric_history(children["ptv2/sent"].info.run_id, "dev_accuracy")
    assert sorted(m.step for m in hist) == [1, 2]  # one value per seed
    c = children["lora/pair"].data
    assert c.params["method"] == "lora" and int(c.params["trainable_params"]) > 0 and c.metrics["peak_rss_mb"] > 0
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"c.md", "c.json", "c.png"} <= arts


def test_run_key_ignores_other_methods_settings(cfg, monkeypatch):
    """Regression: tuning LoRA's learning rate used to invalidate every other method's finished runs
    (the fingerprint held the whole train section); adapt settings used to be ignored for adapted runs."""
    import dataclasses

    from ptv2.training import fingerprint

    monkeypatch.setattr(fingerprint, "weights_sha", lambda path: "sha-of-" + str(path))

    def config_sha(c, task, adapting=False):
        return fingerprint.run_key(c, [task], init_from="pre/model" if adapting else None)

    def with_train(c, **kw):
        return dataclasses.replace(c, train=dataclasses.replace(c.train, **kw))

    base = config_sha(cfg, "sent")
    assert config_sha(with_train(cfg, lr={**cfg.train.lr, "lora": 9e-3}), "sent") == base
    assert config_sha(with_train(cfg, epochs={**cfg.train.epochs, "finetune": 7}), "sent") == base
    assert config_sha(with_train(cfg, lr={**cfg.train.lr, "ptv2": 9e-3}), "sent") != base
    assert config_sha(with_train(cfg, epochs={**cfg.train.epochs, "ptv2": 7}), "sent") != base
    assert config_sha(with_train(cfg, batch_size=3), "sent") != base
    adapted = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, epochs=9))
    assert config_sha(adapted, "sent") == base and config_sha(adapted, "sent", adapting=True) != \
        config_sha(cfg, "sent", adapting=True)


def test_a_run_held_by_another_process_is_skipped_then_reused(cfg, tmp_path):
    """Two compare processes share a work folder: a locked run is deferred (not trained twice)."""
    import fcntl
    import threading

    from ptv2.experiments.compare import run_one

    work = tmp_path / "w"
    (work / "sent/ptv2").mkdir(parents=True)
    lock = open(work / "sent/ptv2/.seed1.runlock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # "another process" is training sent/ptv2/seed1
    assert run_one(cfg, "sent", "ptv2", 1, work, isolate=False, wait=False) is None
    assert not (work / "sent/ptv2/seed1/metrics.json").exists()
    done = []
    t = threading.Thread(target=lambda: done.append(
        compare(cfg, ["sent"], ["ptv2"], [1, 2], tmp_path / "c.md", work, isolate=False)))
    t.start()
    import time

    deadline = time.time() + 120
    while not (work / "sent/ptv2/seed2/metrics.json").is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    assert t.is_alive() and (work / "sent/ptv2/seed2/metrics.json").is_file()  # seed 2 ran; seed 1 waits
    fcntl.flock(lock, fcntl.LOCK_UN)
    t.join(timeout=120)
    assert [r["seed"] for r in done[0] if r["method"] == "ptv2"] == [2, 1]


@pytest.mark.parametrize("argv0", ["/venv/bin/ptv2", "/repo/ptv2/__main__.py"])
def test_a_report_names_the_command_with_its_overrides(monkeypatch, argv0):
    # `python -m ptv2 compare --set ...` wrote "Command: `ptv2 compare`": the --set the table measured was lost
    from ptv2.experiments.tables import command_line

    monkeypatch.setattr("sys.argv", [argv0, "-v", "compare", "--tasks", "cb", "--set", "tasks.cb.epochs={ptv2: 1}"])
    assert command_line("compare") == "ptv2 -v compare --tasks cb --set 'tasks.cb.epochs={ptv2: 1}'"
    monkeypatch.setattr("sys.argv", ["/venv/bin/pytest", "-k", "compare"])  # not a ptv2 command: the verb alone
    assert command_line("compare") == "ptv2 compare"
