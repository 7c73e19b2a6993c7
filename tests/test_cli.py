import io
import json
import re
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import PROJECT, tiny_params, write_all_formats
from ptv2.cli import main


@pytest.fixture()
def params(tmp_path, tiny_dir):
    write_all_formats(tmp_path)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(tiny_params(tmp_path, tiny_dir, epochs={"ptv2": 1, "finetune": 1})))
    return p


def test_train_evaluate_predict(params, tmp_path, capsys):
    assert main(["train", "--params", str(params), "--task", "sent", "--out", str(tmp_path / "m")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tasks"] == ["sent"] and "dev" in out["metrics"]
    assert main(["evaluate", "--params", str(params), "--model", str(tmp_path / "m/model"), "--task", "sent"]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)
    assert main(["predict", "--params", str(params), "--model", str(tmp_path / "m/model"), "--text", "good film"]) == 0
    captured = capsys.readouterr()
    row = json.loads(captured.out.splitlines()[0])
    assert row["label"] in ("0", "1") and 0 <= row["score"] <= 1
    assert "labelling" not in captured.err  # one batch: no bar
    # many texts showed nothing until every answer came (session 30): a bar on stderr, the answers on stdout
    many = [a for i in range(20) for a in ("--text", f"film {i}")]  # eval_batch_size 16: two batches
    assert main(["predict", "--params", str(params), "--model", str(tmp_path / "m/model"), *many]) == 0
    captured = capsys.readouterr()
    assert "labelling 20 texts" in captured.err and len(captured.out.splitlines()) == 20
    # --int8 on a model folder answered in fp32 without a word (session 13): now refused
    assert main(["predict", "--params", str(params), "--model", str(tmp_path / "m/model"), "--text", "good film",
                 "--int8"]) == 2
    assert "--int8 needs an exported bundle" in capsys.readouterr().err
    # a pair for a one-text task was encoded as a pair, silently (session 24); the bundle refuses it too
    assert main(["predict", "--params", str(params), "--model", str(tmp_path / "m/model"), "--text", "good film",
                 "--text-pair", "bad film"]) == 2
    assert "task 'sent' takes one text; drop --text-pair" in capsys.readouterr().err
    # an empty text was answered by a model folder where a bundle refused it (session 25)
    assert main(["predict", "--params", str(params), "--model", str(tmp_path / "m/model"), "--text", " "]) == 2
    assert "--text 1 (sent): the text is empty" in capsys.readouterr().err
    # the run folder itself (what `train --out` names) said only "not a ptv2 model folder" (session 24)
    assert main(["predict", "--params", str(params), "--model", str(tmp_path / "m"), "--text", "good film"]) == 2
    err = capsys.readouterr().err
    assert f"is a run folder, not a model folder: pass {str(tmp_path / 'm/model')!r}" in err, err


def test_predict_with_no_texts_is_one_line(params, tmp_path, capsys, monkeypatch):
    """Regression (session 13): empty stdin reached the model with zero rows. Session 25: a model path that is
    not a model is refused before stdin is read (a user at a terminal waited to type texts first)."""
    stdin = io.StringIO("good film\n")
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["predict", "--params", str(params), "--model", "/nonexistent"]) == 2
    assert "'/nonexistent' does not exist" in capsys.readouterr().err and stdin.tell() == 0
    assert main(["train", "--params", str(params), "--task", "sent", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n  \n"))
    assert main(["predict", "--params", str(params), "--model", str(tmp_path / "m/model")]) == 2
    err = capsys.readouterr().err
    assert "no texts to label" in err and "Traceback" not in err
    # a blank line was skipped in silence, so answers fell out of step with the file's lines (session 35)
    monkeypatch.setattr("sys.stdin", io.StringIO("good film\r\n\nbad film\n"))
    assert main(["predict", "--params", str(params), "--model", str(tmp_path / "m/model")]) == 0
    captured = capsys.readouterr()
    assert [json.loads(r)["line"] for r in captured.out.splitlines()] == [1, 3]
    assert "skipped 1 blank line(s) (2)" in captured.err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--task", "nope"], "unknown task 'nope'"),
    (["train", "--set", "train.epochz=1"], "unknown key(s) ['epochz']"),
    (["train", "--set", "tasks.sent.files.train=missing.tsv", "--task", "sent"], "not found"),
    (["evaluate", "--model", "/nonexistent", "--task", "sent"], "'/nonexistent' does not exist: pass a ptv2 model"),
    (["compare", "--no-track", "--tasks", ","], "--tasks ',' names nothing: give comma-separated names"),
    # regression (session 35): "," read as the option left out, so `pretrain --tasks ,` ran the whole default
    # mixture, and a misspelt --one-seed task ran every seed in silence
    (["pretrain", "--tasks", " , "], "--tasks ' , ' names nothing"),
    (["compare", "--no-track", "--tasks", "sent", "--methods", "ptv2", "--one-seed", "snet"],
     "--one-seed snet is not one of the tasks ['sent']: name tasks that run"),
    (["compare", "--no-track", "--tasks", ""], "--tasks '' is empty: give it a value, or leave the option out"),
    # an unset shell variable (--task "$TASK") trained the default task into the default folder (session 27)
    (["train", "--task", ""], "--task '' is empty"), (["train", "--task", "sent", "--out", " "], "--out ' ' is empty"),
    (["adapt", "--task", "sent", "--from", ""], "--from '' is empty"), (["serve", "--host", ""], "--host '' is empty"),
    (["compare", "--tasks", "sent", "--methods", "loar"], "unknown method 'loar'"),
    (["compare", "--set", "compare.methods=[loar]"], "compare.methods = 'loar' is not allowed"),
    (["compare", "--no-track", "--tasks", "sent", "--methods", "ptv2", "--seeds", "1,x"],
     "--seeds '1,x' is not a comma-separated list of integers"),
    (["compare", "--no-track", "--tasks", "sent", "--methods", "ptv2", "--seeds", " ,"],
     "--seeds ' ,' names nothing"),
    # a repeat ran twice and counted twice in mean ± std, or trained a mixture on one task "twice" (session 25)
    (["compare", "--no-track", "--tasks", "sent", "--methods", "ptv2", "--seeds", "1,1"], "names '1' twice"),
    (["compare", "--no-track", "--tasks", "sent", "--methods", "ptv2", "--seeds", "1,01"], "names a seed twice"),
    # regression (session 30): a negative seed failed at its own run, after the runs before it had run
    (["compare", "--no-track", "--tasks", "sent", "--methods", "ptv2", "--seeds", "1,-1"],
     "--seeds = -1 is not allowed: expected an integer in [0, 4294967295]"),
    (["transfer", "--tasks", "sent", "--seeds", "4294967296"], "--seeds = 4294967296 is not allowed"),
    (["compare", "--no-track", "--tasks", "sent,sent", "--methods", "ptv2"], "--tasks 'sent,sent' names 'sent' twice"),
    (["compare", "--no-track", "--tasks", "sent", "--methods", "ptv2,ptv2"], "names 'ptv2' twice"),
    (["compare", "--no-track", "--set", "compare.seeds=[2,2]"], "compare.seeds = [2, 2] is not allowed"),
    (["pretrain", "--tasks", "sent,pair,sent"], "--tasks 'sent,pair,sent' names 'sent' twice"),
    (["transfer", "--tasks", "sent,pair", "--held-out", "reg,reg"], "--held-out 'reg,reg' names 'reg' twice"),
])
def test_user_errors_exit_2_with_a_clear_message(params, capsys, argv, needle):
    assert main([argv[0], "--params", str(params), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["empty-folder", "nosuch-org/nosuch-model", "missing-folder", "~/nosuch"])
def test_a_backbone_that_cannot_be_loaded_is_one_line(params, tmp_path, capsys, monkeypatch, name):
    """Regression (session 21): a folder holding no model, or a hub name offline, reached the user as a
    transformers traceback (ValueError / OSError)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    if name.endswith("-folder"):
        name = str(tmp_path / name)
    if name.startswith(str(tmp_path / "empty")):
        (tmp_path / "empty-folder").mkdir()
    assert main(["train", "--params", str(params), "--task", "sent", "--set", f"backbone.name={name}",
                 "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"backbone {name!r} cannot be loaded" in err and "Traceback" not in err, err
    assert "set backbone.name to a local model folder" in err
    # regression (session 31): a folder that is not there read "Repo id must be in the form 'repo_name' ..."
    if "missing" in name or name.startswith("~"):
        assert f"(no such folder: {tmp_path / name.rsplit('/', 1)[-1]})" in err, err


def test_a_quoted_home_in_an_output_path_is_the_home_folder(params, tmp_path, monkeypatch, capsys):
    """Regression (session 31): `--out '~/runs/x'` (quoted, so the shell left the ~) made a folder named "~" in the
    working directory."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    assert main(["baseline", "--params", str(params), "--task", "sent", "--out", "~/runs/x"]) == 0
    assert (home / "runs/x/model/manifest.json").is_file() and not (cwd / "~").exists()
    capsys.readouterr()
    assert main(["evaluate", "--params", str(params), "--model", "~/runs/x/model", "--task", "sent"]) == 0


def test_a_backbone_folder_under_home_is_found(tiny_dir, tmp_path, monkeypatch):
    """Regression (session 31): ``backbone.name: ~/models/x`` went to the hub as a repo id."""
    import shutil

    from ptv2.model.backbone import load_backbone

    shutil.copytree(tiny_dir, tmp_path / "models" / "tiny")
    monkeypatch.setenv("HOME", str(tmp_path))
    model, _ = load_backbone("~/models/tiny")
    assert model.config.hidden_size == 32


@pytest.mark.parametrize("argv,needle", [
    (["--tasks", "sent", "--held-out", "zz"], "unknown task 'zz'"),
    (["--tasks", "sent,zz"], "unknown task 'zz'"),
    (["--tasks", ","], "--tasks ',' names nothing"), (["--tasks", ""], "--tasks '' is empty"),
    (["--tasks", "sent", "--seeds", "a"], "--seeds 'a' is not a comma-separated list of integers"),
    # regression (session 26): a held-out task outside --tasks cost a pretraining no row used
    (["--tasks", "sent", "--held-out", "pair"], "--held-out pair is not one of --tasks ['sent']: (d) adapts each "
                                                "held-out task itself"),
])
def test_transfer_checks_its_arguments_before_pretraining(params, tmp_path, capsys, argv, needle):
    """Regression (session 21): a misspelt --held-out task failed only after the mixture's pretraining had run,
    and --seeds a was a traceback."""
    work = tmp_path / "work"
    assert main(["transfer", "--params", str(params), *argv, "--work", str(work), "--out",
                 str(tmp_path / "t.md")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and not work.exists(), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="qlora runs where there is a CUDA GPU")
def test_compare_refuses_qlora_on_a_cpu_machine_before_any_run(params, tmp_path, capsys):
    """Regression (session 22): `compare --methods ptv2,qlora` on a CPU machine trained the frozen and ptv2 runs,
    then failed in qlora's process with two tracebacks (the child's ConfigError, the parent's RuntimeError), exit 1."""
    work = tmp_path / "work"
    assert main(["compare", "--params", str(params), "--no-track", "--tasks", "sent", "--methods", "ptv2,qlora",
                 "--seeds", "1", "--work", str(work), "--out", str(tmp_path / "c.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method 'qlora' needs a CUDA GPU" in err and "Traceback" not in err, err
    assert not work.exists()


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "ptv2", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "train" in r.stdout


def test_every_command_and_option_says_what_it_is():
    """Regression (session 44): `ptv2 registry -h` (every subcommand's help) had no description, and --task,
    --out, --work, --tasks, -v showed no help text."""
    import argparse

    from ptv2.cli.app import parser

    p = parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= {"train", "adapt", "registry", "serve", "compare"}
    for name, sp in [("ptv2", p), *sub.choices.items()]:
        assert sp.description, name
        for a in sp._actions:
            if not isinstance(a, argparse._SubParsersAction):
                assert a.help, (name, a.option_strings)


def test_compare_reads_its_defaults_and_budget_from_params(params, tmp_path, capsys):
    d = yaml.safe_load(params.read_text())
    d["compare"] = {**d["compare"], "tasks": ["sent"], "methods": ["ptv2"], "seeds": [3], "out": str(tmp_path / "c.md"),
                    "work": str(tmp_path / "w"), "overrides": ["tasks.sent.max_train_examples=12"]}
    params.write_text(yaml.safe_dump(d))
    assert main(["compare", "--params", str(params), "--no-track"]) == 0
    done = json.loads((tmp_path / "w/sent/ptv2/seed3/metrics.json").read_text())
    assert re.search(r"\|\s*ptv2\s*\|", (tmp_path / "c.md").read_text())
    import dataclasses

    from ptv2.config import comparison_config, load_config
    from ptv2.training.fingerprint import run_key
    with_budget, plain = comparison_config(params), load_config(params)
    assert done["key"] == run_key(dataclasses.replace(with_budget, seed=3), ["sent"])  # the run used the budget
    assert done["key"] != run_key(dataclasses.replace(plain, seed=3), ["sent"])


@pytest.mark.parametrize("command", ["train", "baseline", "evaluate --model m", "export --model m", "pretrain",
                                     "adapt --task sent", "compare", "transfer --tasks sent", "registry"])
def test_a_bad_config_key_is_reported_before_torch_is_imported(command):
    """A config error is one line, exit 2, before the heavy imports (it took 7-13 s when torch loaded first)."""
    import subprocess
    import sys
    import time

    code = ("import sys; from ptv2.cli import main; rc = main(sys.argv[1:]); "
            "print('RC', rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *command.split(), "--set", "train.bogus_key=1"],
                       capture_output=True, text=True, timeout=120, cwd=PROJECT)
    took = time.perf_counter() - t0
    assert r.stdout.strip().splitlines()[-1] == "RC 2 False False", (r.stdout, r.stderr[-2000:])
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "unknown key(s) ['bogus_key'] in train" in err[0], err
    print(f"{command}: {took:.2f} s")  # the figure; not asserted (a timed assertion is flaky)


def test_registry_of_a_fresh_project_says_where_it_looked_and_what_fills_it(params, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["registry", "--params", str(params)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("no registered model in sqlite:///") and "`dvc repro` trains, gates and registers" in out
    # regression (session 30): looking created an empty mlruns.db, with MLflow's table set-up logs on stderr
    assert not (params.parent / "mlruns.db").exists()
    assert main(["predict", "--params", str(params), "--model", "models:/ptv2-all@champion", "--text", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptv2: error: no registered model 'ptv2-all' in sqlite:///") and "(registered: none)" in err
    assert "\n" not in err and not (params.parent / "mlruns.db").exists()


def test_registry_marks_a_version_its_gate_never_decided(params, tmp_path, capsys, monkeypatch, caplog):
    """Regression (session 27): a version registered by a promote stage that then failed showed a blank row,
    like one still being gated."""
    from ptv2.tracking import registry, store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.txt").write_text("1")
    with store.start_run(params.parent, "t", "r", {}, {}) as run:
        run.log_artifacts(tmp_path / "m", "model")
    registry.register_version(params.parent, "ptv2-sent", run.id, "model", {"int8_agreement": "0.99"})
    assert main(["registry", "--params", str(params)]) == 0
    out = capsys.readouterr().out.splitlines()
    row = [r for r in out if r.startswith("| ptv2-sent")]
    assert len(row) == 1 and "not gated: its promote stage stopped before deciding" in row[0], row
    # regression (session 31): columns no version fills were printed empty, widening a ~250-character table
    headers = [h.strip() for h in out[0].strip("|").split("|")]
    assert headers == ["model", "version", "aliases", "int8 agreement", "reason"], headers
    # session 44: which versions are the frozen baseline itself (gated against the trivial one) was not shown
    registry.register_version(params.parent, "ptv2-sent", run.id, "model", {"candidate": "frozen"})
    registry.register_version(params.parent, "ptv2-sent", run.id, "model", {"candidate": "trained"})
    assert main(["registry", "--params", str(params)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [h.strip() for h in out[0].strip("|").split("|")][3] == "candidate"
    assert [[c.strip() for c in r.strip("|").split("|")][1:4:2] for r in out if r.startswith("| ptv2-sent")] == [
        ["1", ""], ["2", "frozen baseline"], ["3", "trained"]]
    # regression (session 35): tags edited in MLflow's UI (anyone may) were a JSONDecodeError / ValueError
    # traceback here and in the publish stage; they read as empty, with a warning naming the tag
    registry.register_version(params.parent, "ptv2-all", run.id, "model",
                              {"tasks": "{sent: 1", "excluded": "[1]", "int8_agreement": "high"})
    with caplog.at_level("WARNING", logger="ptv2.tracking.registry"):
        assert main(["registry", "--params", str(params)]) == 0
    [row] = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ptv2-all")]
    assert "| high " in row and "serves " in row, row
    assert "tag tasks = '{sent: 1' is not what ptv2 wrote there" in caplog.text
    from ptv2.release.publish import _served

    assert _served(("1", {"tasks": "null"})) == {} and _served(("1", {"tasks": '{"sent": "3"}'})) == {"sent": "3"}


def test_version_has_one_home(capsys):
    """Regression (session 25): `ptv2 --version` answered "the following arguments are required: command", and
    pyproject.toml said 0.1.0 where ptv2.__version__ said 0.2.0; the installed metadata now reads the package's."""
    import importlib.metadata

    import ptv2

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ptv2 {ptv2.__version__}"
    assert importlib.metadata.version("ptv2") == ptv2.__version__


def test_transfer_holds_out_by_default_only_the_tasks_it_was_given(params, monkeypatch, tmp_path):
    """Regression (session 26): the default --held-out rte,cb pretrained a mixture without each of them even when
    --tasks named neither (minutes of pretraining no row used; on a project without rte: 'unknown task')."""
    import ptv2.experiments.transfer as tr

    got = []
    monkeypatch.setattr(tr, "transfer", lambda cfg, tasks, held_out, *rest: got.append((tasks, held_out)))
    out = ["--out", str(tmp_path / "t.md"), "--work", str(tmp_path / "w")]
    assert main(["transfer", "--params", str(params), "--tasks", "sent,pair", *out]) == 0
    assert main(["transfer", "--params", str(PROJECT / "params.yaml"), "--tasks", "mrpc,cb,rte", *out]) == 0
    assert main(["transfer", "--params", str(params), "--tasks", "sent,pair", "--held-out", "pair", *out]) == 0
    assert got == [(["sent", "pair"], []), (["mrpc", "cb", "rte"], ["rte", "cb"]), (["sent", "pair"], ["pair"])]


def test_a_process_count_the_cli_does_not_launch_is_said(params, tmp_path, capsys, caplog, monkeypatch):
    """Session 45: `ptv2 train --set train.processes=2` ran one process without a word (only the DVC stages launch
    themselves under torchrun); it says so and how to run data parallel. Not under torchrun (WORLD_SIZE)."""
    import logging

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train", "--params", str(params), "--task", "sent", "--set", "train.epochs.ptv2=1"]
    with caplog.at_level(logging.WARNING, logger="ptv2"):
        assert main([*argv, "--out", str(tmp_path / "one"), "--set", "train.processes=2"]) == 0
    assert ("train.processes = 2: the pipeline's stages launch that many processes; `ptv2 train` runs as this one "
            "(for data parallel: torchrun --standalone --nproc_per_node 2 -m ptv2 train ...)") in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptv2"):
        assert main([*argv, "--out", str(tmp_path / "two")]) == 0
    assert not [m for m in caplog.messages if "train.processes" in m]
