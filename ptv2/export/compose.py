"""Bundles made from bundles: a subset of tasks (what one task's registered model carries), and one
bundle serving every task from one encoder (the registered multi-task model). Files are copied, never
re-exported; the result gets its own manifest, and every source is verified first."""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from ptv2.errors import ArtifactError
from ptv2.files import atomic_dir
from ptv2.serving.manifest import task_names, verify, write_manifest

ENCODERS = ("encoder.onnx", "encoder.int8.onnx")


def _copy(src: Path, files: dict[str, str], tmp: Path) -> None:
    for f in files:
        (tmp / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / f, tmp / f)


def subset_bundle(bundle: str | Path, tasks: list[str], out: str | Path) -> Path:
    """A bundle serving only ``tasks`` (same encoder files), with its own manifest."""
    bundle, out = Path(bundle), Path(out)
    manifest = verify(bundle)
    keep = {f: d for f, d in manifest["files"].items() if not f.startswith("tasks/") or Path(f).stem in tasks}
    missing = set(tasks) - {Path(f).stem for f in keep if f.startswith("tasks/")}
    if missing:
        raise ArtifactError(f"{bundle} has no task(s) {sorted(missing)}")
    with atomic_dir(out) as tmp:
        _copy(bundle, keep, tmp)
        write_manifest(tmp, dict(sorted(keep.items())))
    return out


def shared_files(parts: dict[str, Path]) -> tuple[dict[str, str], Path]:
    """The encoder and tokenizer files of the multi-task bundle: those most of ``parts`` (task -> its
    bundle) carry, byte for byte (ties: the first task's). Returns (file -> sha256, the bundle to copy them from)."""
    manifests = {t: verify(p)["files"] for t, p in parts.items()}
    for t, files in manifests.items():
        if t not in task_names({"files": files}):
            raise ArtifactError(f"{parts[t]}: the bundle registered for {t!r} does not serve it; re-register it")
    def shared(files: dict[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((f, d) for f, d in files.items() if not f.startswith("tasks/")))
    counts = Counter(shared(files) for files in manifests.values())
    top = max(counts.values())
    first = next(t for t, files in manifests.items() if counts[shared(files)] == top)
    return dict(shared(manifests[first])), parts[first]


def combine_bundles(parts: dict[str, Path], out: str | Path) -> tuple[Path, list[str]]:
    """One bundle serving every task of ``parts`` (task -> a bundle that serves it): the shared encoder
    and tokenizer (``shared_files``) plus each task's prompt, head and spec. Returns the bundle and the
    tasks whose own bundle had other encoder/tokenizer bytes (the caller must check their answers)."""
    common, source = shared_files(parts)
    if not any(f.startswith("encoder") for f in common):
        raise ArtifactError(f"{source}: no encoder in the bundle; re-export it")
    files = dict(common)
    differ = []
    with atomic_dir(Path(out)) as tmp:
        _copy(source, common, tmp)
        for task, path in parts.items():
            own = verify(path)["files"]
            if {f: d for f, d in own.items() if not f.startswith("tasks/")} != common:
                differ.append(task)
            mine = {f: own[f] for f in (f"tasks/{task}.json", f"tasks/{task}.safetensors")}
            _copy(path, mine, tmp)
            files |= mine
        write_manifest(tmp, dict(sorted(files.items())))
    return Path(out), differ
