"""A saved model folder (like a PEFT adapter), written atomically and verified on every read.

- ``adapter.safetensors``: what the method trains (prompt + heads; the whole backbone for ``finetune``)
- ``adapter_config.json``: the ``ModelSpec`` (backbone, method, prompt shape, label sets, lineage)
- ``manifest.json``: the format and the sha256 of the two files above

Reading refuses a folder whose manifest is missing, lists other files, or whose files fail their
checksum, so an edited label order or prompt length is caught before anything is served.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptv2.errors import ArtifactError
from ptv2.files import atomic_dir, sha256
from ptv2.model.spec import ModelSpec, SpecError

if TYPE_CHECKING:  # torch is imported where weights are read or written: reading a spec (promote, serving
    import torch   # checks) stays free of its ~4 s import

WEIGHTS, CONFIG, MANIFEST = "adapter.safetensors", "adapter_config.json", "manifest.json"
FORMAT = "ptv2-adapter/2"


def save_adapter(out: str | Path, state: dict[str, torch.Tensor], spec: ModelSpec) -> Path:
    """Write weights + spec + manifest into ``out`` atomically; returns the folder."""
    from safetensors.torch import save_file

    out = Path(out)
    with atomic_dir(out, is_model_dir, "a ptv2 model folder") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True))
        files = {name: sha256(tmp / name) for name in (WEIGHTS, CONFIG)}
        (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}, indent=2, sort_keys=True))
    return out


def _format(manifest: Path) -> str | None:
    """The ``format`` a manifest names, if it is readable and names one."""
    try:
        found = json.loads(manifest.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) and found else None


def is_model_dir(path: Path) -> bool:
    """A folder whose manifest says it is a model folder (of any format version: a retrain replaces it)."""
    return (_format(path / MANIFEST) or "").startswith("ptv2-adapter/")


def _manifest(path: Path) -> dict[str, Any]:
    if not (path / MANIFEST).is_file() or not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        if (path / "model" / MANIFEST).is_file():  # a run folder (train / adapt / baseline output) was given
            raise ArtifactError(f"{str(path)!r} is a run folder, not a model folder: pass {str(path / 'model')!r}")
        if not path.exists():
            raise ArtifactError(f"{str(path)!r} does not exist: pass a ptv2 model folder (<out>/model of 'ptv2 train')")
        other = _format(path / MANIFEST)
        if other:  # another ptv2 output (an ONNX bundle where --from / export want the model it was made from)
            raise ArtifactError(f"{str(path)!r} is a {other} folder, not a model folder ({FORMAT}): pass the model "
                                f"folder it was made from")
        raise ArtifactError(f"{str(path)!r} is not a ptv2 model folder (needs {MANIFEST}, {CONFIG} and {WEIGHTS}); "
                            f"train one with 'ptv2 train'")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError(f"{path / MANIFEST}: not valid JSON; retrain the model or restore the folder") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT or not isinstance(manifest.get("files"), dict):
        # an older ptv2's folder is retrained; anything else (another JSON copied over it) was told the same
        older = isinstance(fmt, str) and fmt.startswith("ptv2-adapter/") and fmt != FORMAT
        fix = "retrain the model with this version of ptv2" if older else \
            "it is not a ptv2 model's manifest (replaced or damaged): restore the folder, or retrain the model"
        raise ArtifactError(f"{path / MANIFEST}: format {fmt!r}, expected {FORMAT!r}; {fix}")
    extra = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()
                   and str(p.relative_to(path)) not in (MANIFEST, *manifest["files"]))
    if extra or set(manifest["files"]) != {WEIGHTS, CONFIG}:
        raise ArtifactError(f"{path}: files {extra or sorted(manifest['files'])} are not what a model folder holds "
                            f"({WEIGHTS}, {CONFIG}); remove them or retrain")
    return manifest


def _check(path: Path, name: str, manifest: dict[str, Any]) -> None:
    if sha256(path / name) != manifest["files"][name]:
        raise ArtifactError(f"{path / name}: checksum mismatch (file changed or truncated); retrain or restore it")


def read_spec(path: str | Path) -> ModelSpec:
    """The folder's ModelSpec, checked against the manifest, without reading the weights."""
    return _spec(Path(path), _manifest(Path(path)))


def _spec(path: Path, manifest: dict[str, Any]) -> ModelSpec:
    _check(path, CONFIG, manifest)
    try:
        return ModelSpec.from_dict(json.loads((path / CONFIG).read_text()))
    except (ValueError, UnicodeDecodeError, SpecError) as e:
        raise ArtifactError(f"{path / CONFIG}: {e}; retrain the model") from None


def weights_sha(path: str | Path) -> str:
    """The recorded sha256 of a folder's weights (identity of a trained prompt, for lineage)."""
    return _manifest(Path(path))["files"][WEIGHTS]


def verify_model_dir(path: str | Path) -> None:
    """A model folder whose every file matches its manifest, or ArtifactError naming what does not."""
    manifest = _manifest(Path(path))
    for name in manifest["files"]:
        _check(Path(path), name, manifest)


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """(state, spec); a missing, foreign or tampered folder raises ArtifactError."""
    from safetensors.torch import load_file

    path = Path(path)
    manifest = _manifest(path)  # read once: the config and the weights are checked against the same listing
    spec = _spec(path, manifest)
    _check(path, WEIGHTS, manifest)
    return load_file(str(path / WEIGHTS)), spec
