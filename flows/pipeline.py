"""Prefect flows: the full pipeline (DVC graph), pretrain, the adapt fan-out, and retraining.

Everything comes from params.yaml (``flows:``): retries, the task runner of the fan-out (thread pool,
a local or existing Dask cluster, or Ray), its workers and threads. DVC stays the source of truth:
stale ``adapt@<task>`` and ``baseline@<task>`` stages run side by side on the workers, then DVC records
each finished one.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from prefect import flow, get_run_logger, task

from ptv2.config import Config, FlowsConfig, load_config
from ptv2.errors import ArtifactError, ConfigError
from ptv2.files import check_writable
from ptv2.orchestration.dvc_graph import (check_remote, pipeline_lock, promotions, published, record, reproduce,
                                          run_stage, stage_log, stale)
from ptv2.orchestration.failures import StageFailed, explained, fails_again
from ptv2.tracking.store import tracking_server

ROOT = Path(os.environ.get("PTV2_ROOT", Path(__file__).resolve().parents[1]))
# Prefect's temporary server, stopped at a flow's end, may log SQLAlchemy's "Exception during reset or similar"
# with a CancelledError traceback after the flow's last line (Prefect issue #16504; met once in this suite). Its
# process, like the fan-out's local workers, takes its logging from the environment: there, libraries' own log
# lines (root's, not Prefect's) are CRITICAL only. Set after Prefect's import, so this process keeps its own.
os.environ.setdefault("PREFECT_LOGGING_ROOT_LEVEL", "CRITICAL")


class _UserErrorsWithoutTraceback(logging.Filter):
    """Prefect logs a failed flow's exception with its traceback; a failure ``explained`` without one (a user
    error: a bad value, a damaged dvc.lock; a stage that failed, whose own output says why) keeps its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and explained(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.flow_runs", "prefect.task_runs"):
    logging.getLogger(_name).addFilter(_UserErrorsWithoutTraceback())


@task
def dvc_reproduce(root: str, targets: list[str] | None = None) -> list[str]:
    return reproduce(root, targets)


@task
def stage_on_worker(root: str, stage: str, threads: int, env: dict[str, str]) -> str:
    # the worker's own logging is not configured: what the user sees of a fanned stage goes through Prefect
    get_run_logger().info("%s started; its output: %s", stage, stage_log(root, stage))
    return run_stage(root, stage, threads, env)


def _worth_retrying(task, task_run, state) -> bool:
    """Prefect's retry condition: a machine's failure may pass, a user error fails again (retrying a missing
    data folder twice, 30 s apart, only delayed its one line)."""
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 (the failed task's own exception, re-raised by Prefect)
        return not fails_again(e)
    return True


def _retrying(root: str, fn=dvc_reproduce):
    """``fn`` with the retry policy of the project's params.yaml."""
    f = load_config(Path(root) / "params.yaml").flows
    return fn.with_options(retries=f.retries, retry_delay_seconds=f.retry_delay_s,
                           retry_condition_fn=_worth_retrying)


@flow(name="ptv2-pipeline")
def pipeline(root: str = str(ROOT), targets: list[str] | None = None) -> list[str]:
    """Run the DVC pipeline (no-op when data, params and code are unchanged); with flows.max_workers > 1
    the per-task adapt and baseline stages run side by side."""
    return _run_all(root, targets)


def _run_all(root: str, targets: list[str] | None = None) -> list[str]:
    if targets or load_config(Path(root) / "params.yaml").flows.max_workers <= 1:
        return _retrying(root)(root, targets)
    fanned = configured_adapt(root)
    return fanned + _retrying(root)(root)  # export, promote, report: serial, after the fan-out


@flow(name="ptv2-pretrain")
def pretrain(root: str = str(ROOT)) -> list[str]:
    """Multi-task prompt pretraining (the DVC `pretrain` stage and what it needs)."""
    return _retrying(root)(root, ["pretrain"])


@flow(name="ptv2-adapt")
def adapt(root: str = str(ROOT), tasks: list[str] | None = None) -> list[str]:
    """Fan-out: reproduce what adaptation needs (prepare, pretrain), run every stale ``adapt@<task>`` and
    ``baseline@<task>`` (the per-task stages; neither needs another task's) on the flow's task runner,
    record the finished ones in dvc.lock. With several workers MLflow goes through a tracking server. A
    failed stage leaves the others recorded and is the only one rerun next time."""
    cfg = load_config(Path(root) / "params.yaml")
    tasks = adapted_tasks(cfg, tasks)
    ran = _retrying(root)(root, ["pretrain"])
    # held from the stale check to the last record: a `dvc repro` started meanwhile ran the same stages into the
    # same folders (the second writer refused, its run failed); it now waits, as for another pipeline run
    with pipeline_lock(root):
        return ran + _fan_out(root, cfg, tasks)


def adapted_tasks(cfg: Config, tasks: list[str] | None) -> list[str]:
    """The adapt flow's ``tasks`` parameter (a deployment's, the Prefect UI's, a caller's), each once; none: all of
    ``adapt.tasks``. Another name was DVC's NoOutputOrStageError traceback (only adapted tasks have stages)."""
    if not tasks:
        return cfg.adapt.tasks
    unknown = [t for t in tasks if t not in cfg.adapt.tasks]
    if unknown:
        raise ConfigError(f"the adapt flow's tasks {unknown} are not adapted tasks: name tasks of params.yaml's "
                          f"adapt.tasks {cfg.adapt.tasks}, or add them there")
    return list(dict.fromkeys(tasks))  # twice: both stages would run at once into one folder


def _fan_out(root: str, cfg: Config, tasks: list[str]) -> list[str]:
    """Run the stale ``adapt@`` / ``baseline@`` stages of ``tasks`` on the flow's task runner, record the finished
    ones; the stages it recorded."""
    logger = get_run_logger()
    todo = stale(root, [f"{stage}@{t}" for stage in ("adapt", "baseline") for t in tasks])
    if not todo:
        return []
    f = cfg.flows
    service = tracking_server(root, cfg.tracking.experiment) if len(todo) > 1 else contextlib.nullcontext(None)
    with service as uri:
        # the stages' store (and registry: a user's MLFLOW_REGISTRY_URI, if any, named the same store) is the server
        env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri} if uri else {}
        one = _retrying(root, stage_on_worker)
        futures = {s: one.submit(root, s, f.threads_per_worker, env) for s in todo}
        done, failed = [], {}
        for s, fut in futures.items():
            try:
                done.append(fut.result())
            except Exception as e:  # noqa: BLE001 (each failure is reported below; the rest are recorded)
                failed[s] = str(e)
    record(root, done)
    logger.info("fan-out: %d stage(s) recorded %s, %d failed %s", len(done), done, len(failed), sorted(failed))
    if failed:
        raise StageFailed(f"{sorted(failed)} failed (the others are recorded; rerun to retry only these; each one's "
                          f"output: {stage_log(root, '<stage>')})\n"
                          + "\n".join(f"{s}: {m[-300:]}" for s, m in failed.items()))
    return done


def _check_scheduler(address: str) -> None:
    """A Dask scheduler answers at ``address`` (else Dask's OSError traceback after 30 s, once the flow ran)."""
    import re
    import socket

    where = "$PTV2_CLUSTER" if os.environ.get("PTV2_CLUSTER") else "flows.cluster_address"
    m = re.fullmatch(r"(?:(?:tcp|tls)://)?(\[[^\]]+\]|[^:/\[\]]+):(\d{1,5})", address)
    if not m:
        raise ConfigError(f"{where} = {address!r} is not a Dask scheduler address: use tcp://HOST:PORT (port 8786 "
                          f"by default), or leave it empty for a local cluster")
    try:
        socket.create_connection((m[1].strip("[]"), int(m[2])), timeout=5).close()
    except (OSError, OverflowError) as e:
        raise ConfigError(f"no Dask scheduler answers at {where} = {address!r} ({getattr(e, 'strerror', None) or e})"
                          f": start one (dask scheduler) and its workers, or leave it empty for a local "
                          f"cluster") from None


def check_prefect_api(url: str, fix: str) -> None:
    """The Prefect API at ``url`` (PREFECT_API_URL, from the environment or a Prefect profile) answers, else one
    ConfigError naming ``fix``: an unreachable one was httpx's ConnectError traceback (flows/serve.py) or
    Prefect's "Failed to reach API" traceback (flows/run.py). Any HTTP answer counts (Prefect Cloud asks for its
    key). Asked with Prefect's own TLS settings (PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY): a
    server behind its own CA, which Prefect reaches, was refused as "self-signed certificate"."""
    import ssl
    import urllib.error
    import urllib.request

    from prefect.settings import get_current_settings

    api = get_current_settings().api
    tls = ssl.create_default_context(cafile=api.ssl_cert_file or None)
    if api.tls_insecure_skip_verify:
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    try:
        urllib.request.urlopen(url.rstrip("/") + "/health", timeout=10, context=tls).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as e:
        why = getattr(e, "reason", None) or e
        raise ConfigError(f"no Prefect server answers at PREFECT_API_URL = {url!r} ({why}): {fix}") from None


def check_temporary_server_home() -> None:
    """Prefect's temporary server keeps its sqlite database where PREFECT_HOME says (~/.prefect): a folder that is not
    there or takes no files (a container's absent or read-only HOME) failed the server's start with a traceback every
    few seconds for the 120 s start-up limit, then "RuntimeError: Timed out while attempting to connect to ephemeral
    Prefect API server". One ConfigError instead, before the flow."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    url = url.get_secret_value() if url is not None else ""
    if not url.startswith("sqlite") or ":memory:" in url or "///" not in url:
        return  # a database server (postgresql://…) is its own to check
    folder = Path(url.split("///", 1)[1].split("?", 1)[0]).parent
    try:
        if not folder.is_dir():  # Prefect makes it without its parents: check_writable would probe a parent
            raise ArtifactError(f"{folder} is not a folder")
        check_writable(folder)
    except ArtifactError as e:
        why = str(e).split("; ")[0]  # check_writable's own fix names --out, not PREFECT_HOME
        raise ConfigError(f"Prefect's temporary server cannot keep its database in {str(folder)!r} ({why}): set "
                          f"PREFECT_HOME to a writable folder (export PREFECT_HOME=$PWD/.prefect), or point "
                          f"PREFECT_API_URL at a running Prefect server") from None


def flow_api_url() -> str | None:
    """The Prefect API the running flow reports to: PREFECT_API_URL, else the temporary server Prefect started
    for it (None before one started)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    server = SubprocessASGIServer()  # Prefect's own singleton: the running temporary server, if any
    return server.api_url if server.running else None


def local_cluster(**kwargs):
    """A local Dask cluster whose workers report their task runs to the flow's Prefect API. Without it each
    worker started a temporary server of its own (a few seconds each, and the fan-out's task runs were not
    in the flow's server); the URL goes in the workers' environment, as a real server's would."""
    from distributed import LocalCluster

    url = flow_api_url()
    return LocalCluster(env={"PREFECT_API_URL": url} if url else None, **kwargs)


def local_ray(base: type) -> type:
    """prefect-ray's runner (``base``, an optional extra) for a local Ray whose workers report to the flow's
    Prefect API, as ``local_cluster``'s do: the URL is known once the flow runs, so it joins the Ray job's
    environment when the runner starts it."""
    class LocalRay(base):
        def __enter__(self):
            url = flow_api_url()
            if url:
                env = self.init_kwargs.setdefault("runtime_env", {}).setdefault("env_vars", {})
                env.setdefault("PREFECT_API_URL", url)
            return super().__enter__()

    return LocalRay


def task_runner(f: FlowsConfig):
    """The fan-out's runner: thread pool, Dask (a local cluster of ``max_workers`` processes, or the
    scheduler at ``cluster_address`` / $PTV2_CLUSTER) or Ray (prefect-ray)."""
    address = os.environ.get("PTV2_CLUSTER") or f.cluster_address or None
    if f.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            _check_scheduler(address)
            return DaskTaskRunner(address=address)
        # a local cluster's scheduler and workers logged ~70 INFO lines of start-up into the flow's log: quiet here,
        # and in the worker processes, which read Dask's config from the environment they inherit
        logging.getLogger("distributed").setLevel(logging.WARNING)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        return DaskTaskRunner(cluster_class=local_cluster,
                              cluster_kwargs={"n_workers": f.max_workers, "threads_per_worker": 1,
                                              "processes": True, "silence_logs": logging.WARNING})
    if f.task_runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:  # an optional extra: ModuleNotFoundError said nothing of the setting or the fix
            raise ConfigError("flows.task_runner = 'ray' needs prefect-ray: pip install -e '.[ray]', or set "
                              "flows.task_runner: dask") from None

        if address:
            return RayTaskRunner(address=address)
        return local_ray(RayTaskRunner)(init_kwargs={"num_cpus": f.max_workers})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=f.max_workers)


