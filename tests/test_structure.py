"""The house rules, as tests: stage deps are complete, every params.yaml key is read, one source of
values, and each package imports only what it may."""
import dataclasses
import os
import subprocess
import sys
import typing

from importgraph import PROJECT, closure, covered, imported, missing_deps, stage_modules, unread_keys


def test_every_stage_lists_all_the_code_it_imports():
    """Regression: pretrain/adapt did not list run.py (train_task), so editing it left `dvc repro` idle."""
    assert missing_deps() == {}


def test_the_deps_check_catches_a_missing_file(tmp_path):
    import shutil

    shutil.copytree(PROJECT / "ptv2", tmp_path / "ptv2", ignore=shutil.ignore_patterns("__pycache__"))
    text = (PROJECT / "dvc.yaml").read_text().replace("      - ptv2/training\n", "", 1)
    (tmp_path / "dvc.yaml").write_text(text)
    gaps = missing_deps(tmp_path)
    assert "dvc.yaml:pretrain" in gaps and "ptv2/training/driver.py" in gaps["dvc.yaml:pretrain"]


def test_stage_deps_exist():
    for dvc_file in (PROJECT / "dvc.yaml", PROJECT / "comparison/dvc.yaml"):
        for stage, (_, deps) in stage_modules(dvc_file).items():
            code = [d for d in deps if d.startswith("ptv2")]
            assert all((PROJECT / d).exists() for d in code), (stage, [d for d in code if not (PROJECT / d).exists()])


def test_a_stage_that_reads_the_task_data_itself_depends_on_it():
    """Regression (session 29): comparison/dvc.yaml's compare stage loads the task files (ptv2/data) but listed
    only code: new data left it "up to date". A stage that reads task data and has no other stage's output among
    its deps (which would carry the data's change to it) lists ${data_root}, as prepare does."""
    for dvc_file in (PROJECT / "dvc.yaml", PROJECT / "comparison/dvc.yaml"):
        for stage, (_, deps) in stage_modules(dvc_file).items():
            upstream = [d for d in deps if not d.startswith("ptv2") and d != "${data_root}"]
            if any(d.startswith("ptv2/data") for d in deps) and not upstream:
                assert "${data_root}" in deps, f"{dvc_file.relative_to(PROJECT)}:{stage}"


def test_metrics_and_plots_are_not_git_ignored():
    """Regression (session 29): metrics/ and report/ were git-ignored; being cache: false, they were in no commit,
    so `dvc exp show` printed "!" for every metric of every experiment and `dvc plots diff HEAD` failed to load.
    DVC reads them from git at each revision: the metrics and plots dvc.yaml declares must not be ignored."""
    import subprocess

    import yaml

    d = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    paths = [next(iter(p)) if isinstance(p, dict) else p for p in d.get("plots", [])]
    for st in d["stages"].values():
        st = st.get("do", st)
        paths += [next(iter(m)) if isinstance(m, dict) else m for m in st.get("metrics", [])]
    paths = [p.replace("${item}", "x") for p in paths]
    assert len(paths) >= 8 and not [p for p in paths if "${" in p], paths
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=PROJECT, capture_output=True,
                             text=True).stdout.split()
    assert ignored == [], ignored


def test_every_params_key_is_read_somewhere():
    """Regression: flows.retries / retry_delay_s / timezone were accepted and ignored."""
    assert unread_keys() == []


