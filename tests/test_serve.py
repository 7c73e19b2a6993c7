"""The registered models behind `mlflow models serve`: per-task champions, and the multi-task model that
serves every champion from one encoder (rebuilt only when a champion changes), over real HTTP on loopback."""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import make_tiny_backbone_dir
from helpers import merged, tiny_params, train_task, write_all_formats

TASKS = ("sent", "pair", "mc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, payload: dict | bytes, content_type: str = "application/json") -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=data,
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir):
    """Tiny models for sent, pair, mc (tiny backbone) and reg (another random backbone of the same shape)."""
    from ptv2.config import config_from_dict

    root = tmp_path_factory.mktemp("serve")
    write_all_formats(root / "d")
    params = tiny_params(root / "d", tiny_dir, epochs={"ptv2": 1, "finetune": 1}, head_init="random")
    (root / "d/reg/dev.tsv").write_text((root / "d/reg/train.tsv").read_text())  # dev: train's rows again
    params["tasks"]["reg"] = {**params["tasks"]["reg"], "files": {"train": "reg/train.tsv", "dev": "reg/dev.tsv"}}
    params = merged({"adapt": {"tasks": [*TASKS, "reg"]},
                     "serving": {"micro_batch": 8, "max_rows": 50, "max_text_chars": 1000, "int8": True}}, params)
    cfg = config_from_dict(params)
    for task in TASKS:
        train_task(cfg, task, root / task, report_splits=())
    other = make_tiny_backbone_dir(root / "other-bert", seed=1)
    train_task(config_from_dict(merged({"backbone": {**params["backbone"], "name": str(other)}}, params)), "reg",
               root / "reg", report_splits=())
    return root, cfg


def register(store_root: Path, cfg, model_dir: Path, task: str, passes: bool = True) -> str:
    """Bundle ``task``'s model, log it into a run, register it and pass the gate (it becomes champion), or with
    ``passes=False`` fail it (predictions no better than the trivial baseline's)."""
    from ptv2.export.onnx_export import write_bundle
    from ptv2.release import gate
    from ptv2.tracking import packaging, store
    from ptv2.training.build import load_model

    model, tok, _ = load_model(model_dir / "model")
    bundle = write_bundle({task: model}, tok, store_root / f"bundle-{task}-{time.time_ns()}")
    with store.start_run(store_root, "t", f"serve-{task}", {}, {}) as run:
        rid = run.id
    uri = packaging.log_bundle_model(store_root, rid, bundle, serving=cfg.serving)
    gold = [i % 2 for i in range(40)]
    data = gate.GateData("accuracy", lambda p, g: 100.0 * sum(a == b for a, b in zip(p, g)) / len(g), gold,
                         gold if passes else [0] * 40, {"trivial": [0] * 40}, lambda version: [1 - g for g in gold])
    d = gate.register_and_gate(store_root, f"ptv2-{task}", rid, uri, data, 0.05, 0.0, 2000)
    assert d.promoted == passes, d
    return d.version


def test_nothing_is_published_before_some_task_has_a_champion(trained, tmp_path, monkeypatch):
    """The first run's publish stage when every challenger was refused: no multi-task model, and it says why."""
    from ptv2.release.publish import publish
    from ptv2.tracking import registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, cfg = trained
    cfg = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, tasks=["sent"]))
    assert register(tmp_path, cfg, root / "sent", "sent", passes=False) == "1"  # registered, not champion
    nothing = {"published": False, "version": None, "tasks": {}, "dropped": [], "candidates": {},
               "reason": "no task has a champion yet"}
    assert publish(cfg, tmp_path) == nothing
    assert registry.alias_version(tmp_path, cfg.tracking.multitask_model, "champion") is None


