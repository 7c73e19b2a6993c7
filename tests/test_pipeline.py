"""dvc.yaml against the schema, and the retraining flow on a tiny pipeline in a temp git repo."""
import dataclasses
import json
import os
import subprocess
import shutil
import sys
import typing
from pathlib import Path

import pytest
import yaml

from pipeline_repo import PROJECT, make_repo, pipeline_env
from ptv2.config import Config


def _schema_has(key: str) -> bool:
    tp: typing.Any = Config
    for part in key.split("."):
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                return False
            tp = hints[part]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]  # any name (e.g. tasks.<name>)
        else:
            return False
    return True


def test_every_dvc_param_exists_in_the_schema():
    dvc = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    keys = set()
    for stage in dvc["stages"].values():
        for p in stage.get("params", stage.get("do", {}).get("params", [])):
            keys.add(p.replace("${item}", "x"))
    assert keys and all(_schema_has(k) for k in keys), [k for k in keys if not _schema_has(k)]
    assert not _schema_has("train.nope")


def test_each_project_has_its_own_deployment(tmp_path):
    from flows.serve import deployment_name

    a, b = tmp_path / "a" / "proj", tmp_path / "b" / "proj"
    names = {deployment_name(a), deployment_name(b), deployment_name(tmp_path / "my proj/")}
    assert len(names) == 3 and deployment_name(a) == deployment_name(a)
    assert all(not set(n) & set("/%&><") and " " not in n for n in names), names  # Prefect's name rule


def test_deployment_has_cron_and_concurrency_limit_1():
    from flows.serve import retrain_deployment

    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    d = retrain_deployment(PROJECT, cron="*/1 * * * *")
    assert d.concurrency_limit == 1
    # regression (session 31): runs that came due during a run were queued (Prefect's default), a backlog
    # without end when the cron is shorter than the pipeline
    assert d.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    assert d.schedules[0].schedule.cron == "*/1 * * * *"
    default = retrain_deployment(PROJECT)
    # regression (session 31): every project's deployment was "scheduled-retrain": two projects on one Prefect
    # server shared it, and one project's runner ran the other's scheduled pipeline
    assert d.name == default.name and d.name.startswith(f"retrain-{PROJECT.name}-")
    assert default.schedules[0].schedule.cron == yaml.safe_load((PROJECT / "params.yaml").read_text())["flows"]["retrain_cron"]


