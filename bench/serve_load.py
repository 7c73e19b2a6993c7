"""HTTP load on `mlflow models serve` of a project's registered models, with a real HTTP client.

1. The multi-task model (``tracking.multitask_model@champion``) under N concurrent closed-loop clients
   (asyncio + aiohttp) for a fixed duration; each request 1-16 dev rows of mixed tasks and lengths.
2. One request of 2,000 RTE premise/hypothesis pairs sent to a served pair task (status, time, peak RSS).
3. Memory: one multi-task server vs one server per task (each warmed with its own rows), RSS of the
   server's whole process tree.
4. int8 vs fp32 agreement per task, from the export stage's checks (metrics/export.json).

    python bench/serve_load.py --root /path/to/project --clients 1 4 16 --duration 30 --out reports/bench_serve.md

Needs a project where `dvc repro` has run (champions registered, the publish stage done).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ptv2.cli.common import count, folder, positive  # noqa: E402
from ptv2.files import atomic_write_text  # noqa: E402


def rss_tree_mb(pid: int) -> float:
    """VmRSS of ``pid`` and every process below it, MB."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


class Sampler(threading.Thread):
    """Samples a server's RSS every 50 ms; ``peak`` since the last ``reset``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, False

    def run(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, rss_tree_mb(self.pid))
            time.sleep(0.05)

    def reset(self) -> float:
        self.peak = rss_tree_mb(self.pid)
        return self.peak


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root: Path, model: str) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` of ``model`` (a models:/ URI) on a free port; returns it once /ping answers."""
    from ptv2.tracking.store import tracking_uri

    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(root),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", model,
                             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/ping", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"mlflow models serve {model} exited with {proc.returncode}")
            time.sleep(0.5)
    raise SystemExit(f"mlflow models serve {model} did not answer in 120 s")


def post(url: str, rows: list[dict], timeout: float = 600) -> tuple[int, float]:
    req = urllib.request.Request(url + "/invocations", data=json.dumps({"dataframe_records": rows}).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status, time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, time.perf_counter() - t0


async def _load(url: str, pool: list[dict], clients: int, duration: float, seed: int) -> dict:
    import aiohttp

    lat, rows_done, errors = [], [0], [0]
    deadline = time.perf_counter() + duration

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        rng = random.Random(seed * 1000 + i)
        while time.perf_counter() < deadline:
            batch = rng.sample(pool, rng.choice([1, 1, 1, 2, 4, 8, 16]))
            t0 = time.perf_counter()
            try:
                async with session.post(url + "/invocations", json={"dataframe_records": batch}) as r:
                    body = await r.json()
                    ok = r.status == 200 and len(body.get("predictions", [])) == len(batch)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            lat.append(time.perf_counter() - t0)
            rows_done[0] += len(batch) if ok else 0
            errors[0] += not ok

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return {"requests": len(lat), "wall_s": wall, "rps": len(lat) / wall, "rows_s": rows_done[0] / wall,
            "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98], "errors": errors[0]}


def dev_rows(cfg, tasks: list[str]) -> dict[str, list[dict]]:
    from ptv2.data.tasks import load_task_data
    from ptv2.export.checks import request_rows

    return {t: request_rows(load_task_data(cfg, t)) for t in tasks}


def memory(root: Path, cfg, served: list[str], rows: dict[str, list[dict]]) -> dict[str, float]:
    """RSS (MB) after warm-up: the multi-task server, and each task's own server (one at a time; the task's
    newest version, alias challenger, registered with the same serving config as the multi-task model)."""
    out = {}
    for name, tasks, alias in [(cfg.tracking.multitask_model, served, "champion")] + \
            [(cfg.tracking.task_model(t), [t], "challenger") for t in served]:
        proc, url = serve(root, f"models:/{name}@{alias}")
        try:
            for t in tasks:
                post(url, rows[t][:32])
            time.sleep(1)
            out[name] = rss_tree_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=folder, default=".")
    ap.add_argument("--clients", type=count, nargs="+", default=[1, 4, 16])
    ap.add_argument("--duration", type=positive, default=30)
    ap.add_argument("--big", type=count, default=2000)
    ap.add_argument("--out", default="reports/bench_serve.md")
    a = ap.parse_args()
    root = Path(a.root).resolve()
    os.chdir(root)
    from ptv2.config import load_config
    from ptv2.data.tasks import load_task_data
    from ptv2.errors import ArtifactError
    from ptv2.tracking import registry

    cfg = load_config(root / "params.yaml")
    found = registry.alias_version(root, cfg.tracking.multitask_model, "champion")
    if not found:
        raise ArtifactError(f"{cfg.tracking.multitask_model}@champion is not registered in {root}: run `dvc repro` first")
    version, tags = found
    served = sorted(json.loads(tags["tasks"]))
    rows = dev_rows(cfg, served)
    pool = [r for t in served for r in rows[t]]
    proc, url = serve(root, f"models:/{cfg.tracking.multitask_model}@champion")
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        for t in served:
            post(url, rows[t][:16])
        start_rss = sampler.reset()
        loads = [(c, _run_load(url, pool, c, a.duration)) for c in a.clients]
        load_peak = sampler.peak
        after_load = rss_tree_mb(proc.pid)
        pair = next((t for t in served if cfg.task(t).text_b), served[0])
        rte = load_task_data(cfg, "rte").split("train")
        big = [{"task": pair, "text": p, "text_pair": h} if cfg.task(pair).text_b else {"task": pair, "text": p}
               for p, h in zip(rte["text_a"][: a.big], rte["text_b"][: a.big])]
        sampler.reset()
        status, secs = post(url, big)
        big_peak = sampler.peak
        time.sleep(3)
        big_after = rss_tree_mb(proc.pid)
    finally:
        sampler.stop = True
        proc.terminate()
        proc.wait(timeout=60)
    mem = memory(root, cfg, served, rows)
    export = json.loads((root / "metrics/export.json").read_text())
    md = report(a, cfg, version, served, pool, start_rss, loads, load_peak, after_load, pair, len(big), status, secs,
                big_peak, big_after, mem, export)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, md)
    print(md)


