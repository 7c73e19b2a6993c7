"""The fan-out: stale adapt@<task> and baseline@<task> stages side by side on a Dask cluster (or threads),
DVC still the source of truth (dvc.lock as `dvc repro` writes it, `dvc status` clean), same weights as a
serial run."""
import os
import subprocess
import sys

import yaml

from pipeline_repo import make_repo, pipeline_env


def _repo(path, tiny_dir, **flows):
    root = make_repo(path, tiny_dir)
    cfg = yaml.safe_load((root / "params.yaml").read_text())
    cfg["adapt"]["tasks"] = ["sent", "pair"]
    cfg["flows"].update({"max_workers": 2, "threads_per_worker": 1, "retries": 0, **flows})
    (root / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def _flows(**changes):
    """The project's ``flows:`` settings with ``changes``."""
    import dataclasses

    from helpers import PROJECT
    from ptv2.config import load_config

    return dataclasses.replace(load_config(PROJECT / "params.yaml").flows, **changes)


def _status(root) -> str:
    r = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, capture_output=True, text=True,
                       env=pipeline_env())
    return r.stdout.strip()


def _lock(root) -> dict:
    return {k: v for k, v in yaml.safe_load((root / "dvc.lock").read_text())["stages"].items()}


def _worker_task_runs() -> int:
    """How many fanned-stage task runs the flow's Prefect server holds."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        return len(client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="stage_on_worker"))))


def test_parallel_fanout_records_what_serial_repro_records(tmp_path, tiny_dir, prefect_harness, monkeypatch):
    from flows.pipeline import pipeline
    from ptv2.files import sha256
    from ptv2.orchestration.dvc_graph import reproduce

    for k, v in {**pipeline_env(), "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PTV2_DATA_ROOT", raising=False)
    serial = _repo(tmp_path / "serial", tiny_dir)
    compared = ["adapt@sent", "adapt@pair", "baseline@pair"]
    # `dvc repro` of the compared stages and what they need (the whole pipeline cost this test ~40 s more)
    assert set(reproduce(serial, compared)) == {"prepare", "pretrain", *compared}
    parallel = _repo(tmp_path / "parallel", tiny_dir, task_runner="dask")
    before = _worker_task_runs()
    ran = pipeline(str(parallel))
    # regression (session 29): each worker started a temporary Prefect server of its own, so the fanned stages'
    # task runs never reached the flow's server
    assert _worker_task_runs() - before >= 4
    assert {"adapt@sent", "adapt@pair", "baseline@sent", "baseline@pair", "export", "report"} <= set(ran)
    for stage in ("adapt@sent", "adapt@pair", "baseline@sent", "baseline@pair"):  # these ran on the workers
        assert "INFO" in (parallel / "logs" / f"{stage}.log").read_text(), stage
    assert _status(parallel) == "Data and pipelines are up to date."
    a, b = _lock(serial), _lock(parallel)
    for stage in compared:  # deps and params recorded as dvc repro does
        assert a[stage]["cmd"] == b[stage]["cmd"] and a[stage]["params"] == b[stage]["params"]
        assert [d["md5"] for d in a[stage]["deps"] if "ptv2" in d["path"]] == \
            [d["md5"] for d in b[stage]["deps"] if "ptv2" in d["path"]]
    for task in ("sent", "pair"):
        w = f"outputs/adapt/{task}/model/adapter.safetensors"
        assert sha256(serial / w) == sha256(parallel / w)  # same seeds, same thread count: same weights
    assert pipeline(str(parallel)) == []  # nothing stale: nothing runs

    # a worker elsewhere gets the outputs from a DVC remote (a local folder here; S3/GCS by config)
    import shutil

    from ptv2.orchestration.dvc_graph import pull, push

    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "shared", str(tmp_path / "remote")], cwd=parallel,
                   check=True, env=pipeline_env())
    push(parallel, "shared")
    for out in ("outputs/adapt/sent", "outputs/adapt/pair", "outputs/bundle"):  # (the .gitignore files stay: git)
        shutil.rmtree(parallel / out)
    shutil.rmtree(parallel / ".dvc/cache")
    pull(parallel, "shared", ["adapt@pair"])  # one stage (and what it needs)
    assert (parallel / "outputs/adapt/pair/model").is_dir() and not (parallel / "outputs/bundle").exists()
    pull(parallel, "shared")  # everything cached
    assert sha256(parallel / "outputs/adapt/pair/model/adapter.safetensors") == \
        sha256(serial / "outputs/adapt/pair/model/adapter.safetensors")
    assert _status(parallel) == "Data and pipelines are up to date."


def test_the_ray_fanout_records_its_stages(tmp_path, tiny_dir, prefect_harness, monkeypatch):
    """flows.task_runner: ray (the [ray] extra: prefect-ray; skipped without it) runs the stale stages on a local
    Ray and DVC records them as `dvc repro` would (session 27: prefect-ray 0.6.0, ray 2.60.0)."""
    import pytest

    pytest.importorskip("prefect_ray")
    from flows.pipeline import configured_adapt

    for k, v in {**pipeline_env(), "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PTV2_DATA_ROOT", raising=False)
    root = _repo(tmp_path / "ray", tiny_dir, task_runner="ray")
    ran = configured_adapt(str(root))
    assert {"adapt@sent", "adapt@pair", "baseline@sent", "baseline@pair"} <= set(ran)
    for stage in ("adapt@sent", "adapt@pair"):  # these ran on the Ray workers
        assert "INFO" in (root / "logs" / f"{stage}.log").read_text(), stage
    assert set(_lock(root)) >= {"adapt@sent", "adapt@pair", "baseline@sent", "baseline@pair"}
    assert configured_adapt(str(root)) == []  # nothing stale: nothing runs


def _pipeline_lock_held(root) -> bool:
    """Whether some run holds the project's pipeline lock (a probe that takes it for an instant when free)."""
    import fcntl

    with open(root / ".dvc" / "tmp" / "ptv2-pipeline.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_a_failed_task_leaves_the_others_recorded_and_reruns_alone(tmp_path, tiny_dir, prefect_harness,
                                                                   monkeypatch, capfd, caplog):
    import pytest

    import flows.pipeline as fp
    from ptv2.orchestration.dvc_graph import stale

    for k, v in pipeline_env().items():
        monkeypatch.setenv(k, v)
    root = _repo(tmp_path / "repo", tiny_dir, task_runner="thread")
    real = fp.run_stage

    held = []

    def pair_fails(r, stage, threads, env):
        held.append(_pipeline_lock_held(root))
        if stage == "adapt@pair":
            raise RuntimeError("simulated worker crash")
        return real(r, stage, threads, env)

    monkeypatch.setattr(fp, "run_stage", pair_fails)
    with pytest.raises(RuntimeError, match=r"\['adapt@pair'\] failed"):
        fp.configured_adapt(str(root))
    # regression (session 29): the fan-out ran its stages without the pipeline lock, so a `dvc repro` started
    # meanwhile ran the same stages into the same folders; it is held from the stale check to the last record
    assert held and all(held), held
    assert not _pipeline_lock_held(root)
    assert stale(root, ["adapt@sent", "adapt@pair"]) == ["adapt@pair"]  # sent is recorded
    # a fanned stage says where its output goes (its worker's logging is Prefect's: on the console, or in the
    # log records once an earlier test's flow configured Prefect's logging in this process)
    said = "".join(capfd.readouterr()) + caplog.text
    assert f"adapt@sent started; its output: {root / 'logs' / 'adapt@sent.log'}" in said
    monkeypatch.setattr(fp, "run_stage", real)
    assert fp.configured_adapt(str(root)) == ["adapt@pair"]  # only the failed one reruns
    assert stale(root, ["adapt@sent", "adapt@pair"]) == []
    # a stage failing on a worker: its output is in logs/<stage>.log, and the error names that file and ends
    # with what the stage printed last
    with pytest.raises(RuntimeError, match=r"(?s)stage adapt@pair failed \(exit 1; whole output: .*adapt@pair\.log\)"
                                           r".*No module named 'encodings'"):
        real(root, "adapt@pair", 1, {"PYTHONHOME": "/nonexistent"})  # a python that cannot start


