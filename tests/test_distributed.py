"""Data parallelism as PyTorch tests it: 2 processes (gloo on CPU, NCCL on CUDA) against 1 process with the
same global batch; all dropout off, so both must end with the same losses and weights."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import kill_after_checkpoint, tiny_params

# NCCL gives each process a GPU of its own: the 2-process CUDA case needs 2 (a 1-GPU H200 failed it, rank 1 had none)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs"))]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _params(root, tiny_dir, device, **extra):
    d = tiny_params(root, tiny_dir, epochs={"ptv2": 3, "finetune": 1}, head_dropout=0.0, device=device,
                    lr={"ptv2": 3e-2, "finetune": 1e-3}, **extra)
    d["prompt"]["dropout"] = 0.0
    d["pretrain"].update({"tasks": ["sent", "pair"], "epochs": 2, "batches_per_epoch": 10})
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _cmd(nproc: int, *args: str) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "ptv2", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "ptv2",
            *args]


def _run(nproc: int, *args: str) -> str:
    r = subprocess.run(_cmd(nproc, *args), capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stderr


def _same(a, b, tol=1e-5):
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert ma["best_epoch"] == mb["best_epoch"] and ma["epochs_run"] == mb["epochs_run"]
    for ha, hb in zip(ma["history"], mb["history"], strict=True):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], abs=tol)
        assert ha["val_score"] == pytest.approx(hb["val_score"], abs=1e-3)
    wa, wb = load_file(str(a / "model/adapter.safetensors")), load_file(str(b / "model/adapter.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=tol)
    return ma


@pytest.mark.parametrize("device", DEVICES)
def test_two_processes_train_the_same_model_as_one(root, tiny_dir, device):
    p = _params(root, tiny_dir, device)
    _run(1, "train", "--params", str(p), "--task", "sent", "--out", str(root / "one"))
    err = _run(2, "train", "--params", str(p), "--task", "sent", "--out", str(root / "two"))
    assert "training on 2 data-parallel processes" in err
    assert "rank 0 of 2: joining the group at " in err  # said before the rendezvous, which waits for every rank
    m = _same(root / "one", root / "two")
    assert [h["epoch"] for h in m["history"]] == [0, 1, 2, 3]  # epoch 0: heads fitted (LP-FT), same on each rank


def test_accelerate_launch_starts_two_processes_that_train_the_same_model(root, tiny_dir):
    """`accelerate launch --cpu` always uses its single-process launcher; --multi_gpu runs torchrun's, and on a
    machine without GPUs the processes use gloo on CPU."""
    import shutil

    p = _params(root, tiny_dir, "cpu")
    _run(1, "train", "--params", str(p), "--task", "sent", "--out", str(root / "one"))
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "-m", "ptv2", "train", "--params", str(p), "--task", "sent", "--out",
           str(root / "two")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training on 2 data-parallel processes" in r.stderr
    _same(root / "one", root / "two")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batching", ["homogeneous", "mixed"])
def test_two_processes_pretrain_the_same_mixture_as_one(root, tiny_dir, device, batching):
    p = _params(root, tiny_dir, device)
    args = ["pretrain", "--params", str(p), "--set", f"pretrain.batching={batching}"]
    _run(1, *args, "--out", str(root / "one"))
    _run(2, *args, "--out", str(root / "two"))
    _same(root / "one", root / "two")


def test_a_killed_two_process_run_resumes_to_the_same_result(root, tiny_dir):
    """Killed (SIGKILL, the whole group) after a checkpoint, rerun: ends where an uninterrupted run ends."""
    from helpers import write_sentiment_tsv

    write_sentiment_tsv(root / "sent/train.tsv", 1600, 0)  # epochs long enough to kill one midway
    p = _params(root, tiny_dir, "cpu")
    _run(1, "train", "--params", str(p), "--task", "sent", "--out", str(root / "one"))
    out = root / "two"
    proc = subprocess.Popen(_cmd(2, "train", "--params", str(p), "--task", "sent", "--out", str(out)), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    killed_at = kill_after_checkpoint(proc, out / "checkpoint/state.json")
    assert not (out / "metrics.json").exists() and 1 <= killed_at < 3
    err = _run(2, "train", "--params", str(p), "--task", "sent", "--out", str(out))
    assert f"after epoch {killed_at}" in err
    _same(root / "one", out)


def test_a_stage_launches_its_data_parallel_processes_from_params(root, tiny_dir, monkeypatch):
    """train.processes: 2 makes the DVC stage run itself under torchrun; only rank 0 logs to MLflow."""
    import mlflow

    p = _params(root, tiny_dir, "cpu", processes=2, head_init="random")  # random heads: epoch 1 beats step 0
    env = {**ENV, "PYTHONPATH": str(os.getcwd())}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run([sys.executable, "-m", "ptv2.stages.pretrain", "--params", str(p),
                        "--metrics", "metrics/pretrain.json"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "launching 2 data-parallel processes" in r.stderr
    assert json.loads((root / "metrics/pretrain.json").read_text())["best_epoch"] >= 1
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlruns.db'}")
    exp = client.get_experiment_by_name(yaml.safe_load(p.read_text())["tracking"]["experiment"])
    assert len(client.search_runs([exp.experiment_id])) == 1


def test_a_user_error_in_a_data_parallel_stage_is_its_line_and_exit_2(root, tiny_dir):
    """Regression (session 26): with train.processes: 2, a stage whose data file was missing printed each rank's
    line, then torchrun's ChildFailedError traceback, and exited 1 (so the flows retried it as a machine's
    failure). Now the ranks' line and exit 2, as with one process."""
    p = _params(root, tiny_dir, "cpu", processes=2)
    d = yaml.safe_load(p.read_text())
    d["tasks"]["sent"]["files"]["train"] = "sent/missing.tsv"
    p.write_text(yaml.safe_dump(d))
    env = {**ENV, "PYTHONPATH": str(os.getcwd())}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run([sys.executable, "-m", "ptv2.stages.pretrain", "--params", str(p),
                        "--metrics", "metrics/pretrain.json"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "launching 2 data-parallel processes" in r.stderr and "sent/missing.tsv' not found" in r.stderr
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr, r.stderr[-3000:]
