"""What a bundle must be before anything in it is served: every file listed in ``manifest.json`` with its
sha256, nothing unlisted, and each task's tensors matching its spec and the encoder graph's shapes.
Every refusal is a BundleError naming the file and the fix (the CLI prints it as one line, exit 2)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ptv2.errors import Ptv2Error
from ptv2.prefix import prompt_fits
from ptv2.files import sha256, write_json

FORMAT = "ptv2-bundle/1"
TYPES = ("classification", "pair_classification", "regression", "token_classification", "multiple_choice")
SPEC_KEYS = {"type": str, "labels": list, "text_b": bool, "pooling": str, "max_length": int}
SERVED_POOLING = ("cls", "mean")  # what Bundle.pool computes from the encoder's hidden states (no pooler layer)


class BundleError(Ptv2Error, ValueError):
    """A bundle that is missing, tampered with, inconsistent, or asked for something it lacks."""


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: {what} is not valid JSON ({e}); re-export the bundle") from None


def is_bundle(path: str | Path) -> bool:
    """A folder that holds an ONNX encoder or whose manifest says it is a bundle (a model folder has a
    manifest of its own); a damaged bundle still counts, so its refusal names what is wrong."""
    path = Path(path)
    if any(path.glob("encoder*.onnx")):
        return True
    try:
        return json.loads((path / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def verify(bundle: Path) -> dict[str, Any]:
    """Check every file against manifest.json and refuse files it does not list."""
    bundle = Path(bundle)
    mf = bundle / "manifest.json"
    if not mf.is_file():
        raise BundleError(f"{bundle}: no manifest.json, not a ptv2 bundle (make one with 'ptv2 export')")
    manifest = _json(mf, "the manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{mf}: not a {FORMAT} manifest; re-export the bundle with 'ptv2 export'")
    listed = set(manifest["files"])
    outside = sorted(f for f in listed if Path(f).is_absolute() or ".." in Path(f).parts)
    if outside:  # reading (or, when composing, writing) through such a name leaves the bundle folder
        raise BundleError(f"{mf}: lists {outside[0]!r}, a path outside the bundle; re-export the bundle")
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    if present - listed:
        raise BundleError(f"{bundle}: {sorted(present - listed)[:3]} not listed in manifest.json; remove them or "
                          f"re-export the bundle (nothing unlisted is served)")
    for rel, digest in sorted(manifest["files"].items()):
        p = bundle / rel
        if not p.is_file():
            raise BundleError(f"{bundle}: {rel} is missing; re-export the bundle")
        if sha256(p) != digest:
            raise BundleError(f"{bundle}: {rel} fails its sha256 check (tampered or truncated); re-export the bundle")
    return manifest


def write_manifest(folder: Path, files: dict[str, str] | None = None) -> None:
    """``manifest.json``: every file of the bundle but itself with its sha256 (``files`` when already known)."""
    files = files or {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*"))
                      if p.is_file() and p != folder / "manifest.json"}
    write_json(folder / "manifest.json", {"format": FORMAT, "files": files})


def task_names(manifest: dict[str, Any]) -> list[str]:
    """The tasks a manifest lists (a ``tasks/<name>.json`` spec and its ``.safetensors``, both listed)."""
    files = manifest["files"]
    return sorted(Path(f).stem for f in files if f.startswith("tasks/") and f.endswith(".json")
                  and f[:-5] + ".safetensors" in files)


def check_task(bundle: Path, name: str, spec: Any, tensors: dict[str, np.ndarray],
               prefix_shape: list[Any] | None, hidden: int | None) -> None:
    """The spec has the right keys and types; the head has one row per label (1 for regression) and the
    encoder's width; the prompt fits the encoder's ``prefix`` input (L, 2, H, P, D)."""
    where = f"{bundle}/tasks/{name}"
    if not isinstance(spec, dict) or any(not isinstance(spec.get(k), t) for k, t in SPEC_KEYS.items()) \
            or spec["type"] not in TYPES:
        raise BundleError(f"{where}.json: needs {sorted(SPEC_KEYS)} with type one of {list(TYPES)}; re-export the bundle")
    if spec["pooling"] not in SERVED_POOLING:
        raise BundleError(f"{where}.json: pooling {spec['pooling']!r} is not served (bundles pool the encoder's "
                          f"hidden states: {list(SERVED_POOLING)}); retrain with backbone.pooling cls or mean")
    if not isinstance(spec.get("normalize", False), bool):  # absent: a bundle from before the setting, not normalised
        raise BundleError(f"{where}.json: normalize {spec['normalize']!r} is not true/false; re-export the bundle")
    agree, not_worse = spec.get("int8_agreement", 1.0), spec.get("int8_not_worse", True)
    if isinstance(agree, bool) or not isinstance(agree, (int, float)) or not 0 <= agree <= 1 \
            or not isinstance(not_worse, bool):
        raise BundleError(f"{where}.json: int8 checks {agree!r}, {not_worse!r} are not a share in [0, 1] and "
                          f"true/false; re-export the bundle")
    w, b = tensors.get("head_weight"), tensors.get("head_bias")
    n_out = 1 if spec["type"] in ("regression", "multiple_choice") else len(spec["labels"])  # one score per choice
    if w is None or b is None or w.ndim != 2 or w.shape[0] != n_out or b.shape != (n_out,):
        raise BundleError(f"{where}.safetensors: head {None if w is None else tuple(w.shape)} does not fit "
                          f"{n_out} outputs of a {spec['type']} task with labels {spec['labels']}; re-export the bundle")
    pair = spec.get("pair_encoding", "cross")
    if pair not in ("cross", "bi") or (pair == "bi" and spec["type"] not in ("pair_classification", "regression")):
        raise BundleError(f"{where}.json: pair_encoding {pair!r} is not 'cross', or 'bi' for a pair classification "
                          f"or regression task; re-export the bundle")
    if hidden is not None and pair == "bi":  # bi heads read [u, v, |u-v|, u*v], or the cosine for similarity
        hidden = 1 if spec["type"] == "regression" else 4 * hidden
    if hidden is not None and w.shape[1] != hidden:
        raise BundleError(f"{where}.safetensors: head width {w.shape[1]} does not fit the encoder's hidden size "
                          f"({hidden} expected); re-export the bundle")
    prompt = tensors.get("prompt")
    if (prompt is None) != (prefix_shape is None):
        raise BundleError(f"{where}.safetensors: {'no' if prompt is None else 'a'} prompt, but the encoder "
                          f"{'takes' if prefix_shape else 'has no'} a prefix input; re-export the bundle")
    if prompt is not None:
        if not prompt_fits(prompt.shape, prefix_shape):
            raise BundleError(f"{where}.safetensors: prompt {tuple(prompt.shape)} does not fit the encoder's prefix "
                              f"input {prefix_shape}; re-export the bundle")