def test_a_stage_command_is_read_without_changing_the_working_directory(tmp_path, tiny_dir, monkeypatch):
    """Regression: the thread runner's workers each read their stage's command; one worker's chdir back undid
    another's, whose DVC then failed with "Stage 'baseline@sent' not found inside 'dvc.yaml' file"."""
    import os

    from ptv2.orchestration.dvc_graph import stage_command

    for k, v in pipeline_env().items():
        monkeypatch.setenv(k, v)
    root = _repo(tmp_path / "repo", tiny_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    def no_chdir(path):
        raise AssertionError(f"chdir({path}) from a fan-out worker")

    monkeypatch.setattr(os, "chdir", no_chdir)
    assert "ptv2.stages.adapt --task pair" in stage_command(root, "adapt@pair")
    assert "ptv2.stages.baseline --task sent" in stage_command(root, "baseline@sent")


def test_worker_threads_enter_dvc_one_at_a_time(tmp_path, tiny_dir, monkeypatch):
    """Regression (session 21): DVC's dvc.yaml loading is not thread-safe; two thread-runner workers reading
    their stage commands at once failed one with "dvc.yaml validation failed" (expected str @ ...['metrics'][0]).
    Every Repo opened by stage_command is watched: never two at once, and each command is still right."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import dvc.repo

    from ptv2.orchestration.dvc_graph import stage_command

    for k, v in pipeline_env().items():
        monkeypatch.setenv(k, v)
    root = _repo(tmp_path / "repo", tiny_dir)
    real, guard, inside = dvc.repo.Repo, threading.Lock(), [0, 0]  # [open now, most open at once]

    class Watched(real):  # counts from opening a Repo to closing it
        def __init__(self, *a, **kw):
            with guard:
                inside[0] += 1
                inside[1] = max(inside)
            time.sleep(0.05)  # a window wide enough for a second thread to enter
            super().__init__(*a, **kw)

        def __exit__(self, *exc):
            with guard:
                inside[0] -= 1
            return super().__exit__(*exc)

    monkeypatch.setattr(dvc.repo, "Repo", Watched)
    stages = ["adapt@sent", "adapt@pair", "baseline@sent", "baseline@pair"] * 2
    with ThreadPoolExecutor(4) as pool:
        cmds = list(pool.map(lambda s: stage_command(root, s), stages))
    assert inside[1] == 1, f"{inside[1]} threads inside DVC at once"
    for stage, cmd in zip(stages, cmds):
        kind, task = stage.split("@")
        assert f"ptv2.stages.{kind} --task {task}" in cmd, (stage, cmd)


def test_the_ray_runner_without_prefect_ray_names_the_extra(monkeypatch):
    """Regression (session 24): flows.task_runner: ray without the [ray] extra was a bare ModuleNotFoundError."""
    import pytest

    from flows.pipeline import task_runner
    from ptv2.errors import ConfigError

    monkeypatch.setitem(sys.modules, "prefect_ray", None)  # as if not installed (importing it raises ImportError)
    flows = _flows(task_runner="ray")
    with pytest.raises(ConfigError, match=r"flows.task_runner = 'ray' needs prefect-ray: pip install -e '.\[ray\]'"):
        task_runner(flows)


def test_a_user_error_is_not_retried_a_machine_failure_is(tmp_path, tiny_dir, prefect_harness, monkeypatch):
    """Regression (session 26): a flow retried a user error (`data_root` not a folder: flows.retries 2, 30 s
    apart) and only delayed its one line by a minute; a failure of the machine is still retried."""
    import pytest
    from dvc.exceptions import ReproductionError
    from dvc.stage.exceptions import StageCmdFailedError

    import flows.pipeline as fp
    from ptv2.errors import ConfigError, RunError
    from ptv2.orchestration.failures import fails_again

    for k, v in pipeline_env().items():
        monkeypatch.setenv(k, v)
    root = _repo(tmp_path / "repo", tiny_dir, task_runner="thread", retries=2, retry_delay_s=0)
    for error, tries in ((ConfigError("data_root 'x' (params.yaml) is not a folder"), 1), (OSError("disk full"), 3)):
        calls = []

        def fails(r, targets=None, error=error):
            calls.append(targets)
            raise error

        monkeypatch.setattr(fp, "reproduce", fails)
        with pytest.raises(type(error)):
            fp.pretrain(str(root))
        assert len(calls) == tries, (error, calls)

    # a stage that DVC ran and that exited 2 (its one line), or one on a worker: user errors too
    def from_dvc(status):
        try:
            try:
                raise StageCmdFailedError("ptv2 adapt --task pair", status)
            except StageCmdFailedError as e:
                raise ReproductionError("failed to reproduce 'adapt@pair'") from e
        except ReproductionError as e:
            return e

    assert fails_again(from_dvc(2)) and not fails_again(from_dvc(1)) and not fails_again(from_dvc(None))
    monkeypatch.setenv("PTV2_DATA_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(RunError, match=r"(?s)stage baseline@pair failed \(exit 2;.*nowhere"):
        fp.run_stage(root, "baseline@pair", 1)


def test_the_stages_run_on_this_python_where_the_venv_is_not_activated(tmp_path, tiny_dir, monkeypatch):
    """Regression (session 27): `.venv/bin/python flows/run.py` without an activated venv ran the stages'
    `python` from PATH (the system's: "No module named 'datasets'", retried twice, then Prefect's traceback);
    in-process DVC and the fan-out's workers now put their own interpreter first."""
    from ptv2.orchestration.dvc_graph import reproduce, run_stage

    for k, v in pipeline_env().items():
        monkeypatch.setenv(k, v)
    root = _repo(tmp_path / "repo", tiny_dir)
    other = tmp_path / "bin"
    other.mkdir()
    (other / "python").write_text("#!/bin/sh\necho 'another python' >&2\nexit 3\n")
    (other / "python").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(other), "/usr/bin", "/bin"]))
    assert reproduce(root, ["prepare"]) == ["prepare"]
    monkeypatch.setenv("PATH", os.pathsep.join([str(other), "/usr/bin", "/bin"]))  # a worker's own environment
    assert run_stage(root, "baseline@sent", 1) == "baseline@sent"