def configured_adapt(root: str = str(ROOT), tasks: list[str] | None = None) -> list[str]:
    """The adapt fan-out with the task runner named in params.yaml."""
    f = load_config(Path(root) / "params.yaml").flows
    return adapt.with_options(task_runner=task_runner(f))(root, tasks)


@flow(name="ptv2-retrain")
def retrain(root: str = str(ROOT)) -> dict:
    """Scheduled retraining: reproduce (no-op when nothing changed; adapt stages side by side), register
    what changed, apply the promotion gate (in the promote stages), rebuild the multi-task model when a
    champion changed (the publish stage), push outputs to the DVC remote."""
    logger = get_run_logger()
    remote = load_config(Path(root) / "params.yaml").flows.dvc_remote
    check_remote(root, remote)  # before the work, not at its end
    ran = _run_all(root)
    decisions = promotions(root, ran)
    for d in decisions:
        logger.info("%s: v%s %s (%s)", d["task"], d["version"], "PROMOTED" if d["promoted"] else "kept champion",
                    d["reason"])
    multi = published(root, ran)
    if multi:
        logger.info("multi-task model: %s", f"v{multi['version']} serves {multi['tasks']}" if multi["published"]
                    else multi["reason"])
    if ran and remote:
        from ptv2.orchestration.dvc_graph import push

        push(root, remote)
        logger.info("pushed outputs to DVC remote %r", remote)
    if not ran:
        logger.info("nothing changed: no stage ran, no new model version")
    return {"ran": ran, "promotions": decisions, "published": multi}