def test_logging_a_model_into_a_log_or_pipe_draws_no_download_bar(trained, tmp_path, monkeypatch, capfd):
    """Session 45: ``log_model``'s own downloads (validating the input example) drew MLflow's "Downloading
    artifacts" bar, each \\r update, into the promote and publish stages' logs (3 bars per logged model). Off the
    terminal it is off; a user's own MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR stands (the control: the bar is seen)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    root, cfg = trained
    register(tmp_path / "quiet", cfg, root / "sent", "sent")
    assert "Downloading artifacts" not in capfd.readouterr().err
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    register(tmp_path / "asked", cfg, root / "sent", "sent")
    assert "Downloading artifacts" in capfd.readouterr().err


@pytest.fixture()
def published(trained, tmp_path, monkeypatch):
    from ptv2.release.publish import publish

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, cfg = trained
    cfg = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, tasks=list(TASKS)))
    for task in TASKS:
        register(tmp_path, cfg, root / task, task)
    out = publish(cfg, tmp_path)
    assert out["published"] and out["tasks"] == {t: "1" for t in TASKS} and not out["excluded"], out
    return tmp_path, cfg


def test_the_multitask_model_is_rebuilt_only_when_a_champion_changes(trained, published):
    from ptv2.tracking import registry
    from ptv2.release.publish import publish

    store_root, cfg = published
    root = trained[0]
    again = publish(cfg, store_root)
    assert not again["published"] and again["version"] == "1" and again["reason"] == "champions and serving config unchanged"
    assert register(store_root, cfg, root / "sent", "sent") == "2"  # a new champion for one task
    cfg = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, tasks=[*TASKS, "reg"]))
    register(store_root, cfg, root / "reg", "reg")  # a champion on another backbone: cannot share the encoder
    new = publish(cfg, store_root)
    assert new["published"] and new["version"] == "2"
    assert new["tasks"] == {"sent": "2", "pair": "1", "mc": "1"}, new
    assert "as its champion does with the shared encoder" in new["excluded"]["reg"]
    version, tags = registry.alias_version(store_root, "ptv2-all", "champion")
    assert version == "2" and tags["task.sent.version"] == "2" and tags["task.pair.version"] == "1"
    assert json.loads(tags["excluded"]).keys() == {"reg"}
    assert registry.alias_version(store_root, "ptv2-sent", "champion")[0] == "2"  # per-task models stay
    again = publish(cfg, store_root)  # an excluded champion does not force a rebuild each time
    assert not again["published"] and again["version"] == "2" and "reg" not in again["tasks"]
    faster = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, max_rows=10))
    rebuilt = publish(faster, store_root)  # the serving config is part of the registered model: rebuilt
    assert rebuilt["published"] and rebuilt["version"] == "3"
    assert json.loads(registry.alias_version(store_root, "ptv2-all", "champion")[1]["serving"])["limits"]["max_rows"] == 10
    stricter = dataclasses.replace(faster, serving=dataclasses.replace(faster.serving, int8_min_agreement=1.0))
    policy = publish(stricter, store_root)  # which tasks int8 serves is a serving policy: applied by a rebuild
    assert policy["published"] and policy["version"] == "4"
    assert json.loads(registry.alias_version(store_root, "ptv2-all", "champion")[1]["serving"])["int8_min_agreement"] == 1.0



def test_a_task_model_deleted_and_registered_again_is_a_new_champion(trained, published):
    """Regression: the multi-task model recorded the champions it serves by version number only; a task's
    registered model deleted (MLflow's UI) and registered again numbers its versions from 1 anew, so the new
    champion v1 read as unchanged and ptv2-all went on serving the deleted model's bundle."""
    from ptv2.release.publish import publish
    from ptv2.tracking import registry

    store_root, cfg = published
    registry._mlflow(store_root).MlflowClient().delete_registered_model("ptv2-sent")
    assert register(store_root, cfg, trained[0] / "sent", "sent") == "1"  # the same number, another version
    again = publish(cfg, store_root)
    assert again["published"] and again["version"] == "2" and again["tasks"]["sent"] == "1", again
    assert not publish(cfg, store_root)["published"]  # and unchanged from then on


def test_a_champion_the_gate_did_not_promote_is_served_with_a_warning(trained, published, caplog):
    """A version moved to @champion by hand (MLflow's UI) though its gate refused it: the multi-task model serves
    it, as asked, and says so; it was served silently, though models are promoted only on evidence."""
    from ptv2.release.publish import publish
    from ptv2.tracking import registry

    store_root, cfg = published
    refused = register(store_root, cfg, trained[0] / "sent", "sent", passes=False)
    registry.set_alias(store_root, "ptv2-sent", "champion", refused)
    with caplog.at_level("WARNING"):
        out = publish(cfg, store_root)
    assert out["published"] and out["tasks"]["sent"] == refused
    assert f"ptv2-sent v{refused} holds @champion but its gate did not promote it (not better than" in caplog.text


def test_a_task_taken_out_of_adapt_tasks_is_no_longer_served_and_the_log_says_so(published, caplog):
    """Regression (session 33): ``adapt.tasks`` [sent] -> [pair] between pipeline runs silently dropped sent from
    the served model (its clients got 4xx); the publish stage warns and names the model that still serves it."""
    from ptv2.release.publish import publish

    store_root, cfg = published
    fewer = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, tasks=["sent", "pair"]))
    with caplog.at_level("WARNING", logger="ptv2.release.publish"):
        out = publish(fewer, store_root)
    assert out["published"] and out["version"] == "2" and out["tasks"] == {"sent": "1", "pair": "1"}, out
    assert out["dropped"] == ["mc"]
    assert "ptv2-all v2 no longer serves mc (not in adapt.tasks); still served by ptv2-mc@champion" in caplog.text
    assert publish(fewer, store_root)["dropped"] == []  # said once, by the version that dropped it
    unknown = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, tasks=["cb"]))  # no champion anywhere
    kept = publish(unknown, store_root)  # nothing to build: the registered multi-task model keeps serving
    assert kept == {"published": False, "version": "2", "tasks": {"sent": "1", "pair": "1"}, "dropped": [],
                    "candidates": {},
                    "reason": "no task of adapt.tasks has a champion yet: v2 keeps serving pair, sent"}, kept


