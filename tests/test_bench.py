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


def _one_line_exit_2(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith("ptv2: error: "), r.stderr[-2000:]
    return err[0]


def test_a_bench_run_before_the_pipeline_is_one_line_and_exit_2(tmp_path, tiny_dir):
    """Regression (session 30): bench/serve_limits.py and bench/int8_variants.py before any `ptv2 export` ended in
    a BundleError traceback (exit 1; serve_limits' through its child process), and bench/serve_load.py exited 1
    after creating an empty mlruns.db in the project. Each is now the user's one line, exit 2, and writes nothing."""
    import yaml
    from helpers import tiny_params

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(tmp_path, tiny_dir)))
    bench = ROOT / "bench"
    for argv, needle in (
            ([bench / "serve_limits.py", "--bundle", tmp_path / "none", "--out", tmp_path / "a.md"],
             "none: no manifest.json, not a ptv2 bundle"),
            ([bench / "int8_variants.py", "--root", tmp_path, "--out", tmp_path / "b.md"], "no manifest.json"),
            ([bench / "serve_load.py", "--root", tmp_path, "--out", tmp_path / "c.md"],
             f"ptv2-all@champion is not registered in {tmp_path}: run `dvc repro` first")):
        r = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=300)
        assert needle in _one_line_exit_2(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no report, no mlruns.db


def test_every_bench_script_ends_a_user_error_as_its_one_line():
    """Each bench/*.py entry point runs under ptv2.errors.exit_2_on_user_error (the test above runs three)."""
    import ast

    for path in sorted((ROOT / "bench").glob("*.py")):
        tree = ast.parse(path.read_text())
        mains = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        if not mains:
            continue  # a helper module (child.py)
        withs = [n for n in ast.walk(mains[0]) if isinstance(n, ast.With)]
        assert any("exit_2_on_user_error" in ast.unparse(w.items[0].context_expr) for w in withs), path.name


BAD_ARGS = [  # a count of 0, a non-number, a list item that is none, a missing folder
    ("gpu_check.py", ["--device", "cpu", "--steps", "0"]), ("matmul_precision.py", ["--batch", "0"]),
    ("onnx_latency.py", ["--reps", "0"]), ("pair_encoding.py", ["--repeats", "-1"]),
    ("serve_load.py", ["--duration", "nan"]), ("serve_settings.py", ["--values", "8,x"]),
    ("train_speed.py", ["--examples", "0"]), ("train_step.py", ["--batch-size", "0"]),
    ("frozen_features.py", ["--seeds", "1,x"]),
    ("transfer_runs.py", ["--root", ".", "--tasks", "cb", "--seeds", "-1", "--out", "x.json"]),
    ("transfer_runs.py", ["--root", "missing", "--tasks", "cb", "--seeds", "1", "--out", "x.json"]),
    ("int8_variants.py", ["--root", "missing"]), ("serve_load.py", ["--root", "missing"]),
    ("int8_host.py", ["--reps", "0"])]


def test_a_bench_count_or_seed_list_that_cannot_be_is_refused_by_its_parser(tmp_path):
    """Regression (session 36): `bench/onnx_latency.py --reps 0` ended in ZeroDivisionError, `train_step.py --steps
    0` and `matmul_precision.py --batch 0` in tracebacks after loading the backbone, `frozen_features.py --seeds x`
    in a ValueError, `int8_variants.py --root missing` in FileNotFoundError: counts, durations, seed lists and
    folders are read by ptv2.cli.common's argparse types (exit 2)."""
    import ast

    for path in sorted((ROOT / "bench").glob("*.py")):  # no option read as a bare int or float any more
        for call in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)):
            kinds = [ast.unparse(k.value) for k in call.keywords if k.arg == "type"]
            assert not set(kinds) & {"int", "float"}, (path.name, ast.unparse(call))
    code = ("import runpy, sys\nfor script, argv in %r:\n    sys.argv = [script, *argv]\n    try:\n"
            "        runpy.run_path(%r + '/' + script, run_name='__main__')\n        print(script, 'ran')\n"
            "    except SystemExit as e:\n        print(script, e.code)\n") % (BAD_ARGS, str(ROOT / "bench"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert sorted(r.stdout.split()) == sorted([s for s, _ in BAD_ARGS] + ["2"] * len(BAD_ARGS)), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stderr.count("error: argument") == len(BAD_ARGS), r.stderr[-2000:]


def test_a_speed_bench_checks_what_it_will_run_before_the_first_run():
    """Regression (session 36): `train_speed.py --peers nope` (or a bad `--settings` key) was refused only after
    the ptv2 rows had run for minutes; `train_step.py --task nope` ended in its child's CalledProcessError."""
    bench = ROOT / "bench"
    for argv, needle in (([bench / "train_speed.py", "--peers", "lora,nope"], "'nope' is not a peer"),
                         ([bench / "train_speed.py", "--settings", "train.nope=1"], "unknown key(s) ['nope'] in train"),
                         ([bench / "train_step.py", "--task", "nope"], "unknown task 'nope'")):
        r = subprocess.run([sys.executable, *map(str, argv), "--out", "/nonexistent/x.md"], capture_output=True,
                           text=True, timeout=120)
        assert needle in _one_line_exit_2(r)
