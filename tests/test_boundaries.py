import subprocess
import sys


def test_model_package_imports_only_torch_and_transformers():
    code = ("import sys, ptv2.model.prompted, ptv2.model.backbone, ptv2.model.inject;"
            "bad = [m for m in ('mlflow', 'prefect', 'dvc', 'datasets', 'onnxruntime') if m in sys.modules];"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_no_pickle_loading_in_library():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "ptv2"
    for p in root.rglob("*.py"):
        for line in p.read_text().splitlines():
            if re.search(r"torch\.load\(|pickle\.loads?\(", line):
                assert "weights_only=True" in line, f"{p}: {line.strip()}"
