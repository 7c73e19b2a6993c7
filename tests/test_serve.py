"""`mlflow models serve` on a registered champion answers real HTTP requests on loopback."""
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import tiny_params, train_task, write_all_formats


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture()
def champion(tmp_path, tiny_dir, monkeypatch):
    from ptv2.tracking import registry
    from ptv2.tracking import store as tracking
    from ptv2.training.build import load_model
    from ptv2.config import config_from_dict
    from ptv2.export.onnx_export import write_bundle
    
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_all_formats(tmp_path / "d")
    cfg = config_from_dict(tiny_params(tmp_path / "d", tiny_dir, epochs={"ptv2": 1, "finetune": 1}))
    train_task(cfg, "sent", tmp_path / "m", report_splits=())
    model, tok, _ = load_model(tmp_path / "m/model")
    bundle = write_bundle({"sent": model}, tok, tmp_path / "bundle", int8=False)
    with tracking.start_run(tmp_path, "t", "serve-test", {}, {}) as run:
        rid = run.id
    uri = tracking.log_bundle_model(tmp_path, rid, bundle, {"adapter": tmp_path / "m/model"},
                                    limits={"micro_batch": 8, "max_rows": 50, "max_text_chars": 1000})
    gold = [i % 2 for i in range(40)]
    data = registry.GateData("accuracy", lambda p, g: 100.0 * sum(a == b for a, b in zip(p, g)) / len(g), gold, gold,
                             [0] * 40, lambda version: gold)
    d = registry.register_and_gate(tmp_path, "ptv2-sent", rid, uri, data, 0.05)
    assert d.promoted
    return tmp_path


def test_mlflow_models_serve_answers_and_survives_bad_requests(champion):
    from ptv2.tracking import store as tracking

    port = _free_port()
    import os

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(champion),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # uvicorn
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow_bin), "models", "serve", "-m", "models:/ptv2-sent@champion",
                             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "--workers", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
                                    {"task": "sent", "text": "the plot was awful"}]}
        status, body = _post(port, ok)
        assert status == 200, body
        preds = body["predictions"]
        assert len(preds) == 2 and preds[0]["label"] in ("0", "1") and 0 <= preds[0]["score"] <= 1
        status, body = _post(port, {"dataframe_records": [{"task": "nope", "text": "x"}]})
        assert 400 <= status < 500 and "unknown task" in json.dumps(body)
        status, _ = _post(port, {"dataframe_records": [{"text": "no task column"}]})
        assert 400 <= status < 500
        status, body = _post(port, {"dataframe_records": [{"task": "sent", "text": "good film"}] * 51})
        assert 400 <= status < 500 and "limit is 50" in json.dumps(body)  # the registered limits apply
        status, body = _post(port, {"dataframe_records": [{"task": "sent", "text": "good film"}] * 50})
        assert status == 200 and len(body["predictions"]) == 50
        assert _post(port, ok)[0] == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)
