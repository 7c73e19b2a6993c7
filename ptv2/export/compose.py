"""Bundles made from bundles: a subset of tasks (what one task's registered model carries), and one
bundle serving every task from one encoder (the registered multi-task model). Files are copied, never
re-exported; the result gets its own manifest, and every source is verified first."""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from ptv2.errors import ArtifactError
from ptv2.files import atomic_dir
from ptv2.serving.manifest import is_bundle, task_names, verify, write_manifest


def bundle_for(out: str | Path, task: str) -> Path:
    """The bundle that serves ``task`` in an export folder (shared, or the task's own)."""
    own = Path(out) / task
    return own if (own / "manifest.json").is_file() else Path(out)


def is_export(out: Path) -> bool:
    """What an export writes: one bundle, or a folder of per-task bundles (``bundle_for``)."""
    return is_bundle(out) or all(p.is_dir() and is_bundle(p) for p in out.iterdir())


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
    with atomic_dir(out, is_bundle, "an ONNX bundle") as tmp:
        _copy(bundle, keep, tmp)
        write_manifest(tmp, dict(sorted(keep.items())))
    return out


def _shared(files: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A bundle's encoder and tokenizer files (everything but the tasks) with their sha256."""
    return tuple(sorted((f, d) for f, d in files.items() if not f.startswith("tasks/")))


def shared_files(manifests: dict[str, dict[str, str]]) -> tuple[dict[str, str], str]:
    """The encoder and tokenizer files of the multi-task bundle: those most bundles carry, byte for byte
    (ties: the first task's). ``manifests``: task -> its bundle's verified file list. Returns
    (file -> sha256, the task whose bundle to copy them from)."""
    counts = Counter(_shared(files) for files in manifests.values())
    top = max(counts.values())
    first = next(t for t, files in manifests.items() if counts[_shared(files)] == top)
    return dict(_shared(manifests[first])), first


def has_prompt(bundle: Path, task: str) -> bool:
    """Whether ``task``'s file in ``bundle`` carries a deep prompt (reads the safetensors header only);
    merged-adapter and fine-tuned bundles carry their task in the encoder weights instead."""
    from safetensors import SafetensorError, safe_open

    path = Path(bundle) / "tasks" / f"{task}.safetensors"
    try:
        with safe_open(str(path), framework="numpy") as f:
            return "prompt" in f.keys()
    except (OSError, SafetensorError) as e:
        raise ArtifactError(f"{path}: unreadable ({e}); re-register the task's model") from None


def combine_bundles(parts: dict[str, Path], out: str | Path) -> tuple[Path, list[str]]:
    """One bundle serving every task of ``parts`` (task -> a bundle that serves it): the shared encoder
    and tokenizer (``shared_files``) plus each task's prompt, head and spec. Returns the bundle and the
    tasks whose own bundle had other encoder/tokenizer bytes (the caller must check their answers)."""
    manifests = {t: verify(p)["files"] for t, p in parts.items()}  # each source hashed once
    for t, files in manifests.items():
        if t not in task_names({"files": files}):
            raise ArtifactError(f"{parts[t]}: the bundle registered for {t!r} does not serve it; re-register it")
    common, source = shared_files(manifests)
    if not any(f.startswith("encoder") for f in common):
        raise ArtifactError(f"{parts[source]}: no encoder in the bundle; re-export it")
    files = dict(common)
    differ = []
    with atomic_dir(Path(out), is_bundle, "an ONNX bundle") as tmp:
        _copy(parts[source], common, tmp)
        for task, path in parts.items():
            own = manifests[task]
            if dict(_shared(own)) != common:
                differ.append(task)
            mine = {f: own[f] for f in (f"tasks/{task}.json", f"tasks/{task}.safetensors")}
            _copy(path, mine, tmp)
            files |= mine
        write_manifest(tmp, dict(sorted(files.items())))
    return Path(out), differ