def test_a_champion_of_another_encoder_and_another_form_of_its_task_is_left_to_its_own_model(trained, published):
    """Regression (session 33): a champion exported with other encoder bytes (kept from before a change of
    ``backbone.name``) whose task has since changed form (a pair task now of one text) made the publish stage
    fail on every run ("row 0 (reg): 'text_pair' must be a string, got nothing"): checking its answers with the
    shared encoder sent it today's dev rows, which are not its requests."""
    from ptv2.release.publish import publish

    store_root, cfg = published
    cfg = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, tasks=[*TASKS, "reg"]))
    register(store_root, cfg, trained[0] / "reg", "reg")  # trained on another backbone of the same shape
    single = dataclasses.replace(cfg.tasks["reg"], text_b="")
    out = publish(dataclasses.replace(cfg, tasks={**cfg.tasks, "reg": single}), store_root)
    assert out["published"] and out["tasks"] == {"sent": "1", "pair": "1", "mc": "1"}, out
    assert out["excluded"] == {"reg": "its champion answers regression of a text pair, the task is regression of "
                                      "one text now: its answers with the shared encoder cannot be checked (served "
                                      "by its own registered model)"}


def test_a_champion_on_a_backbone_of_another_shape_is_left_to_its_own_model(trained, tmp_path, monkeypatch):
    """Regression (session 31): after a change of ``backbone.name`` to a model of another depth, a task whose
    old champion stayed made the publish stage fail ("prompt (3, ...) does not fit the encoder's prefix
    input"), run after run: the combined bundle could not load."""
    from ptv2.config import config_from_dict
    from ptv2.release.publish import publish
    from ptv2.tracking import registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, cfg = trained
    deeper = make_tiny_backbone_dir(tmp_path / "deeper-bert", seed=2, layers=3)
    params = cfg.to_dict()
    params["backbone"]["name"] = str(deeper)
    train_task(config_from_dict(params), "sent", tmp_path / "sent3", report_splits=())
    cfg = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, tasks=list(TASKS)))
    register(tmp_path, cfg, tmp_path / "sent3", "sent")
    for task in ("pair", "mc"):  # two champions on the first backbone: theirs is the shared encoder
        register(tmp_path, cfg, root / task, task)
    out = publish(cfg, tmp_path)
    assert out["published"] and out["tasks"] == {"pair": "1", "mc": "1"}, out
    assert "trained on a backbone of another shape" in out["excluded"]["sent"], out
    assert json.loads(registry.alias_version(tmp_path, "ptv2-all", "champion")[1]["excluded"]).keys() == {"sent"}