def test_a_bad_cron_on_the_command_line_is_one_line():
    """Regression (session 24): `python flows/serve.py "not a cron"` ended in Prefect's ValueError traceback."""
    r = subprocess.run([sys.executable, str(PROJECT / "flows/serve.py"), "61 * * * *"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == ("ptv2: error: flows.retrain_cron = '61 * * * *' is not allowed: expected a 5-field "
                                "cron string Prefect accepts, e.g. '0 3 * * *' (minute 0-59, hour 0-23)"), r.stderr
    # session 44: `--help` was read as the cron; now argparse's help, and an unknown option its usage (exit 2)
    r = subprocess.run([sys.executable, str(PROJECT / "flows/serve.py"), "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: python flows/serve.py [-h] [cron]"), r.stdout + r.stderr
    r = subprocess.run([sys.executable, str(PROJECT / "flows/serve.py"), "--now"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "unrecognized arguments: --now" in r.stderr and "Traceback" not in r.stderr


def test_a_flow_from_the_command_line_checks_the_project_before_prefect(tmp_path, monkeypatch):
    """Regression (session 26): the README's `python -c "from flows.pipeline import configured_adapt; ..."` met a
    data_root that is not a folder as Prefect's traceback, after a minute of retries; `python flows/run.py`
    says it in one line (exit 2) before any flow starts, and runs the named flow on the project's folder."""
    cfg = yaml.safe_load((PROJECT / "params.yaml").read_text())
    cfg["data_root"] = str(tmp_path / "no-data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "PTV2_DATA_ROOT"}
    cfg["data_root"] = str(tmp_path)  # a folder: the cluster is what is wrong here
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok/params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    outside = tmp_path.parent / f"{tmp_path.name}-outside"  # no git work tree around it
    for folder in (outside / "no-git", outside / "no-dvc"):  # a params.yaml alone is no project (session 27:
        folder.mkdir(parents=True)                             # DVC's SCMError traceback, a .dvc/ left there)
        (folder / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for folder in (tmp_path, tmp_path / "ok", outside / "no-git"):
        (folder / ".dvc").mkdir()
        shutil.copy(PROJECT / "dvc.yaml", folder / "dvc.yaml")
    for folder in (tmp_path, tmp_path / "ok"):
        subprocess.run(["git", "init", "-q", str(folder)], check=True)
    for args, needle in ((["adapt", "--root", str(tmp_path)], f"data_root '{tmp_path / 'no-data'}' (params.yaml) "
                                                               "is not a folder"),
                         (["--root", str(tmp_path / "nowhere")], "nowhere is not a ptv2 project (no dvc.yaml"),
                         (["--root", "~/nowhere", f"HOME={tmp_path}"], f"{tmp_path}/nowhere is not a ptv2 project"),
                         (["--root", str(outside / "no-dvc")], "no-dvc is not a ptv2 project (no dvc.yaml and no "
                                                               ".dvc): run from a clone of the project"),
                         (["--root", str(outside / "no-git")], "no-git is not in a git work tree"),
                         (["train"], "invalid choice: 'train'"),
                         (["--root", str(tmp_path / "ok"), "PTV2_CLUSTER=tcp://127.0.0.1:1"],
                          "no Dask scheduler answers at $PTV2_CLUSTER = 'tcp://127.0.0.1:1' (Connection refused)"),
                         # a Prefect server of the user's that is down: Prefect's "Failed to reach API" traceback
                         (["pretrain", "--root", str(tmp_path / "ok"), "PREFECT_API_URL=http://127.0.0.1:1/api"],
                          "no Prefect server answers at PREFECT_API_URL = 'http://127.0.0.1:1/api' ([Errno 111] "
                          "Connection refused): start it (prefect server start), fix the URL, or unset"),
                         # session 41: a home Prefect cannot make (a container's absent HOME): 120 s of tracebacks
                         (["pretrain", "--root", str(tmp_path / "ok"), f"PREFECT_HOME={tmp_path}/gone/.prefect"],
                          f"Prefect's temporary server cannot keep its database in '{tmp_path}/gone/.prefect' (")):
        extra = dict(a.split("=", 1) for a in args if "=" in a)
        r = subprocess.run([sys.executable, str(PROJECT / "flows/run.py"), *[a for a in args if "=" not in a]],
                           capture_output=True, text=True, env={**env, **extra}, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and needle in r.stderr, (args, r.stderr[-2000:])
        assert "Flow run" not in r.stderr + r.stdout  # no Prefect flow was started
    assert not (outside / "no-dvc/.dvc").exists()
    import importlib.util

    spec = importlib.util.spec_from_file_location("flows_run", PROJECT / "flows/run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.delenv("PTV2_DATA_ROOT", raising=False)
    (tmp_path / "no-data").mkdir()
    ran = []
    monkeypatch.setitem(run.FLOWS, "retrain", ran.append)
    assert run.main(["retrain", "--root", f"{tmp_path}/."]) == 0 and ran == [str(tmp_path)]


def test_a_flow_started_from_another_folder_keeps_the_projects_prefect_settings(tmp_path):
    """Regression: prefect.toml (no analytics from the temporary server, 120 s for it to start) is read only in the
    project's folder: `python /path/flows/run.py` from elsewhere, without scripts/env.sh, ran with Prefect's
    analytics on and a 20 s start-up limit (the server takes 10-19 s here). The flows package sets both first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_") and k != "DO_NOT_TRACK"}
    show = ("from prefect.settings import get_current_settings as g; s = g().server; "
            "print(s.ephemeral.startup_timeout_seconds, s.analytics_enabled)")
    for first in ("import flows.pipeline", f"import runpy; runpy.run_path({str(PROJECT / 'flows/run.py')!r})"):
        r = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(PROJECT)!r}); {first}; {show}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.split() == ["120", "False"], (first, r.stdout, r.stderr[-1500:])


def test_the_temporary_servers_library_tracebacks_stay_out_of_a_flows_output(tmp_path):
    """Regression (session 41): Prefect's temporary server, stopped at a flow's end, logged SQLAlchemy's "Exception
    during reset or similar" with a CancelledError traceback after the flow's one-line error (Prefect #16504; met
    in test_faults' entry point test). Processes the flows start that set up Prefect's logging (the server, local
    workers) keep libraries' root-level lines to CRITICAL; the flow's own process and Prefect's loggers are as
    they were."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_ROOT_LEVEL"}
    child = ("import logging; from prefect.logging.configuration import setup_logging; setup_logging(); "
             "logging.getLogger('sqlalchemy.pool.impl.AsyncAdaptedQueuePool').error('Exception during reset'); "
             "logging.getLogger('prefect.server').error('the server speaks')")
    flow = (f"import sys, logging, subprocess; sys.path.insert(0, {str(PROJECT)!r}); import flows.pipeline; "
            "logging.getLogger('mlflow.x').warning('the flow process keeps library warnings'); "
            f"subprocess.run([sys.executable, '-c', {child!r}])")
    r = subprocess.run([sys.executable, "-c", flow], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "the server speaks" in r.stderr and "the flow process keeps library warnings" in r.stderr, r.stderr
    assert "Exception during reset" not in r.stderr, r.stderr


def test_dvc_in_the_project_sends_no_analytics_without_scripts_env():
    """Regression: a plain `dvc repro` (or `dvc exp show`) in the project, without scripts/env.sh's DVC_NO_ANALYTICS,
    had DVC's usage analytics on; the project's own .dvc/config turns them off for every clone."""
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_NO_ANALYTICS", "DVC_TEST")}
    r = subprocess.run([sys.executable, "-c", "from dvc.analytics import is_enabled; print(is_enabled())"],
                       cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr[-1000:]


def test_the_schedule_is_served_only_on_a_prefect_server_that_answers():
    """Regression (session 26): `python flows/serve.py` without PREFECT_API_URL served the deployment on the
    temporary server Prefect starts, which runs no scheduler: the cron never fired, and nothing said so; an
    unreachable PREFECT_API_URL was httpx's ConnectError traceback. Both are one line now, exit 2."""
    import http.server
    import threading

    import pytest

    from flows.serve import check_prefect_server
    from ptv2.errors import ConfigError

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    for url, needle in ((None, "a schedule needs a Prefect server: run `prefect server start` and export "
                               "PREFECT_API_URL=http://127.0.0.1:4200/api"),
                        ("http://127.0.0.1:1/api", "no Prefect server answers at PREFECT_API_URL = "
                                                   "'http://127.0.0.1:1/api' ([Errno 111] Connection refused)")):
        r = subprocess.run([sys.executable, str(PROJECT / "flows/serve.py")], capture_output=True, text=True,
                           env={**env, **({"PREFECT_API_URL": url} if url else {})}, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and needle in r.stderr, r.stderr[-2000:]
        assert "being served" not in r.stdout + r.stderr

    class Answers(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # /api/health: 200 from a server, 401 from Prefect Cloud without its key
            self.send_response(200 if self.path == "/api/health" else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Answers) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        check_prefect_server(f"{base}/api")  # a server answers: served
        check_prefect_server(f"{base}/accounts/a/workspaces/w")  # an answer that asks for a key counts
        httpd.shutdown()
    with pytest.raises(ConfigError, match="no Prefect server answers"):
        check_prefect_server("not a url")


def test_a_prefect_server_behind_its_own_ca_is_checked_with_prefects_tls_settings(tls_health_server):
    """Regression (session 41): the Prefect API check was a plain urllib request, blind to Prefect's TLS settings: a
    server behind its own CA, which Prefect reaches with PREFECT_API_SSL_CERT_FILE (or
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY), was refused as "self-signed certificate" before the flow."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

    from flows.pipeline import check_prefect_api
    from ptv2.errors import ConfigError

    uri, cert = tls_health_server
    with pytest.raises(ConfigError, match="self-signed certificate"):
        check_prefect_api(uri, "fix it")
    with temporary_settings({PREFECT_API_SSL_CERT_FILE: str(cert)}):
        check_prefect_api(uri, "fix it")
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        check_prefect_api(uri, "fix it")


def test_a_dvc_remote_the_project_lacks_is_one_line_before_any_work(tmp_path, tiny_dir):
    """Regression (session 26): flows.dvc_remote naming no remote of the project failed the retraining flow at
    its very end (DVC's error when it pushed), after every stage had run; now before any work."""
    import pytest

    from ptv2.errors import ConfigError
    from ptv2.orchestration.dvc_graph import check_remote

    root = make_repo(tmp_path / "repo", tiny_dir)
    check_remote(root, "")  # none: nothing to push, nothing to check
    with pytest.raises(ConfigError, match=r"flows.dvc_remote = 'shared' is not a DVC remote of this project \(its "
                                          r"remotes: none\): add it \(dvc remote add shared URL\)"):
        check_remote(root, "shared")
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "shared", str(tmp_path / "remote")], cwd=root,
                   check=True, env=pipeline_env())
    check_remote(root, "shared")
    cfg = yaml.safe_load((root / "params.yaml").read_text())
    cfg["flows"]["dvc_remote"] = "other"
    (root / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {k: v for k, v in {**os.environ, **pipeline_env()}.items() if k != "PTV2_DATA_ROOT"}
    r = subprocess.run([sys.executable, str(PROJECT / "flows/run.py"), "retrain", "--root", str(root)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "flows.dvc_remote = 'other' is not a DVC remote of this project (its remotes: shared)" in r.stderr
    assert "Flow run" not in r.stdout + r.stderr and not (root / "outputs").exists()  # nothing ran


def _relabel(root: Path, how: str) -> None:
    from helpers import write_sentiment_tsv

    path = root / "data/sent/train.tsv"
    write_sentiment_tsv(path, 200, 0)
    if how == "clean":
        return
    lines = path.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        text, y = line.rsplit("\t", 1)
        out.append(f"{text}\t{1 - int(y)}")  # "flipped": every label inverted
    path.write_text("\n".join(out) + "\n")


def _dvc_plots_show_the_curves(root: Path) -> None:
    """Regression (session 29): `dvc plots show` said "No plots were loaded"; it now draws each adapted task's val
    score per epoch from report/curves/<task>.csv, the history of outputs/adapt/<task>/metrics.json, which the
    report stage reads and now depends on (a changed history left the report up to date)."""
    def dvc(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                              env=pipeline_env(), check=True).stdout

    shown = json.loads(dvc("plots", "show", "--json"))["data"]
    assert {"report/curves/sent.csv", "report/curves.png", "report/tasks.png"} <= set(shown)
    points = shown["report/curves/sent.csv"][0]["content"]["data"]["values"]
    record = root / "outputs/adapt/sent/metrics.json"
    history = json.loads(record.read_text())["history"]
    assert [(int(p["epoch"]), round(float(p["val_score"]), 6)) for p in points] == \
        [(h["epoch"], round(h["val_score"], 6)) for h in history]
    text = record.read_text()
    try:
        record.write_text(text + " ")  # the same JSON, other bytes
        assert "report:" in dvc("status", "report")
    finally:
        record.write_text(text)


def test_retrain_flow_registers_and_gates(tmp_path, tiny_dir, prefect_harness, monkeypatch, capsys):
    from flows.pipeline import retrain
    from ptv2.tracking import registry
    from ptv2.tracking import store as tracking

    for k, v in pipeline_env().items():
        monkeypatch.setenv(k, v)
    root = make_repo(tmp_path / "repo", tiny_dir)
    cfg = yaml.safe_load((root / "params.yaml").read_text())
    cfg["pretrain"]["tasks"] = ["pair"]  # sent is held out: changing its data skips pretraining
    (root / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _relabel(root, "clean")  # the trained model, or else the frozen baseline, beats the trivial one
    better = retrain(str(root))
    assert {"pretrain", "adapt@sent", "baseline@sent"} <= set(better["ran"])
    p = better["promotions"][0]
    assert set(p["baselines"]) == {"trivial", "frozen"}, p
    winner = p if p["promoted"] else p["frozen_candidate"]
    assert winner["promoted"] and winner["p_vs_baseline"] < 0.05, better
    champ, tags = registry.alias_version(root, "ptv2-sent", "champion")
    assert champ == winner["version"] and tags["candidate"] == winner["candidate"]
    import mlflow

    card = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri(root)).get_model_version("ptv2-sent", champ).description
    assert card.startswith("# ptv2-sent") and "- **Gate** (accuracy" in card and "trivial" in card, card
    assert "decision: promoted" in card and "## Intended use and limits" in card
    if winner["candidate"] == "trained":  # it had to beat the frozen backbone too
        assert float(tags["gate.p_vs_frozen"]) < 0.05 and float(tags["gate.p_vs_trivial"]) < 0.05
    else:  # the trained one did not: the gate said which baseline it failed
        assert "frozen baseline" in p["reason"] or "trivial baseline" in p["reason"]
    assert better["published"]["published"] and better["published"]["tasks"] == {"sent": champ}
    all_tags = registry.alias_version(root, "ptv2-all", "champion")[1]
    assert all_tags["task.sent.version"] == champ and all_tags["task.sent.model"] == "ptv2-sent"
    assert all_tags["task.sent.served"] == "int8"  # serving.int8_min_agreement 0 here: int8 serves it

    versions = [r["version"] for r in registry.list_versions(root, "ptv2-sent")]
    assert retrain(str(root)) == {"ran": [], "promotions": [], "published": None}  # nothing changed: no new version
    assert [r["version"] for r in registry.list_versions(root, "ptv2-sent")] == versions

    _relabel(root, "flipped")  # worse -> registered, not promoted (nor is a frozen head fitted on flipped labels)
    retrain_out = retrain(str(root))
    assert "pretrain" not in retrain_out["ran"]  # sent is held out of pretraining: its data does not rerun it
    worse = retrain_out["promotions"][0]
    assert "baseline" in worse["reason"] or "champion" in worse["reason"], worse
    assert not worse["promoted"] and worse["champion_before"] is not None
    assert not worse.get("frozen_candidate", {}).get("promoted", False)
    assert registry.alias_version(root, "ptv2-sent", "champion")[0] == champ
    assert registry.alias_version(root, "ptv2-sent", "challenger")[0] != champ
    assert retrain_out["published"] == {"published": False, "version": "1", "tasks": {"sent": champ}, "dropped": [],
                                        "candidates": {"sent": winner["candidate"]},
                                        "reason": "champions and serving config unchanged"}  # no champion changed: not rebuilt
    assert os.path.isfile(root / "report/tasks.png")
    _dvc_plots_show_the_curves(root)
    start = json.loads((root / "outputs/adapt/sent/metrics.json").read_text())["start"]  # the report says where it began
    assert start in ("pretrained", "own (pretraining kept its step 0)")
    metrics_md, gate_md = (root / "report/metrics.md").read_text().split("## Promotion gate")
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in metrics_md.splitlines() if r.startswith("|")]
    assert rows[0][-1] == "started from" and [r[-1] for r in rows if r[0] == "sent"] == [start]
    assert rows[0][2] == "method" and [r[2] for r in rows if r[0] == "sent"] == ["ptv2"]
    # the report says what the gate decided and what is served (session 25: only the logs and `ptv2 registry` did)
    [gate_row] = [[c.strip() for c in r.strip("|").split("|")] for r in gate_md.splitlines() if r.startswith("| sent")]
    kind = "the frozen baseline (an earlier champion)" if winner["candidate"] == "frozen" else "an earlier champion"
    assert gate_row[2] == "no" and gate_row[3] == worse["reason"] and gate_row[4] == f"v{champ}, {kind}"
    n_versions = len(registry.list_versions(root, "ptv2-sent"))

    from ptv2.cli import main

    capsys.readouterr()
    assert main(["registry", "--params", str(root / "params.yaml")]) == 0
    listing = capsys.readouterr().out
    assert "p vs baseline" in listing and len([x for x in listing.splitlines() if "ptv2-sent" in x]) == n_versions
    assert f"serves sent v{champ}" in listing  # the multi-task model's row says what it serves

    # regression (session 39): a stage whose deps DVC has seen before is restored from its run cache, metrics
    # with `cache: false` included, without running: after a params.yaml change and its revert, the promote
    # and publish stages brought back the first run's decisions ("no champion yet", versions long superseded)
    # and registered nothing, while the registry kept the reverted run's champion
    before = yaml.safe_load((root / "params.yaml").read_text())
    changed = {**before, "tracking": {**before["tracking"], "promote_margin": 0.5}}
    for params in (changed, before):
        known = {int(v["version"]) for v in registry.list_versions(root, "ptv2-sent")}
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        r = subprocess.run([sys.executable, "-m", "dvc", "repro", "publish"], cwd=root, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0 and "is cached" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
        decision = json.loads((root / "metrics/promote/sent.json").read_text())
        assert int(decision["version"]) > max(known), decision  # this run's candidate, registered by this run

    # regression (session 33): in a fresh store (a clone that pulled the outputs from a DVC remote, a deleted
    # mlruns.db) `dvc repro` is up to date, nothing is registered, and forcing the promote stage failed with
    # "Run with id=... not found": the candidates are now logged into new runs of this store and registered
    (root / "mlruns.db").rename(tmp_path / "old.db")
    shutil.rmtree(root / "mlartifacts")
    assert main(["registry", "--params", str(root / "params.yaml")]) == 0
    assert "register them in this one with `dvc repro --force --downstream promote@<task>`" in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "--downstream", "promote@sent"], cwd=root,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "is not in this project's store" in r.stderr, r.stderr[-3000:]
    # read from a new process: this one's MLflow client keeps a connection to the renamed database
    listing = subprocess.run([sys.executable, "-m", "ptv2", "registry", "--params", str(root / "params.yaml")],
                             cwd=root, capture_output=True, text=True, timeout=600)
    versions = {[c.strip() for c in x.strip("|").split("|")][1] for x in listing.stdout.splitlines()
                if x.startswith("| ptv2-sent ")}
    assert listing.returncode == 0 and "1" in versions <= {"1", "2"}, listing.stdout + listing.stderr  # the new store


def test_outputs_linked_out_of_the_project_are_one_line_before_any_stage(tmp_path, tiny_dir, monkeypatch):
    """Regression (session 42): with `outputs` a link to a larger disk, the prepare stage ran and wrote there, then
    DVC failed the next stage ("'…/outputs/pretrain' is outside of git repository", exit 1); now one line naming
    the link and the fix before any stage runs."""
    from ptv2.errors import ConfigError
    from ptv2.orchestration.dvc_graph import reproduce

    for k, v in pipeline_env().items():
        monkeypatch.setenv(k, v)
    root = make_repo(tmp_path / "repo", tiny_dir)
    elsewhere = tmp_path / "big" / "outputs"
    elsewhere.mkdir(parents=True)
    (root / "outputs").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"outputs/prepare resolves to .*big/outputs/prepare, outside the project: "
                                          r"DVC keeps only outputs inside its git repository \(outputs is a link out "
                                          r"of it\); .*dvc cache dir PATH"):
        reproduce(root)
    assert not any(elsewhere.iterdir())  # no stage ran


def test_backbone_weights_replaced_behind_the_same_name_retrain_what_was_trained_on_them(tmp_path, tiny_dir,
                                                                                        monkeypatch, caplog):
    """Regression (session 39): the backbone's files were no DVC dependency, so after weights were replaced
    behind the same `backbone.name` (a folder retrained in place, an upgraded package) `dvc repro` found every
    stage up to date. The prepare stage records the files' sha256 (outputs/prepare/backbone.json, a dep of the
    training stages) and the pipeline's entry point reruns it when they changed."""
    from safetensors.torch import load_file, save_file

    from ptv2.orchestration.dvc_graph import reproduce

    for k, v in pipeline_env().items():
        monkeypatch.setenv(k, v)
    bb = tmp_path / "backbone"
    shutil.copytree(tiny_dir, bb)
    root = make_repo(tmp_path / "repo", bb)
    assert set(reproduce(root, ["pretrain"])) == {"prepare", "pretrain"}
    assert reproduce(root, ["pretrain"]) == []  # nothing changed: nothing runs, the backbone hashed or not
    weights = load_file(str(bb / "model.safetensors"))
    name = sorted(weights)[0]
    save_file({**weights, name: weights[name] + 0.5}, str(bb / "model.safetensors"))
    with caplog.at_level("WARNING", logger="ptv2.orchestration.dvc_graph"):
        assert set(reproduce(root, ["pretrain"])) == {"prepare", "pretrain"}
    assert "its files changed since the last run" in caplog.text
    assert reproduce(root, ["pretrain"]) == []


@pytest.mark.slow  # 83 s; its pieces (LoRA adaptation, export, gate) have fast tests in test_multitask and test_onnx
def test_pipeline_runs_a_lora_method_end_to_end(tmp_path, tiny_dir):
    """`train.method: lora` through the same DVC graph: a shared LoRA pretrained on the mixture, adapted
    per task from it, merged into one ONNX bundle per task, gated and registered."""
    import json
    import subprocess
    import sys

    root = make_repo(tmp_path / "repo", tiny_dir)
    cfg = yaml.safe_load((root / "params.yaml").read_text())
    cfg["train"]["method"] = "lora"
    cfg["train"]["lr"]["lora"] = 5e-2
    cfg["train"]["epochs"]["lora"] = 1
    cfg["train"]["head_init"] = "random"  # no step 0 to keep: pretraining keeps an epoch, so adaptation copies it
    cfg["adapt"]["tasks"] = ["sent", "pair"]
    (root / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, env=pipeline_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    # session 45: log_model's own downloads put MLflow's bar, each \r update, into the stages' logs
    assert "Downloading artifacts" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    export = json.loads((root / "metrics/export.json").read_text())
    for task in ("sent", "pair"):
        assert (root / f"outputs/bundle/{task}/manifest.json").is_file()  # one bundle per task: own weights
        assert export[task]["parity_ok"], export[task]
        assert json.loads((root / f"metrics/promote/{task}.json").read_text())["version"] == "1"
        meta = json.loads((root / f"outputs/adapt/{task}/model/adapter_config.json").read_text())
        assert meta["method"] == "lora" and meta["adapted_from"]["weights_sha256"]
        assert json.loads((root / f"outputs/adapt/{task}/metrics.json").read_text())["start"] == "pretrained"
    report = (root / "report/metrics.md").read_text().split("## Promotion gate")[0]
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in report.splitlines() if r.startswith("|")]
    assert rows[0][2] == "method" and sorted(r[2] for r in rows if r[0] in ("sent", "pair")) == ["lora", "lora"]


def test_a_killed_dvc_repro_resumes_adaptation_from_its_checkpoint(tmp_path, tiny_dir):
    """Regression: DVC deleted a stage's outputs before rerunning it, checkpoint included, so a killed
    `dvc repro` restarted training from scratch. The outs are persisted; the run key guards staleness."""
    import json
    import subprocess
    import sys

    from helpers import kill_after_checkpoint, write_sentiment_tsv

    root = make_repo(tmp_path / "repo", tiny_dir)
    write_sentiment_tsv(root / "data/sent/train.tsv", 4000, 0)
    cfg = yaml.safe_load((root / "params.yaml").read_text())
    cfg["adapt"]["epochs"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = pipeline_env()
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q", "pretrain"], cwd=root, env=env, check=True,
                   capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "adapt@sent"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = kill_after_checkpoint(proc, root / "outputs/adapt/sent/checkpoint/state.json")
    assert 1 <= done < 4 and not (root / "outputs/adapt/sent/metrics.json").exists()
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", "adapt@sent"], cwd=root, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"after epoch {done}" in r.stdout + r.stderr
    assert json.loads((root / "outputs/adapt/sent/metrics.json").read_text())["epochs_run"] == 4
