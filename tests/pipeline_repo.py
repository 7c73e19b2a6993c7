"""A throw-away git + DVC repo with the project's dvc.yaml, a tiny params.yaml and tiny data."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from helpers import tiny_params, write_all_formats

PROJECT = Path(__file__).resolve().parents[1]


def make_repo(root: Path, backbone: Path) -> Path:
    shutil.copytree(PROJECT / "ptv2", root / "ptv2", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(PROJECT / ".dvcignore", root / ".dvcignore")
    write_all_formats(root / "data")
    # every key of the real params.yaml (dvc.yaml names them), tiny values where it matters
    p = yaml.safe_load((PROJECT / "params.yaml").read_text())
    tiny = tiny_params(root / "data", backbone, epochs={"ptv2": 2, "finetune": 1}, lr={"ptv2": 3e-2, "finetune": 1e-3})
    p["data_root"] = "data"
    p["backbone"] = tiny["backbone"]
    p["prompt"].update(tiny["prompt"])
    p["train"].update(tiny["train"])
    p["tasks"] = tiny["tasks"]
    p["pretrain"].update({"tasks": ["sent", "pair"], "epochs": 1, "batches_per_epoch": 8})
    p["adapt"].update({"tasks": ["sent"], "epochs": 2})
    p["compare"].update({"tasks": ["sent"], "one_seed": [], "overrides": []})
    p["export"].update({"parity_batch_sizes": [1, 4], "parity_lengths": [1, 0]})
    p["serving"].update({"int8_min_agreement": 0.0})
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = pipeline_env()
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], cwd=root,
                   check=True)
    return root


def pipeline_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PTV2_DATA_ROOT", None)  # the repo's own data_root (dvc repro refuses a different one)
    return env