def test_one_server_answers_mixed_tasks_and_refuses_bad_rows(published):
    import yaml

    store_root, cfg = published
    (store_root / "params.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    port = _free_port()
    # no venv on PATH: mlflow's `exec uvicorn` exited 127 with a traceback unless the caller activated it (session 24)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("MLFLOW_TRACKING_URI", None)  # `ptv2 serve` points MLflow's server at the project's own store
    # the multi-task model's @champion by default, through `mlflow models serve` (the process becomes it)
    proc = subprocess.Popen([sys.executable, "-m", "ptv2", "serve", "--params", str(store_root / "params.yaml"),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                time.sleep(1)
        ok = {"dataframe_records": [{"task": "sent", "text": "the movie was good"},
                                    {"task": "pair", "text": "the cat sat", "text_pair": "the dog sat"},
                                    {"task": "mc", "text": "the man was wet", "choices": ["rain", "sun", "snow"]}]}
        status, body = _post(port, ok)
        assert status == 200, body
        sent, pair, mc = body["predictions"]
        assert sent["label"] in ("0", "1") and 0 <= sent["score"] <= 1 and pair["label"] in ("no", "yes")
        assert mc["label"] == ["rain", "sun", "snow"][mc["choice"]] and 1 / 3 <= mc["score"] <= 1
        for row, needle in [({"task": "nope", "text": "x"}, "unknown task"),
                            ({"task": "pair", "text": "the cat sat"}, "this is a pair task"),
                            ({"task": "mc", "text": "wet"}, "needs 'choices'"),
                            ({"task": "sent", "text": 5}, "'text' must be a string, got int")]:
            status, body = _post(port, {"dataframe_records": [row]})
            assert 400 <= status < 500 and needle in json.dumps(body), (row, status, body)
        status, _ = _post(port, {"dataframe_records": [{"text": "no task column"}]})
        assert 400 <= status < 500
        status, body = _post(port, {"dataframe_records": [{"task": "sent", "text": "good film"}] * 51})
        assert 400 <= status < 500 and "limit is 50" in json.dumps(body)  # the registered limits apply
        status, body = _post(port, {"dataframe_records": [{"task": "sent", "text": "good film"}] * 50})
        assert status == 200 and len(body["predictions"]) == 50
        # a body MLflow cannot parse as this model's input put the server's traceback in the answer (session 25)
        for body_bytes, kind in ((b"task,text\nsent,good film\n", "text/csv"),
                                 (b"not parquet", "application/vnd.apache.parquet")):
            status, body = _post(port, body_bytes, kind)
            assert status == 400 and "stack_trace" not in body and "Traceback" not in json.dumps(body), body
            assert "This model takes JSON (Content-Type: application/json)" in body["message"], body
        status, body = _post(port, b"[" * 5000 + b"]" * 5000)  # regression (session 26): a bare HTTP 500
        assert status == 400 and "nested too deeply" in body["message"] and "stack_trace" not in body, body
        assert _post(port, ok)[0] == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_registered_models_carry_their_code_signature_example_and_card(published, monkeypatch):
    """A registered version is self-contained: the torch-free serving code (code_paths), a signature, one
    input example row per task (the per-task model card: test_pipeline's retrain flow)."""
    import mlflow

    from ptv2.tracking import store

    store_root, _ = published
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri(store_root))
    info = mlflow.models.get_model_info("models:/ptv2-all@champion")
    sig = info.signature.to_dict()
    ins = {c["name"]: c for c in json.loads(sig["inputs"])}
    assert set(ins) == {"task", "text", "text_pair", "choices"}
    assert ins["task"]["required"] and ins["text"]["required"] and not ins["text_pair"]["required"]
    assert ins["choices"]["type"] == "any" and not ins["choices"]["required"]
    assert {c["name"] for c in json.loads(sig["outputs"])} == {"task", "label", "score", "choice", "entities"}
    local = Path(mlflow.artifacts.download_artifacts("models:/ptv2-all@champion"))
    code = sorted(str(p.relative_to(local / "code")) for p in (local / "code").rglob("*.py"))
    assert code == ["ptv2/__init__.py", "ptv2/errors.py", "ptv2/files.py", "ptv2/host.py", "ptv2/prefix.py",
                    "ptv2/serving/__init__.py", "ptv2/serving/bundle.py", "ptv2/serving/manifest.py",
                    "ptv2/serving/requests.py", "ptv2/spans.py"]
    import re

    assert not [f for f in code if re.search(r"^\s*(import|from) (torch|transformers)\b", (local / "code" / f).read_text(), re.M)]
    example = json.loads((local / "serving_input_example.json").read_text())["dataframe_split"]
    tasks = [r[example["columns"].index("task")] for r in example["data"]]
    assert sorted(tasks) == sorted(TASKS)
    # regression (session 41): unpinned, an environment built for the model got whatever onnxruntime and tokenizers
    # were newest at deploy time, not the ones its parity and int8 checks ran on
    from importlib.metadata import version

    reqs = (local / "requirements.txt").read_text().split()
    assert f"onnxruntime=={version('onnxruntime')}" in reqs and f"tokenizers=={version('tokenizers')}" in reqs, reqs


def test_the_pinned_runtime_is_found_when_another_distribution_provides_it(monkeypatch):
    """onnxruntime-gpu (a GPU host's) provides the onnxruntime module under another distribution name: looking up
    'onnxruntime' alone would have failed the promote stage there with PackageNotFoundError."""
    import importlib.metadata as md

    from ptv2.tracking import packaging

    real = md.version

    def version(dist):
        if dist == "onnxruntime":
            raise md.PackageNotFoundError(dist)
        return "9.8.7" if dist == "onnxruntime-gpu" else real(dist)

    monkeypatch.setattr(md, "version", version)
    monkeypatch.setattr(md, "packages_distributions", lambda: {"onnxruntime": ["onnxruntime-gpu"]})
    reqs = packaging.pyfunc_requirements()
    assert reqs[0] == "onnxruntime==9.8.7" and reqs[1].startswith("tokenizers==")
    monkeypatch.setattr(md, "packages_distributions", lambda: {})
    assert packaging.pyfunc_requirements()[0] == "onnxruntime"  # unknown: unpinned, as before


def test_the_cli_predicts_and_evaluates_with_a_registered_model(published, monkeypatch):
    """Regression (session 26): `ptv2 predict --model models:/ptv2-all@champion` said it was "not a ptv2 model
    folder ...; train one with 'ptv2 train'". A registered model is fetched from the project's registry and
    answers as the served model does (its bundle, with the serving settings it was registered with)."""
    import mlflow
    import pandas as pd
    import yaml

    from ptv2.tracking import store

    store_root, cfg = published
    (store_root / "params.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the project's own store

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ptv2", *args, "--params", str(store_root / "params.yaml")],
                              capture_output=True, text=True, env=env, timeout=300)

    texts = ["good film", "bad plot", "ok"]
    r = cli("predict", "--model", "models:/ptv2-all@champion", "--task", "sent", *[a for t in texts for a in ("--text", t)])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "Downloading artifacts" not in r.stderr  # session 44: MLflow's bar, each update, into a pipe or log
    # session 44: started with standard error closed (`2>&-`), MLflow's bar wrote to None: exit 1, no answer
    closed = subprocess.run([sys.executable, "-m", "ptv2", "predict", "--model", "models:/ptv2-all@champion", "--task",
                             "sent", "--text", texts[0], "--params", str(store_root / "params.yaml")],
                            stdout=subprocess.PIPE, text=True, env=env, timeout=300, preexec_fn=lambda: os.close(2))
    assert closed.returncode == 0 and json.loads(closed.stdout)["task"] == "sent", closed
    got = [json.loads(line) for line in r.stdout.splitlines()]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri(store_root))
    served = mlflow.pyfunc.load_model("models:/ptv2-all@champion").predict(
        pd.DataFrame([{"task": "sent", "text": t} for t in texts]))
    assert [g["label"] for g in got] == list(served["label"])
    assert [g["score"] for g in got] == pytest.approx(list(served["score"]), abs=1e-6)
    r = cli("evaluate", "--model", "models:/ptv2-pair/1")  # the model's only task
    assert r.returncode == 0 and set(json.loads(r.stdout)) >= {"accuracy"}, r.stderr[-2000:]
    r = cli("predict", "--model", "models:/ptv2-all@staging", "--task", "sent", "--text", "x")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"ptv2: error: model 'ptv2-all' in {store.tracking_uri(store_root)} has no alias @staging (its aliases: "
        f"@champion (v1)); no version has been promoted to it"), r.stderr
    (store_root / "elsewhere").mkdir()
    elsewhere = subprocess.run([sys.executable, "-m", "ptv2", "predict", "--model", "models:/ptv2-all@champion",
                                "--text", "x"], capture_output=True, text=True, env=env, timeout=300,
                               cwd=store_root / "elsewhere")  # no params.yaml, no MLFLOW_TRACKING_URI: no store made
    assert elsewhere.returncode == 2
    assert "config file 'params.yaml' not found (pass --params PATH to a params.yaml)" in elsewhere.stderr
    assert not (store_root / "elsewhere" / "mlruns.db").exists()
    r = cli("predict", "--model", "runs:/0123/model", "--text", "x")
    assert r.returncode == 2 and "'runs:/0123/model' is not a registered model URI; use models:/NAME@ALIAS" in r.stderr


