"""DVC stage `prepare`: load and validate every task the pipeline uses; fail early on bad data.

Writes one fingerprint file per task (row counts, label counts, sha256 of its files), so a change
in one task's data reruns only the stages that depend on that task, and one of the backbone's files
(``BACKBONE_RECORD``), which the training stages depend on: weights replaced behind the same name retrain them
once this stage reruns (``orchestration.dvc_graph.reproduce`` reruns it when they changed)."""
from __future__ import annotations

import collections

from ptv2.backbone_files import BACKBONE_RECORD, backbone_sha
from ptv2.data.tasks import load_task_data
from ptv2.errors import DataError
from ptv2.files import sha256, write_json
from ptv2.stages.common import parse, run


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse(argv, paths=("out",))
    mixture = {}
    for name in dict.fromkeys(cfg.pretrain.tasks + cfg.adapt.tasks):
        td = load_task_data(cfg, name)
        if name in cfg.adapt.tasks and "dev" not in td.splits:  # else the export stage fails after the training
            raise DataError(f"task {name!r} is in adapt.tasks but has no dev split (it has {sorted(td.splits)}): "
                            f"the promotion gate scores each adapted task on dev; give it files.dev, or take it out "
                            f"of adapt.tasks")
        info = {"type": td.spec.type, "labels": td.labels, "rows": {s: len(d) for s, d in td.splits.items()},
                "files": {s: sha256(cfg.data_path(f)) for s, f in td.spec.files.items() if s != "test"}}
        if td.spec.type in ("classification", "pair_classification"):
            info["train_labels"] = dict(collections.Counter(td.labels[y] for y in td.split("train")["label"]))
        write_json(args.out / "tasks" / f"{name}.json", info)
        if name in cfg.pretrain.tasks:
            mixture[name] = info["files"]
    write_json(args.out / "mixture.json", mixture)
    write_json(args.out / BACKBONE_RECORD, {"name": cfg.backbone.name, "files_sha256": backbone_sha(cfg.backbone.name)})


if __name__ == "__main__":
    run(main)
