"""bench/ helper scripts: what they refuse to do to a user's folders."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cast_weights_replaces_only_a_backbone_folder(tmp_path, tiny_dir):
    """Regression (session 29): bench/cast_weights.py removed its DST folder, whatever it held, before writing
    (`cast_weights.py SRC ~ fp16` would have emptied a home folder); a folder that is no backbone is refused, kept."""
    script = ROOT / "bench" / "cast_weights.py"
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    r = subprocess.run([sys.executable, str(script), str(tiny_dir), str(other), "fp16"], capture_output=True, text=True)
    assert r.returncode == 2 and "is no backbone folder" in r.stderr and (other / "precious.txt").read_text() == "keep"
    for dtype, name in (("fp16", "model.fp16.safetensors"), ("fp32", "model.safetensors")):  # a backbone: replaced
        r = subprocess.run([sys.executable, str(script), str(tiny_dir), str(tmp_path / "cast"), dtype],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in (tmp_path / "cast").glob("*.safetensors")) == [name]


def test_the_fanout_benchmark_empties_only_its_own_work_folder(tmp_path):
    """Regression (session 29): bench/fanout.py removed its --work folder whatever it held before its run."""
    (tmp_path / "precious.txt").write_text("keep")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "fanout.py"), "--work", str(tmp_path), "--out",
                        str(tmp_path / "x.md")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "holds files this benchmark did not write" in r.stderr, r.stderr[-500:]
    assert (tmp_path / "precious.txt").read_text() == "keep"