@pytest.mark.slow
def test_the_registered_model_loads_and_answers_in_a_clean_env_from_its_own_requirements(published, tmp_path):
    """Deploy-anywhere: a fresh virtual environment with only the model's requirements.txt (no project, no
    torch) loads models:/ptv2-all@champion from the registry and answers (minutes: it installs mlflow)."""
    import mlflow

    from ptv2.tracking import store

    store_root, _ = published
    uri = store.tracking_uri(store_root)
    mlflow.set_tracking_uri(uri)
    reqs = Path(mlflow.artifacts.download_artifacts("models:/ptv2-all@champion/requirements.txt", dst_path=str(tmp_path)))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin/pip"), "install", "-q", "-r", str(reqs)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    code = ("import json, sys, mlflow, pandas as pd\n"
            "m = mlflow.pyfunc.load_model('models:/ptv2-all@champion')\n"
            "out = m.predict(pd.DataFrame([{'task': 'sent', 'text': 'good movie'},"
            " {'task': 'pair', 'text': 'a', 'text_pair': 'b'}]))\n"
            "import ptv2\n"
            "print(json.dumps({'rows': out.to_dict('records'), 'torch': 'torch' in sys.modules,"
            " 'ptv2_from': ptv2.__file__}))\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri,
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    r = subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert [row["task"] for row in res["rows"]] == ["sent", "pair"] and all(row["label"] for row in res["rows"])
    assert not res["torch"] and "/code/ptv2/" in res["ptv2_from"]  # the model's own copy, not a checkout
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 2**20
    print(f"clean env: {reqs.read_text().split()}; {size:.0f} MB")


