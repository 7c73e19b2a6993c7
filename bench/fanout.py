"""Scale-out benchmark, one run on this machine (ratios, not absolute times):

1. Adaptation fan-out: the same four adapt@<task> stages (real data, small budget) by serial `dvc repro`
   vs the Prefect fan-out on a local Dask cluster of 2 workers x 1 thread; wall time, `dvc status` after
   each, and the adapted weights compared.
2. Data parallelism: one epoch of `ptv2 train` in 1 process vs 2 processes (torchrun, gloo), 1 thread each.
3. Optionally (--cluster) the fan-out on a real local Dask cluster (`dask scheduler` + 2 `dask worker`
   processes) with the Prefect flow and task run states, as a transcript.

    python bench/fanout.py --out reports/bench_scale.md [--cluster]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["cb", "rte", "mrpc", "sst2"]
BUDGET = {"adapt": {"tasks": TASKS, "epochs": 2}, "pretrain": {"tasks": TASKS, "cap": 200, "epochs": 1},
          "flows": {"task_runner": "dask", "max_workers": 2, "threads_per_worker": 1, "retries": 0},
          "train": {"num_threads": 1}}
SMALL = {"rte": 400, "mrpc": 400, "sst2": 800}
ENV1 = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
        "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def make_project(dst: Path) -> Path:
    """A git clone of this checkout with the bench budget in its params.yaml (absolute data root)."""
    import yaml

    subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data_root"] = str((ROOT / p["data_root"]).resolve())
    for sec, vals in BUDGET.items():
        p[sec].update(vals)
    for t, n in SMALL.items():
        p["tasks"][t]["max_train_examples"] = n
    (dst / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", "bench budget"], cwd=dst,
                   check=True)
    return dst


def status(root: Path) -> str:
    """`dvc status` of the adapt stages the bench runs (the stages after them are not run here)."""
    r = subprocess.run([sys.executable, "-m", "dvc", "status", *[f"adapt@{t}" for t in TASKS]], cwd=root,
                       capture_output=True, text=True)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()[-200:]


def fanout(work: Path) -> dict:
    from ptv2.files import sha256
    from ptv2.orchestration.dvc_graph import reproduce

    serial = make_project(work / "serial")
    reproduce(serial, ["pretrain"])  # shared starting point, not timed
    parallel = work / "parallel"
    shutil.copytree(serial, parallel, symlinks=True)
    stages = [f"adapt@{t}" for t in TASKS]
    t0 = time.perf_counter()
    reproduce(serial, stages)
    t_serial = time.perf_counter() - t0
    sys.path.insert(0, str(parallel))  # the Dask workers import flows.pipeline from the project
    from flows.pipeline import configured_adapt

    t0 = time.perf_counter()
    ran = configured_adapt(str(parallel))
    t_parallel = time.perf_counter() - t0
    same = {t: sha256(serial / f"outputs/adapt/{t}/model/adapter.safetensors")
            == sha256(parallel / f"outputs/adapt/{t}/model/adapter.safetensors") for t in TASKS}
    return {"serial_s": t_serial, "parallel_s": t_parallel, "ran": ran, "same_weights": same,
            "status_serial": status(serial), "status_parallel": status(parallel), "project": str(parallel)}


def ddp(work: Path) -> dict:
    """Seconds per epoch of single-task training, 1 process vs 2 (gloo), 1 thread each."""
    proj = work / "serial"
    out = {}
    for n in (1, 2):
        launcher = [sys.executable, "-m", "ptv2"] if n == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "ptv2"]
        cmd = [*launcher, "train", "--task", "sst2", "--out", str(work / f"ddp{n}"), "--set", "train.epochs.ptv2=1",
               "--set", "train.patience=0"]
        subprocess.run(cmd, cwd=proj, check=True, env={**os.environ, **ENV1}, capture_output=True)
        m = json.loads((work / f"ddp{n}/metrics.json").read_text())
        out[n] = m["train_seconds"] / m["epochs_run"]
    return out


def cluster(work: Path, project: Path) -> str:
    """The fan-out on a real local Dask cluster (scheduler + 2 workers); returns a transcript."""
    from prefect import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    for t in TASKS:  # make the adapt stages stale again: a second seed
        shutil.rmtree(project / f"outputs/adapt/{t}", ignore_errors=True)
    env = {**os.environ, **ENV1, "PYTHONPATH": str(project)}
    dask = str(Path(sys.executable).parent / "dask")
    sched = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "8786", "--no-dashboard"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(5)
    workers = [subprocess.Popen([dask, "worker", "tcp://127.0.0.1:8786", "--nthreads", "1", "--nworkers", "1",
                                 "--no-dashboard", "--name", f"w{i}"], env=env, cwd=project,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (1, 2)]
    time.sleep(8)
    os.environ["PTV2_CLUSTER"] = "tcp://127.0.0.1:8786"
    lines = ["$ dask scheduler --host 127.0.0.1 --port 8786 &", "$ dask worker tcp://127.0.0.1:8786 --nthreads 1 "
             "--name w1 &   (and w2)", "$ PTV2_CLUSTER=tcp://127.0.0.1:8786 python -c 'from flows.pipeline import "
             "configured_adapt; configured_adapt(\".\")'"]
    from flows.pipeline import configured_adapt

    t0 = time.perf_counter()
    ran = configured_adapt(str(project))
    lines.append(f"ran {ran} in {time.perf_counter() - t0:.0f} s; dvc status: {status(project)}")

    async def states() -> list[str]:
        async with get_client() as client:
            runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
            tasks = await client.read_task_runs()
            mine = [t for t in tasks if t.flow_run_id == runs[0].id]
            return [f"flow run {runs[0].name} ({runs[0].flow_id}): {runs[0].state_name}"] + \
                [f"  task run {t.name}: {t.state_name}" for t in sorted(mine, key=lambda t: t.name)]

    import asyncio

    lines += asyncio.run(states())
    for p in workers + [sched]:
        p.terminate()
    logs = []
    for p in workers + [sched]:
        try:
            out = p.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            out = p.communicate()[0]
        logs.append(out)
    logs = logs[:len(workers)]
    lines += [f"worker log w{i}: " + " | ".join(x for x in log.splitlines() if "Starting worker" in x
                                                 or "Registered to" in x)[:300] for i, log in enumerate(logs, 1)]
    return "\n".join(lines)


MARK = ".ptv2-bench-work"  # marks a work folder this script made, which a rerun may empty


def main() -> None:
    from ptv2.files import atomic_write_text

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/bench_scale.md")
    ap.add_argument("--work", default="/tmp/ptv2-bench-scale")
    ap.add_argument("--cluster", action="store_true")
    a = ap.parse_args()
    os.environ.update(ENV1)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the stages' `python`
    work = Path(a.work)
    if work.exists() and any(work.iterdir()) and not (work / MARK).is_file():  # it is emptied: only our own
        print(f"fanout: error: --work {work} holds files this benchmark did not write; give a new folder",
              file=sys.stderr)
        raise SystemExit(2)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / MARK).write_text("bench/fanout.py's work folder: emptied by its next run\n")
    f = fanout(work)
    d = ddp(work)
    md = (f"# Scale-out on this machine ({os.cpu_count()} cores), one run\n\nCommand: `python bench/fanout.py"
          f"{' --cluster' if a.cluster else ''}`. Four adapt stages ({', '.join(TASKS)}; train subsamples {SMALL}, "
          f"2 epochs each, 1 thread per process), from the same pretrained prompt.\n\n"
          f"| | wall s | ratio |\n|---|---|---|\n| serial `dvc repro` of the 4 adapt stages | {f['serial_s']:.0f} | 1.00x |\n"
          f"| Prefect fan-out, local Dask cluster 2 workers x 1 thread (incl. cluster + MLflow server start) | "
          f"{f['parallel_s']:.0f} | {f['serial_s'] / f['parallel_s']:.2f}x |\n\n"
          f"`dvc status` after serial: {f['status_serial']!r}; after the fan-out: {f['status_parallel']!r}. "
          f"Adapted weights identical to the serial run's (sha256): {f['same_weights']}.\n\n"
          f"Data parallelism, SST-2 (800 rows), 1 thread per process: 1 process {d[1]:.1f} s/epoch, "
          f"2 processes (torchrun, gloo) {d[2]:.1f} s/epoch: {d[1] / d[2]:.2f}x.\n")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, md)  # the ratios are on disk before the (optional) cluster part
    if a.cluster:
        md += "\n## A real local Dask cluster running the fan-out\n\n```\n" + cluster(work, Path(f["project"])) + "\n```\n"
        atomic_write_text(a.out, md)
    print(md)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