def _run_load(url: str, pool: list[dict], clients: int, duration: float) -> dict:
    r = asyncio.run(_load(url, pool, clients, duration, seed=clients))
    print(f"{clients} clients: {r}", flush=True)
    return r


def report(a, cfg, version, served, pool, start_rss, loads, load_peak, after_load, pair, n_big, status, secs,
           big_peak, big_after, mem, export) -> str:
    import shlex

    from ptv2.experiments.tables import markdown
    from ptv2.release.promotion import served_in

    load_t = markdown(["clients", "duration s", "requests", "requests/s", "rows/s", "p50 ms", "p99 ms", "errors"],
                      [[c, f"{r['wall_s']:.1f}", r["requests"], f"{r['rps']:.1f}", f"{r['rows_s']:.1f}",
                        f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", r["errors"]] for c, r in loads])
    each = {k: v for k, v in mem.items() if k != cfg.tracking.multitask_model}
    mem_t = markdown(["serving", "servers", "RSS MB (process tree, after warm-up)"],
                     [[f"{cfg.tracking.multitask_model} (all {len(served)} tasks, one encoder)", 1,
                       f"{mem[cfg.tracking.multitask_model]:.0f}"]]
                     + [[f"{k}@challenger", 1, f"{v:.0f}"] for k, v in each.items()]
                     + [[f"one server per task ({len(each)})", len(each), f"{sum(each.values()):.0f}"]])
    agree_t = markdown(["task", "metric", "dev fp32", "dev int8", "int8/fp32 agreement", "p (int8 worse)", "served in",
                        "served/fp32 agreement"],
                       [[t, export[t]["metric"], f"{export[t]['dev_fp32']:.2f}", f"{export[t].get('dev_int8', float('nan')):.2f}",
                         f"{export[t].get('int8_agreement', float('nan')):.3f}", f"{export[t].get('int8_p_worse', float('nan')):.3f}",
                         served_in(cfg, export[t]),
                         f"{export[t]['int8_agreement'] if served_in(cfg, export[t]) == 'int8' else 1.0:.3f}"]
                        for t in served if t in export])
    s = cfg.serving
    return (f"# Serving under load: `mlflow models serve` of {cfg.tracking.multitask_model} v{version} "
            f"({os.cpu_count()} CPU cores)\n\nCommand: `python {shlex.join(sys.argv)}`\n\n"
            f"Served tasks {served}, {'int8' if s.int8 else 'fp32'} encoder, micro-batch {s.micro_batch}, "
            f"max {s.max_rows} rows per request, one uvicorn worker; clients are asyncio + aiohttp, closed loop, "
            f"each request 1-16 rows drawn from {len(pool)} dev rows of the served tasks (mixed tasks and lengths).\n\n"
            f"## Concurrent clients\n\n{load_t}\n\nServer RSS: {start_rss:.0f} MB after warm-up, peak {load_peak:.0f} MB "
            f"during the load runs, {after_load:.0f} MB after them.\n\n"
            f"## One large request\n\n{n_big} RTE premise/hypothesis pairs as task `{pair}` in one request: HTTP {status} in "
            f"{secs:.1f} s; server peak RSS {big_peak:.0f} MB, {big_after:.0f} MB 3 s after.\n\n"
            f"## One multi-task server vs one server per task\n\n{mem_t}\n\n"
            f"## int8 vs fp32 on dev (export stage checks)\n\nA task is served by the int8 encoder only where its "
            f"int8 predictions (near-ties in fp32) agree with fp32 on >= {cfg.serving.int8_min_agreement:.0%} of dev and the "
            f"paired test finds no loss; the others run on the fp32 encoder.\n\n{agree_t}\n")


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