def test_the_unread_key_check_catches_a_dead_key(tmp_path):
    import shutil

    for d in ("ptv2", "flows"):
        shutil.copytree(PROJECT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    text = (PROJECT / "params.yaml").read_text().replace("  retries: 2", "  retries: 2\n  jitter_s: 5")
    (tmp_path / "params.yaml").write_text(text)
    assert unread_keys(tmp_path) == ["flows.jitter_s"]


def test_config_sections_have_no_defaults_of_their_own():
    """One source of values: params.yaml. A section field with a default would be a second one."""
    from ptv2 import config

    def check(cls):
        for f in dataclasses.fields(cls):
            if cls is not config.TaskSpec:  # task blocks have optional keys (absent = not used)
                assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
                    f"{cls.__name__}.{f.name} has a default"
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                check(tp)

    check(config.Config)
    assert not [n for n in dir(config) if n.endswith("_DEFAULTS")]


def test_model_package_imports_only_torch_and_transformers():
    code = ("import sys, ptv2.model.prompted, ptv2.model.backbone, ptv2.model.inject, ptv2.model.spec;"
            "bad = [m for m in ('mlflow', 'prefect', 'dvc', 'datasets', 'onnxruntime', 'ptv2.config', "
            "'ptv2.training') if m in sys.modules];"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_only_tracking_imports_mlflow_and_only_orchestration_imports_dvc():
    for f in sorted((PROJECT / "ptv2").rglob("*.py")):
        rel = f.relative_to(PROJECT)
        text = f.read_text()
        if rel.parts[1] != "tracking":
            assert "import mlflow" not in text and "from mlflow" not in text, rel
        if rel.parts[1] != "orchestration":
            assert "from dvc" not in text and "import dvc" not in text, rel


# what each package may import from the project (leaf modules: errors, files, strict, prefix, evidence, prompt,
# progress, backbone_files, ...)
MAY_IMPORT = {
    "config": set(), "model": set(), "serving": set(), "data": {"config"},
    "training": {"config", "data", "model"},
    "export": {"config", "data", "model", "serving", "training"},
    "experiments": {"config", "data", "model", "training", "tracking"},
    "tracking": {"serving"},  # MLflow, and the serving code the registered model carries: nothing above it
    "release": {"config", "data", "model", "serving", "training", "export", "tracking"},
    "orchestration": {"config", "tracking"},
}


def direct_packages(pkg: str, root=PROJECT) -> dict[str, set[str]]:
    """file -> the ptv2 packages its import statements name (function-local imports included)."""

    leaves = {"errors", "files", "strict", "prefix", "spans", "evidence", "prompt", "procenv", "progress",
              "backbone_files", "host"}
    out = {}
    for f in sorted((root / "ptv2" / pkg).glob("*.py")):
        names = {n.split(".")[1] for n in imported(f) if n.count(".") >= 1}
        out[str(f.relative_to(root))] = names - leaves - {pkg}
    return out


def test_no_import_runs_back_up_the_house():
    """Regression: export/deploy.py imported tracking/evidence.py and tracking imported export (a cycle);
    the release chain lived in tracking/."""
    for pkg, allowed in MAY_IMPORT.items():
        for f, names in direct_packages(pkg).items():
            assert names <= allowed, f"{f} imports {sorted(names - allowed)}"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    import shutil

    shutil.copytree(PROJECT / "ptv2", tmp_path / "ptv2", ignore=shutil.ignore_patterns("__pycache__"))
    f = tmp_path / "ptv2/export/deploy.py"
    f.write_text("from ptv2.tracking import store\n" + f.read_text())
    assert "tracking" in direct_packages("export", tmp_path)["ptv2/export/deploy.py"]


def test_only_the_flows_import_prefect():
    """Regression: config/checks.py imported Prefect's private validators (the config layer depended on an
    orchestrator's private API)."""
    offenders = [str(f.relative_to(PROJECT)) for f in sorted((PROJECT / "ptv2").rglob("*.py"))
                 if "import prefect" in f.read_text() or "from prefect" in f.read_text()]
    assert offenders == []


def test_data_and_model_do_not_import_training_or_above():
    for pkg, banned in (("data", ("training", "experiments", "tracking", "export", "model")),
                        ("model", ("training", "experiments", "tracking", "export", "data", "config"))):
        for f in sorted((PROJECT / "ptv2" / pkg).glob("*.py")):
            mod = ".".join(f.relative_to(PROJECT).with_suffix("").parts)
            reached = {str(p) for p in closure(mod)}
            assert not [p for p in reached if any(p.startswith(f"ptv2/{b}") for b in banned)], (mod, reached)


def test_every_package_says_what_it_owns():
    for init in sorted((PROJECT / "ptv2").rglob("__init__.py")):
        doc = init.read_text().strip()
        assert doc.startswith('"""') and len(doc) > 60, init


def test_covered_matches_files_and_folders():
    from pathlib import Path

    assert covered(Path("ptv2/a/b.py"), ["ptv2/a"]) and covered(Path("ptv2/a/b.py"), ["ptv2/a/b.py"])
    assert not covered(Path("ptv2/a/b.py"), ["ptv2/a/c.py", "ptv2/ab"])
def test_no_pickle_loading_in_library():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "ptv2"
    for p in root.rglob("*.py"):
        for line in p.read_text().splitlines():
            if re.search(r"torch\.load\(|pickle\.loads?\(", line):
                assert "weights_only=True" in line, f"{p}: {line.strip()}"


def test_scripts_and_docs_name_modules_that_exist():
    """Regression: scripts/run.sh imported ptv2.orchestrate after it moved; only a full run showed it."""
    import re

    for f in [*sorted((PROJECT / "scripts").glob("*.sh")), PROJECT / "README.md", *sorted((PROJECT / "flows").glob("*.py"))]:
        for mod in set(re.findall(r"\b(ptv2(?:\.\w+)+)", f.read_text())):
            parts = mod.split(".")
            while parts and not _is_module(".".join(parts)):
                parts.pop()  # ptv2.x.func: the module part must exist
            assert len(parts) >= 2, f"{f.name} names {mod}, which does not exist"


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent is a module, not a package
        return False


def test_stage_outputs_are_named_once_in_dvc_yaml():
    """Regression: metrics/*.json paths were spelled in stage code, release/promotion.py, the orchestration
    and dvc.yaml. Now the stages take them on the command line and the orchestration asks DVC."""
    import re

    spelled = []
    for pkg in ("stages", "release", "orchestration", "tracking", "export", "training"):
        for f in sorted((PROJECT / "ptv2" / pkg).glob("*.py")):
            for lit in re.findall(r"[\"'](?:metrics|outputs|report)/[^\"']*[\"']", f.read_text()):
                spelled.append(f"{f.relative_to(PROJECT)}: {lit}")
    assert spelled == []


def test_a_venv_linked_into_a_worktree_is_never_committed(tmp_path):
    """Regression: `.gitignore` had `.venv/`, which ignores a directory but not a symlink named .venv; a
    worktree sharing the environment through a link committed it, and checking that commit out replaced
    the real environment with a link to itself."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".gitignore").write_text((PROJECT / ".gitignore").read_text())
    (repo / ".venv").symlink_to(tmp_path / "elsewhere")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout
    assert ".venv" not in status and ".gitignore" in status


def test_the_promote_and_publish_stages_do_not_import_torch():
    """Regression: promote@<task> imported torch and transformers (through the export code and the training
    driver, for two names), ~11 s of its ~15 s start, paid three times in every `dvc repro`."""
    code = ("import sys, ptv2.stages.promote, ptv2.stages.publish; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_processes_the_scripts_start_write_bytecode(tmp_path):
    """Regression: uv installs without bytecode, and with PYTHONDONTWRITEBYTECODE set (as on this machine) Python
    never wrote it: every stage process compiled ~4,500 modules again (18.4 s to import a training stage, 7.5 s
    with bytecode). scripts/env.sh, which run.sh and test.sh source, lets the first importer write it."""
    import os

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for d, source in (("plain", ""), ("scripts", f'. "{PROJECT}/scripts/env.sh" && ')):
        (tmp_path / d).mkdir()
        (tmp_path / d / "probe_mod.py").write_text("X = 1\n")
        subprocess.run(["bash", "-c", f'{source}"{sys.executable}" -c "import probe_mod"'], cwd=tmp_path / d, env=env,
                       check=True)
    assert not (tmp_path / "plain" / "__pycache__").exists()  # the machine's setting, left alone: nothing written
    assert list((tmp_path / "scripts" / "__pycache__").glob("probe_mod.*.pyc"))
    for script in ("run.sh", "test.sh"):
        assert "\n. scripts/env.sh\n" in (PROJECT / "scripts" / script).read_text(), script


def test_dvc_ignores_the_bytecode_python_writes_into_code_deps():
    """Regression: with bytecode written (scripts/env.sh lets Python write it), a __pycache__ that a later stage
    wrote into a code folder an earlier stage lists as a dep changed that dep's hash: `dvc repro` on an unchanged
    repo ran promote and publish again (tests/test_pipeline.py::test_retrain_flow_registers_and_gates)."""
    from dvc.repo import Repo

    repo = Repo(str(PROJECT))
    try:
        for d in ("ptv2/training", "ptv2/data", "ptv2/config"):
            assert repo.dvcignore.is_ignored(repo.fs, f"{repo.root_dir}/{d}/__pycache__/x.cpython-311.pyc"), d
            assert not repo.dvcignore.is_ignored(repo.fs, f"{repo.root_dir}/{d}/__init__.py"), d
    finally:
        repo.close()


def test_the_readmes_serving_example_asks_only_for_tasks_the_default_pipeline_serves():
    """Regression (session 30): README's curl example asked for COPA, which the default pipeline does not adapt:
    copied after `./scripts/run.sh` it answered HTTP 400 "unknown task 'copa'"."""
    import json
    import re

    import yaml

    readme = (PROJECT / "README.md").read_text()
    [body] = re.findall(r"curl -X POST \S+/invocations .*?-d '(\{.*?\})'", readme, flags=re.S)
    tasks = {row["task"] for row in json.loads(body)["dataframe_records"]}
    served = set(yaml.safe_load((PROJECT / "params.yaml").read_text())["adapt"]["tasks"])
    assert tasks and tasks <= served, sorted(tasks - served)


def test_setup_refuses_a_python_older_than_311_before_any_install(tmp_path):
    """Regression (session 41): `./scripts/setup.sh` with an older python3 (Ubuntu 22.04's 3.10) made its venv and
    failed deep in pip ("requires a different Python"), after fetching a torch for it; and an old .venv likewise.
    A stand-in interpreter that reports 3.10 is refused in one line, exit 2, and no .venv is made."""
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(PROJECT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\n# answers as a Python 3.10 would: sys.version_info < (3, 11)\nexit 1\n")
    old.chmod(0o755)
    r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], env={**os.environ, "PYTHON": str(old)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"setup: {old} is not Python 3.11 or newer: run with PYTHON=python3.11 (or newer) ./scripts/setup.sh"], r.stderr
    assert not (repo / ".venv").exists()
    for missing in (str(tmp_path / "nowhere" / "python3"), "python3.99-nonexistent"):  # session 44: was "not 3.11"
        r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], env={**os.environ, "PYTHON": missing},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"setup: {missing} not found: install Python 3.11 or newer, or name one with PYTHON=python3.11 "
            f"./scripts/setup.sh"], r.stderr
    assert not (repo / ".venv").exists()
    # session 44: a python3 without ensurepip (Debian's, python3-venv not installed) leaves a venv without pip;
    # the next run took it and ended in ".venv/bin/pip: No such file or directory"
    noensurepip = tmp_path / "python3.12"
    noensurepip.write_text('#!/bin/sh\n[ "$1" = "-m" ] || exit 0\nmkdir -p "$3/bin" && ln -s /bin/true "$3/bin/python"\n'
                           'echo "ensurepip is not available" >&2\nexit 1\n')
    noensurepip.chmod(0o755)
    r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], env={**os.environ, "PYTHON": str(noensurepip)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"setup: {noensurepip} could not make a venv (its words are above; on Debian/Ubuntu: apt install "
        f"python3-venv)"), r.stderr
    assert not (repo / ".venv").exists()
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)  # a venv made --without-pip
    r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "setup: .venv has no pip: remove .venv and run again", r.stderr
    shutil.rmtree(repo / ".venv")
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(old)
    r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "older than 3.11: remove .venv" in r.stderr, r.stderr
    # session 45: .venv's own Python gone (a dangling link after an upgrade): `python -m venv` failed on the leftovers
    # and the line blamed a missing venv module. It is made again (here with the stand-in that has no venv module)
    shutil.rmtree(repo / ".venv")
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(tmp_path / "python3.99-gone")
    (repo / ".venv" / ".ptv2-installed").touch()
    r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], env={**os.environ, "PYTHON": str(noensurepip)},
                       capture_output=True, text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[0] == ("setup: .venv/bin/python cannot run (the Python .venv was made with is "
                                              "gone?): making .venv again"), r.stderr
    assert "ensurepip is not available" in r.stderr  # the stand-in was asked for a new venv


def test_run_sh_takes_a_git_worktree_and_refuses_a_copy_outside_git_before_the_install(tmp_path):
    """Regression (session 43): scripts/run.sh asked for a `.git` folder, after the install: in a `git worktree`
    (`.git` is a file there) it refused "run from a git clone" although DVC runs there; a copy outside git learnt
    it only after minutes of set-up. git answers now, before the install (PYTHON=false stops set-up at once)."""
    import shutil

    def run(folder):
        env = {**os.environ, "PYTHON": "false"}
        return subprocess.run(["bash", str(folder / "scripts/run.sh")], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("run.sh", "env.sh", "setup.sh"):
        shutil.copy(PROJECT / "scripts" / name, repo / "scripts" / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"], ["worktree", "add", "-q", str(tmp_path / "wt")]):
        subprocess.run([*git, *cmd], cwd=repo, check=True, capture_output=True)
    assert (tmp_path / "wt" / ".git").is_file()
    r = run(tmp_path / "wt")
    assert r.returncode == 2 and "setup: false is not Python 3.11" in r.stderr, r.stderr  # past the git check
    shutil.rmtree(repo / ".git")
    shutil.rmtree(tmp_path / "wt")
    r = run(repo)
    assert r.returncode == 2 and r.stderr.strip() == "run from a git clone (dvc needs git)", r.stderr
    assert not (repo / ".venv").exists()  # refused before the install
    # session 45: a host without git was told "run from a git clone" (in a clone)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "dirname"):
        (bin_ / tool).symlink_to(shutil.which(tool))
    r = subprocess.run([str(bin_ / "bash"), str(repo / "scripts/run.sh")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PATH": str(bin_), "PYTHON": "false"})
    assert r.returncode == 2 and r.stderr.strip() == ("git not found: install git (DVC keeps the pipeline in a git "
                                                      "clone)"), r.stderr