def test_a_dask_scheduler_that_does_not_answer_is_one_line(monkeypatch):
    """Regression (session 26): PTV2_CLUSTER=tcp://HOST:PORT with no scheduler there was Dask's OSError
    traceback 30 s into the flow; now one line naming the setting, before the flow starts."""
    import dataclasses
    import socket

    import pytest

    from flows.pipeline import task_runner
    from ptv2.errors import ConfigError

    flows = _flows(task_runner="dask")
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        monkeypatch.setenv("PTV2_CLUSTER", f"tcp://127.0.0.1:{port}")
        with pytest.raises(ConfigError, match=rf"no Dask scheduler answers at \$PTV2_CLUSTER = 'tcp://127.0.0.1:{port}'"
                                              r" \(Connection refused\): start one"):
            task_runner(flows)
    monkeypatch.delenv("PTV2_CLUSTER")
    for bad in ("garbage", "http://127.0.0.1:8786", "tcp://127.0.0.1"):
        with pytest.raises(ConfigError, match=r"flows.cluster_address = .* is not a Dask scheduler address"):
            task_runner(dataclasses.replace(flows, cluster_address=bad))
    with socket.socket() as s:  # one that listens: the runner is built for it
        s.bind(("127.0.0.1", 0))
        s.listen()
        runner = task_runner(dataclasses.replace(flows, cluster_address=f"tcp://127.0.0.1:{s.getsockname()[1]}"))
        assert type(runner).__name__ == "DaskTaskRunner"


