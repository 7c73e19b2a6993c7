"""Copy the data files params.yaml names for the pretraining mixture's tasks into a folder a GPU run carries.

    python bench/gpu_data.py SRC_DATA_ROOT DST [--params params.yaml]

Only what `tasks.<t>.files` / `label_files` list for `pretrain.tasks` (train, dev and, where listed, test: the
loader reads every listed file, training never uses test); the layout under DST is the one under the data root.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ptv2.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()
    if a.dst.exists() and not a.dst.is_dir():
        ap.error(f"{a.dst} is a file: give the folder to copy the data files into")
    cfg = load_config(a.params, [])
    for t in cfg.pretrain.tasks:
        spec = cfg.task(t)
        for rel in [*spec.files.values(), *spec.label_files.values()]:
            if not (a.src / rel).is_file():
                ap.error(f"{a.src / rel}: not found; pass the data root that holds {t}'s files (../shared/data)")
            (a.dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(a.src / rel, a.dst / rel)
            print(a.dst / rel)


if __name__ == "__main__":
    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():  # a user's error is its one line, exit 2
        main()