def test_a_failure_inside_the_served_model_answers_without_its_traceback(caplog):
    """Regression (session 25): an unexpected error in predict reached the client as MLflow's "unexpected error"
    with the server's traceback in ``stack_trace``; now one message (HTTP 500) and the traceback in the log."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from ptv2.tracking.pyfunc import BundleModel

    class Broken:
        def predict(self, rows, deadline=None):
            raise KeyError("boom")

    model = BundleModel()
    model.bundle = Broken()
    with pytest.raises(MlflowException) as e:
        model.predict(None, pd.DataFrame([{"task": "sent", "text": "good"}]))
    body = json.loads(e.value.serialize_as_json())
    assert e.value.get_http_status_code() == 500 and "stack_trace" not in body, body
    assert "failed on this request (KeyError)" in body["message"]
    assert "KeyError: 'boom'" in caplog.text  # the server's log keeps it


def test_loading_the_served_models_code_prints_no_type_hint_warning():
    """Regression (session 28): MLflow warned "Add type hints to the `predict` method" each time it loaded the
    model's code (ten times in a pipeline run's log); predict has none on purpose."""
    import runpy
    import warnings

    import ptv2.tracking.pyfunc as pyfunc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runpy.run_path(pyfunc.__file__)  # as models-from-code loads it: the class is defined again
    assert not [w for w in caught if "type hints" in str(w.message)], [str(w.message) for w in caught]


def test_a_registered_bundle_damaged_in_the_store_is_one_line_naming_the_model(published, capsys, monkeypatch):
    """Regression (session 36): a registered bundle whose file was changed in the artifact store started `ptv2
    serve`, whose server then died in ~95 lines of two tracebacks (the bundle's sha256 check inside uvicorn), and
    `ptv2 predict --model models:/…` named its download's temp folder with "re-export the bundle". Both now say
    which registered version fails, why, and what to do, before any server starts."""
    import yaml

    from ptv2.cli import main

    store_root, cfg = published
    (store_root / "params.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    [encoder] = [p for p in (store_root / "mlartifacts").rglob("encoder.onnx")
                 if len(list(p.parent.glob("tasks/*.json"))) == len(TASKS)]  # the multi-task model's
    encoder.write_bytes(encoder.read_bytes()[:1000])
    params = ["--params", str(store_root / "params.yaml")]
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("the server started"))
    for argv in (["serve", *params, "--port", str(_free_port())],
                 ["predict", *params, "--model", "models:/ptv2-all@champion", "--task", "sent", "--text", "good"]):
        capsys.readouterr()
        assert main(argv) == 2
        err = [x for x in capsys.readouterr().err.replace("\r", "\n").splitlines() if x.strip() and "it/s]" not in x]
        assert len(err) == 1 and "(ptv2-all v1): its registered bundle fails its check (encoder.onnx fails its " \
               "sha256 check" in err[0] and "use another version (`ptv2 registry` lists them)" in err[0], err



def _stored(store_root: Path, name: str, version: str) -> Path:
    """The artifact store's own folder of a registered version (where a damaged file would sit)."""
    import urllib.parse

    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    from ptv2.tracking import registry

    registry._mlflow(store_root)  # the store's tracking URI, as the registry's own calls set it
    return Path(urllib.parse.urlparse(ModelsArtifactRepository.get_underlying_uri(f"models:/{name}/{version}")).path)


def test_a_champion_damaged_in_the_store_is_not_compared_and_publishing_it_is_one_line(trained, published, tmp_path):
    """Regression (session 36): the promote stage scored the champion from its registered bundle; one damaged in
    the artifact store failed every later promote stage of the task on a temp path ("re-export the bundle"), so
    no challenger could replace it. It is now not compared (the challenger is judged on the baselines, as for a
    champion of another form), and publishing it names the version and the fix."""
    from ptv2.data.tasks import load_task_data
    from ptv2.errors import ArtifactError
    from ptv2.release.gate import ChampionUnfit
    from ptv2.release.promotion import _champion_predictions
    from ptv2.release.publish import publish

    store_root, cfg = published
    new = register(store_root, cfg, trained[0] / "sent", "sent")  # a new champion: ptv2-all is to be rebuilt
    [encoder] = _stored(store_root, "ptv2-sent", new).rglob("encoder.onnx")
    encoder.write_bytes(encoder.read_bytes()[:1000])
    with pytest.raises(ChampionUnfit, match=r"is damaged in the artifact store \(encoder.onnx fails its sha256"):
        _champion_predictions(cfg, store_root, "sent", load_task_data(cfg, "sent"))(new)
    with pytest.raises(ArtifactError, match=rf"models:/ptv2-sent/{new}: its registered bundle fails its check "
                                            r"\(encoder.onnx fails its sha256 check.*restore them"):
        publish(cfg, store_root)


def test_a_champion_whose_files_are_gone_or_that_is_no_ptv2_model_is_not_compared(trained, published, tmp_path):
    """Regression: a champion whose files were deleted from the artifact store, or a model registered by hand and
    given @champion in MLflow's UI, stopped every later promote stage of the task ("cannot be downloaded …;
    register the task again (`dvc repro promote@<task>`)", which met the same line again). As a damaged one, it is
    now not compared: the challenger is judged on the baselines."""
    import shutil

    from ptv2.data.tasks import load_task_data
    from ptv2.release.gate import ChampionUnfit
    from ptv2.release.promotion import _champion_predictions
    from ptv2.tracking import registry

    store_root, cfg = published
    td = load_task_data(cfg, "sent")
    gone = register(store_root, cfg, trained[0] / "sent", "sent")
    shutil.rmtree(_stored(store_root, "ptv2-sent", gone))
    with pytest.raises(ChampionUnfit, match=r"cannot be downloaded \(its artifact folder is gone or empty\)"):
        _champion_predictions(cfg, store_root, "sent", td)(gone)
    mlflow = registry._mlflow(store_root)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "weights.txt").write_text("not a ptv2 model")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tmp_path / "m"), "model")
    foreign = mlflow.MlflowClient().create_model_version("ptv2-sent", f"{run.info.artifact_uri}/model",
                                                         run.info.run_id).version
    with pytest.raises(ChampionUnfit, match=r"is not a ptv2 bundle model \(its MLmodel names no 'bundle' artifact\)"):
        _champion_predictions(cfg, store_root, "sent", td)(str(foreign))