def test_a_second_pipeline_run_says_whom_it_waits_for(tmp_path, caplog):
    """Regression (session 28): a second ./scripts/run.sh in a project sat silent for minutes behind the first,
    then printed "nothing (up to date)"; it now says which process it waits for, then waits."""
    import threading

    from ptv2.orchestration.dvc_graph import pipeline_lock

    entered, release, order = threading.Event(), threading.Event(), []

    def first():
        with pipeline_lock(tmp_path):
            entered.set()
            release.wait(10)
            order.append("first")

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(10)
    threading.Timer(0.5, release.set).start()
    with caplog.at_level("WARNING", logger="ptv2.orchestration.dvc_graph"), pipeline_lock(tmp_path):
        order.append("second")  # only once the first has let go
    t.join()
    assert order == ["first", "second"]
    assert (f"another pipeline run holds {tmp_path} (pid {os.getpid()}: {sys.argv[0]}" in caplog.text
            and "waiting for it to finish" in caplog.text)


def test_dvc_lines_are_not_printed_twice_under_a_root_handler():
    """Regression (session 28): under Prefect (a handler on the root logger) every DVC line of a flow's log came
    twice, bare from DVC's own handler and formatted from Prefect's."""
    import logging

    import ptv2.orchestration.dvc_graph  # noqa: F401  (what the flows import)

    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    root = logging.getLogger()
    catch = Catch(logging.INFO)
    root.addHandler(catch)
    try:
        logging.getLogger("dvc.stage").warning("Stage 'prepare' didn't change, skipping")
        logging.getLogger("ptv2.orchestration.dvc_graph").warning("ours")
    finally:
        root.removeHandler(catch)
    assert seen == ["ours"]


def test_a_local_dask_cluster_starts_without_flooding_the_flows_log(monkeypatch):
    """Regression (session 28): a local cluster's scheduler and workers logged ~70 INFO lines of start-up (68 of a
    fan-out's ~90 lines on /work/pipe10); the scheduler's side and the workers' (through the environment they
    inherit) now log warnings only."""
    import logging

    from flows.pipeline import task_runner

    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)
    monkeypatch.delenv("PTV2_CLUSTER", raising=False)
    level = logging.getLogger("distributed").level
    try:
        flows = _flows(task_runner="dask", cluster_address="")
        runner = task_runner(flows)
        assert runner.cluster_kwargs["silence_logs"] == logging.WARNING
        assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "warning"
        assert logging.getLogger("distributed").level == logging.WARNING
    finally:
        logging.getLogger("distributed").setLevel(level)



def test_the_local_dask_cluster_reports_to_the_flows_server_and_shows_its_dashboard(prefect_harness, monkeypatch):
    """Regressions (session 29), on the cluster the fan-out's runner builds, with no PREFECT_API_URL set (the flow on
    Prefect's temporary server, as `python flows/run.py` runs by default): each worker started a temporary server of
    its own (its task runs never reached the flow's); the log's "The Dask dashboard is available at
    http://127.0.0.1:8787/status" answered 404 (no dashboard asked for, bokeh missing)."""
    import urllib.request

    from distributed import Client, LocalCluster
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import task_runner

    monkeypatch.delenv("PTV2_CLUSTER", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    flows = _flows(task_runner="dask", cluster_address="")
    runner = task_runner(flows)
    make = runner.cluster_class or LocalCluster  # as prefect-dask builds it
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not PREFECT_API_URL.value()
        cluster = make(**{**runner.cluster_kwargs, "n_workers": 1})
    with cluster, Client(cluster) as client:
        seen = client.run(os.getenv, "PREFECT_API_URL")  # in each worker process: {worker address: value}
        assert list(seen.values()) == [SubprocessASGIServer().api_url]
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as r:
            assert b"Dask Diagnostic UI" in r.read()


def test_a_local_ray_reports_to_the_flows_server(prefect_harness, monkeypatch):
    """Regression (session 29; the [ray] extra, skipped without it): each Ray worker of the fan-out started a
    temporary Prefect server of its own (session 27's run: "(stage_on_worker pid=10220) Starting temporary server"),
    as the Dask workers did; a local Ray's job now carries the flow's API URL."""
    import pytest

    pytest.importorskip("prefect_ray")
    import ray
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import task_runner

    monkeypatch.delenv("PTV2_CLUSTER", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    flows = _flows(task_runner="ray", cluster_address="", max_workers=1)
    with temporary_settings(restore_defaults={PREFECT_API_URL}), task_runner(flows):
        seen = ray.get(ray.remote(lambda: os.environ.get("PREFECT_API_URL")).remote())
    assert seen == SubprocessASGIServer().api_url


def test_the_adapt_flows_tasks_parameter_names_adapted_tasks(tmp_path, tiny_dir):
    """Regression: the adapt flow started with a task that is not adapted (a deployment's parameter, typed in the
    Prefect UI) ended in DVC's NoOutputOrStageError traceback ('adapt@nope' does not exist); a task named twice
    was run twice at once, into one folder."""
    import pytest

    from flows.pipeline import adapt
    from ptv2.config import load_config
    from ptv2.errors import ConfigError

    root = _repo(tmp_path / "p", tiny_dir)
    with pytest.raises(ConfigError, match=r"the adapt flow's tasks \['nope'\] are not adapted tasks: name tasks of "
                                          r"params.yaml's adapt.tasks \['sent', 'pair'\]"):
        adapt.fn(str(root), ["sent", "nope"])  # before any stage runs
    assert not (root / "outputs").exists()
    from flows.pipeline import adapted_tasks

    cfg = load_config(root / "params.yaml")
    assert adapted_tasks(cfg, ["pair", "sent", "pair"]) == ["pair", "sent"]
    assert adapted_tasks(cfg, None) == adapted_tasks(cfg, []) == ["sent", "pair"]
