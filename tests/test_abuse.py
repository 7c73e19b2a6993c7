"""The abuse suite: mutated params, corrupt data, tampered model folders and bundles, racing writers.
Every case must end in one line naming the value or file and the fix, exit 2, no traceback, nothing
finished lost."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from safetensors.numpy import load_file, save_file

from helpers import tiny_params
from ptv2.cli import main
from ptv2.files import sha256


def _one_line_exit_2(capsys, argv, needle):
    code = main(argv)
    # progress bars (a model loading) are not messages; what remains must be the one error line
    err = "\n".join(x for x in capsys.readouterr().err.replace("\r", "\n").splitlines() if "it/s]" not in x)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle.lower() in err.lower(), err
    return err


@pytest.fixture()
def params(root, tiny_dir):
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump(tiny_params(root, tiny_dir, epochs={"ptv2": 1, "finetune": 1})))
    return p


# ---- params.yaml and --set ----------------------------------------------------------------------------

PARAM_TEXT_CASES = {
    "yaml syntax error": (lambda t: t + "\ntrain: [unclosed\n", "YAML syntax error at line"),
    "duplicate key": (lambda t: t + "seed: 3\n", "duplicate key 'seed'"),
    "not a mapping": (lambda t: "- a\n- b\n", "top level must be a mapping"),
    "empty file": (lambda t: "", "missing key(s)"),
    "not utf-8": (lambda t: t.replace("seed: 0", "seed: 0 # \udcff"), "not UTF-8"),
}


@pytest.mark.parametrize("case", list(PARAM_TEXT_CASES))
def test_broken_params_file(params, capsys, case):
    mutate, needle = PARAM_TEXT_CASES[case]
    text = mutate(params.read_text())
    params.write_bytes(text.encode("utf-8", "surrogateescape"))
    _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", "sent"], needle)


SET_CASES = {
    "yaml error in --set": ("tasks.sent.text_b={a} {b}", "YAML syntax error"),
    "unknown key": ("train.epochz=1", "unknown key(s) ['epochz'] in train"),
    "wrong type": ("train.batch_size=big", "train.batch_size = 'big' has the wrong type"),
    "impossible value": ("train.batch_size=0", "train.batch_size = 0 is not allowed"),
    "no double section in messages": ("train.warmup_ratio=2", "train.warmup_ratio = 2"),
    "empty adapt list": ("adapt.tasks=[]", "adapt.tasks = [] is not allowed"),
    "duplicate adapt task": ("adapt.tasks=[sent, sent]", "distinct"),
    "unknown task in mixture": ("pretrain.tasks=[nope]", "pretrain.tasks = 'nope'"),
    "bad cron": ("flows.retrain_cron=61 25 * * *", "flows.retrain_cron = '61 25 * * *' is not allowed"),
    "bad time zone": ("flows.timezone=Mars/Olympus", "flows.timezone"),
    "cuda without cuda": ("train.device=cuda", "no CUDA GPU"),
    "max_length beyond positions": ("backbone.max_length=100000", "backbone.max_length = 100000"),
    "hub format with a local folder": ("tasks.sent.format=hub", "tasks.sent"),
    "negative lr": ("train.lr.ptv2=-1", "train.lr.ptv2 = -1"),
    "override without =": ("train.epochs", "section.key=value"),
    "bad alpha": ("tracking.promote_alpha=2", "tracking.promote_alpha = 2"),
    "processes zero": ("train.processes=0", "train.processes = 0"),
    "int8 serving without an int8 export": ("export.int8=false", "serving.int8 = True is not allowed"),
    "multi-task model named like a task's": ("tracking.multitask_model=ptv2-sent", "tracking.multitask_model = 'ptv2-sent'"),
    "zero micro-batch": ("serving.micro_batch=0", "serving.micro_batch = 0"),
    "int8 agreement policy above 1": ("serving.int8_min_agreement=1.5", "serving.int8_min_agreement = 1.5"),
    "a key that moved": ("export.min_int8_agreement=0.9", "export.min_int8_agreement is now serving.int8_min_agreement"),
    # regression (session 42): each swap of a paired test is a metric call in a Python loop: 1e8 of them (or an
    # alpha needing them) ran for hours before the first epoch's decision, with no word
    "swaps beyond the most": ("train.select_samples=100000000", "expected an integer in [1, 1000000]"),
    "gate swaps beyond the most": ("tracking.permutation_samples=2000000", "expected an integer in [100, 1000000]"),
    "alpha needing too many swaps": ("train.select_alpha=1e-7", "a smaller one needs over 1000000 swaps"),
    "gate alpha needing too many swaps": ("tracking.promote_alpha=1e-7", "a smaller one needs over 1000000 swaps"),
}


@pytest.mark.parametrize("case", list(SET_CASES))
def test_bad_override(params, capsys, case, root):
    assignment, needle = SET_CASES[case]
    if case == "cuda without cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    if case == "hub format with a local folder":
        assignment = f"tasks.sent.hub_name={root / 'sent'}"
        _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", "sent", "--set", "tasks.sent.format=hub",
                                  "--set", assignment], "local folder")
        return
    _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", "sent", "--set", assignment], needle)
    assert not (root / "outputs").exists()  # refused before any work started


# ---- data files -----------------------------------------------------------------------------------------

DATA_CASES = {
    "tsv not utf-8": ("sent/train.tsv", lambda b: b.replace(b"good", b"g\xffod", 1), "not UTF-8"),
    "tsv empty": ("sent/train.tsv", lambda b: b"", "is empty"),
    "tsv header only": ("sent/train.tsv", lambda b: b.split(b"\n")[0] + b"\n", "is empty"),
    "tsv short row": ("sent/train.tsv", lambda b: b + b"only-one-column\n", "columns"),
    "unknown label": ("sent/train.tsv", lambda b: b + b"a nice film\t7\n", "unknown label '7' (data row 201)"),
    "jsonl empty": ("pair/train.jsonl", lambda b: b"", "is empty"),
    "jsonl bad line": ("pair/train.jsonl", lambda b: b + b"{not json\n", "line 21"),
    "jsonl not an object": ("pair/train.jsonl", lambda b: b + b"[1, 2]\n", "not a JSON object"),
    "jsonl not utf-8": ("pair/train.jsonl", lambda b: b"\xff\xfe" + b, "not UTF-8"),
    "jsonl missing field": ("pair/train.jsonl", lambda b: b + b'{"premise": "x", "label": "yes"}\n', "hypothesis"),
    "missing file": ("sent/train.tsv", None, "not found"),
    # regression (session 42): a folder, a named pipe or a device was "not found" (it is there)
    "a folder": ("sent/train.tsv", "folder", "is not a regular file (a folder, pipe or device)"),
    "a named pipe": ("sent/train.tsv", "fifo", "is not a regular file (a folder, pipe or device)"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_corrupt_data(params, capsys, root, case):
    rel, mutate, needle = DATA_CASES[case]
    f = root / rel
    if mutate is None:
        f.unlink()
    elif mutate == "folder":
        f.unlink()
        f.mkdir()
    elif mutate == "fifo":
        f.unlink()
        os.mkfifo(f)
    else:
        f.write_bytes(mutate(f.read_bytes()))
    task = rel.split("/")[0]
    err = _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", task], needle)
    assert rel.split("/")[1] in err or task in err


def test_separate_label_files_join_line_by_line(root, tiny_dir):
    """WiC's release keeps labels in *.gold.txt, one per line: `label_files` joins them to the rows."""
    from ptv2.config import config_from_dict
    from ptv2.data.tasks import load_task_data
    from ptv2.errors import DataError

    rows = ["bank\tN\t0-1\tthe bank of the river\tshe went to the bank"] * 12
    (root / "wic").mkdir()
    (root / "wic/train.data.txt").write_text("\n".join(rows) + "\n")
    (root / "wic/train.gold.txt").write_text("\n".join("T" if i % 2 else "F" for i in range(12)) + "\n")
    d = tiny_params(root, tiny_dir)
    d["tasks"]["wic"] = {"type": "pair_classification", "format": "tsv", "header": False,
                         "columns": ["word", "pos", "index", "s1", "s2"], "files": {"train": "wic/train.data.txt"},
                         "label_files": {"train": "wic/train.gold.txt"}, "text_a": "{word}: {s1}", "text_b": "{s2}",
                         "labels": ["F", "T"], "metrics": ["accuracy"]}
    td = load_task_data(config_from_dict(d), "wic")
    assert sorted(set(td.split("train")["label"]) | set(td.split("val")["label"])) == [0, 1]
    (root / "wic/train.gold.txt").write_text("T\nF\n")
    with pytest.raises(DataError, match="2 labels for 12 rows"):
        load_task_data(config_from_dict(d), "wic")
    d["tasks"]["wic"]["label_files"] = {"dev": "wic/train.gold.txt"}
    with pytest.raises(Exception, match="label_files"):
        config_from_dict(d)


# ---- model folders and bundles ------------------------------------------------------------------------------

@pytest.fixture()
def trained(params, root, capsys):
    assert main(["train", "--params", str(params), "--task", "pair", "--out", str(root / "m")]) == 0
    capsys.readouterr()
    return root / "m/model"


def _rehash(folder, manifest="manifest.json"):
    m = json.loads((folder / manifest).read_text())
    m["files"] = {k: sha256(folder / k) for k in m["files"]}
    (folder / manifest).write_text(json.dumps(m))


MODEL_CASES = {
    "weights truncated": (lambda m: (m / "adapter.safetensors").write_bytes((m / "adapter.safetensors").read_bytes()[:-9]),
                          "checksum mismatch"),
    "labels reordered": (lambda m: (m / "adapter_config.json").write_text(
        (m / "adapter_config.json").read_text().replace('"no",', '"__",').replace('"yes"', '"no"').replace('"__"', '"yes"')),
        "checksum mismatch"),
    "prompt length edited": (lambda m: (m / "adapter_config.json").write_text(
        (m / "adapter_config.json").read_text().replace('"length": 4', '"length": 5')), "checksum mismatch"),
    "prompt length edited and rehashed": (lambda m: ((m / "adapter_config.json").write_text(
        (m / "adapter_config.json").read_text().replace('"length": 4', '"length": 5')), _rehash(m)),
        "wrong shape"),
    "config not json": (lambda m: ((m / "adapter_config.json").write_text("{oops"), _rehash(m)), "adapter_config.json"),
    "manifest not json": (lambda m: (m / "manifest.json").write_text("nope"), "not valid JSON"),
    "manifest missing": (lambda m: (m / "manifest.json").unlink(), "not a ptv2 model folder"),
    # regression (session 43): both said "retrain the model with this version of ptv2", a fix only for the first
    "manifest of an older ptv2": (lambda m: (m / "manifest.json").write_text(json.dumps(
        {**json.loads((m / "manifest.json").read_text()), "format": "ptv2-adapter/1"})),
        "format 'ptv2-adapter/1', expected 'ptv2-adapter/2'; retrain the model with this version of ptv2"),
    "manifest replaced by other JSON": (lambda m: (m / "manifest.json").write_text(
        (m / "adapter_config.json").read_text()), "format None, expected 'ptv2-adapter/2'; it is not a ptv2 model's "
                                                  "manifest (replaced or damaged): restore the folder"),
    "extra file": (lambda m: (m / "evil.safetensors").write_bytes(b"x"), "evil.safetensors"),
    "unknown spec key": (lambda m: ((m / "adapter_config.json").write_text(json.dumps(
        {**json.loads((m / "adapter_config.json").read_text()), "evil": 1})), _rehash(m)), "unknown keys ['evil']"),
}


def _mutated_pair_prediction(capsys, params, model, mutate, needle):
    """Damage ``model`` (a model folder or bundle), then predict one pair: one line naming it, exit 2."""
    mutate(model)
    _one_line_exit_2(capsys, ["predict", "--params", str(params), "--model", str(model), "--task", "pair", "--text",
                              "the cat", "--text-pair", "a cat"], needle)


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_tampered_model_folder(params, trained, capsys, case):
    _mutated_pair_prediction(capsys, params, trained, *MODEL_CASES[case])


def test_a_model_folder_whose_backbone_is_gone_names_its_fix(root, tiny_dir, capsys):
    """Regression (session 36): a model folder trained on a local backbone folder that has since moved (another
    host, a cleaned /tmp) failed with "set backbone.name to a local model folder", which cannot help: the folder
    names its own backbone (`--set backbone.name=<a copy>` gave the same line). The line now says what can."""
    bb = root / "bb"
    shutil.copytree(tiny_dir, bb)
    p = root / "moved.yaml"
    p.write_text(yaml.safe_dump(tiny_params(root, bb, epochs={"ptv2": 1, "finetune": 1})))
    assert main(["train", "--params", str(p), "--task", "sent", "--out", str(root / "m")]) == 0
    shutil.rmtree(bb)
    capsys.readouterr()
    err = _one_line_exit_2(capsys, ["predict", "--params", str(p), "--set", f"backbone.name={tiny_dir}", "--model",
                                    str(root / "m/model"), "--text", "good film"], "its backbone")
    assert f"no such folder: {bb}" in err and "put that backbone at that path, or serve the model's ONNX bundle" in err


def test_the_test_split_warning_comes_with_test_scores_only(params, trained, root, capsys, caplog):
    """Regression (session 36): `ptv2 evaluate --split test` on a task without a test file printed the "labelled
    TEST split" warning above its one-line error; the warning now comes with the scores it is about."""
    with caplog.at_level("WARNING", logger="ptv2"):
        _one_line_exit_2(capsys, ["evaluate", "--params", str(params), "--model", str(trained), "--task", "pair",
                                  "--split", "test"], "has no split 'test'")
    assert "TEST split" not in caplog.text
    shutil.copy(root / "pair/dev.jsonl", root / "pair/test.jsonl")
    with caplog.at_level("WARNING", logger="ptv2"):
        assert main(["evaluate", "--params", str(params), "--model", str(trained), "--task", "pair", "--split",
                     "test", "--set", "tasks.pair.files.test=pair/test.jsonl"]) == 0
    assert "scored on the labelled TEST split" in caplog.text and json.loads(capsys.readouterr().out)["accuracy"] >= 0


@pytest.fixture()
def bundle(params, trained, root, capsys):
    assert main(["export", "--params", str(params), "--model", str(trained), "--out", str(root / "b"),
                 "--set", "export.int8=false", "--set", "serving.int8=false"]) == 0
    capsys.readouterr()
    return root / "b"


def _evil_copy(b):
    shutil.copy(b / "tasks/pair.safetensors", b / "tasks/evil.safetensors")
    shutil.copy(b / "tasks/pair.json", b / "tasks/evil.json")


def _reshape_head(b):
    t = load_file(str(b / "tasks/pair.safetensors"))
    t["head_weight"], t["head_bias"] = t["head_weight"][:1], t["head_bias"][:1]
    save_file(t, str(b / "tasks/pair.safetensors"))
    _rehash(b)


def _labels_three(b):
    spec = json.loads((b / "tasks/pair.json").read_text())
    spec["labels"] = ["no", "yes", "maybe"]
    (b / "tasks/pair.json").write_text(json.dumps(spec))
    _rehash(b)


def _listed_outside(b):
    """A manifest that lists a file outside the bundle by a relative path (with its true hash)."""
    (b.parent / "outside.json").write_text("{}")
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["tasks/../../outside.json"] = sha256(b.parent / "outside.json")
    (b / "manifest.json").write_text(json.dumps(m))


def _prompt_shape(b):
    t = load_file(str(b / "tasks/pair.safetensors"))
    t["prompt"] = t["prompt"][:, :, :2]  # fewer heads
    save_file(t, str(b / "tasks/pair.safetensors"))
    _rehash(b)


BUNDLE_CASES = {
    "unlisted task copied in": (_evil_copy, "not listed in manifest.json"),
    "head of another shape, rehashed": (_reshape_head, "does not fit 2 outputs"),
    "labels changed, rehashed": (_labels_three, "does not fit 3 outputs"),
    "prompt of another shape, rehashed": (_prompt_shape, "does not fit the encoder's prefix"),
    "manifest not json": (lambda b: (b / "manifest.json").write_text("{"), "not valid JSON"),
    "encoder truncated": (lambda b: (b / "encoder.onnx").write_bytes((b / "encoder.onnx").read_bytes()[:-100]),
                          "sha256"),
    "listed file missing": (lambda b: (b / "tokenizer/tokenizer.json").unlink(), "is missing"),
    "a listed path leaves the bundle": (_listed_outside, "a path outside the bundle"),  # session 24
    "spec not json, rehashed": (lambda b: ((b / "tasks/pair.json").write_text("{x"), _rehash(b)), "unreadable"),
}


@pytest.mark.parametrize("case", list(BUNDLE_CASES))
def test_tampered_bundle(params, bundle, capsys, case):
    _mutated_pair_prediction(capsys, params, bundle, *BUNDLE_CASES[case])


def test_bundle_refuses_a_task_it_does_not_serve(params, bundle, capsys):
    _one_line_exit_2(capsys, ["predict", "--params", str(params), "--model", str(bundle), "--task", "evil", "--text",
                              "x"], "unknown task 'evil'")


def test_a_bundle_where_a_model_folder_goes_names_the_fix(params, bundle, capsys):
    """Regression (session 31): `adapt --from <a bundle>` / `export --model <a bundle>` said "is not a ptv2 model
    folder ...; train one with 'ptv2 train'"."""
    for argv in (["adapt", "--task", "pair", "--from", str(bundle)], ["export", "--model", str(bundle)]):
        _one_line_exit_2(capsys, [argv[0], "--params", str(params), *argv[1:]],
                         f"{str(bundle)!r} is a ptv2-bundle/1 folder, not a model folder (ptv2-adapter/2): pass the "
                         f"model folder it was made from")


def test_int8_on_a_bundle_exported_without_it_names_the_fix(params, bundle, capsys):
    """Session 25: "no encoder.int8.onnx in this bundle" said what was missing, not what to do."""
    for argv in (["predict", "--text", "x"], ["evaluate", "--task", "pair"]):
        _one_line_exit_2(capsys, [argv[0], "--params", str(params), "--model", str(bundle), *argv[1:], "--int8"],
                         "exported with export.int8: false; drop --int8 or export again")


def test_an_output_path_holding_something_else_is_refused_and_kept(params, trained, bundle, root, capsys):
    """Regression (session 24): `export --out <the model folder>` replaced the model with the bundle, and
    `--out .` would have deleted the folder's contents; now only an earlier output of the same kind is replaced."""
    mine = root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (root / "a_file").write_text("keep me too")
    export = ["export", "--params", str(params), "--model", str(trained), "--set", "export.int8=false",
              "--set", "serving.int8=false"]
    for out, what in ((trained, "an export"), (mine, "an export"), (root / "a_file", "an export")):
        _one_line_exit_2(capsys, [*export, "--out", str(out)], f"{str(out)!r} exists and is not {what}")
    assert (mine / "notes.txt").read_text() == "keep me" and (root / "a_file").read_text() == "keep me too"
    # session 31: a folder that takes no new files was a traceback once the models were loaded
    _one_line_exit_2(capsys, [*export, "--out", "/proc/ptv2-bundle"], "'/proc' takes no new files")
    # regression (session 35): an output inside a model folder or a bundle was written there, and the artifact
    # then failed its own manifest check ("files ['bundle/...'] are not what a model folder holds")
    train = ["train", "--params", str(params), "--task", "pair", "--out"]
    for argv, needle in (([*export, "--out", str(trained / "bundle")], f"is inside a model folder ({trained})"),
                         ([*train, str(bundle / "runs/x")], f"is inside a bundle ({bundle})"),
                         ([*train, str(trained)], "is a model folder"), ([*train, str(bundle)], "is a bundle")):
        _one_line_exit_2(capsys, argv, f"{needle}: files written there break its manifest check")
    assert not (trained / "bundle").exists() and not (bundle / "runs").exists() and not (trained / "model").exists()
    assert main(["evaluate", "--params", str(params), "--model", str(trained), "--task", "pair"]) == 0  # intact
    assert main([*export, "--out", str(bundle)]) == 0  # an earlier export is replaced, as before
    capsys.readouterr()
    # the same task in two models: the later replaced the earlier, silently (session 24)
    _one_line_exit_2(capsys, [*export, "--model", str(trained), "--out", str(root / "b2")],
                     "task 'pair' is in two models")
    own = root / "own"
    (own / "model").mkdir(parents=True)  # a run folder whose model/ is the user's own: refused before training
    (own / "model" / "w.bin").write_text("x")
    _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", "pair", "--out", str(own)],
                     f"{str(own / 'model')!r} exists and is not a ptv2 model folder")
    assert (own / "model" / "w.bin").read_text() == "x" and not (own / "metrics.json").exists()
    # regression (session 37): a folder of other files took the run's model/, checkpoint/ and metrics.json among
    # them: `--out .` in a project, `--out data`, `--out /` (as root), a folder of the user's own
    for out in (mine, root):
        _one_line_exit_2(capsys, [*train, str(out)], f"run folder {str(out)!r} holds other files (")
        assert not any((out / name).exists() for name in ("model", "checkpoint", "metrics.json"))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("argv,out,needle", [
    (["train", "--task", "pair"], "a_file/run", "a_file' is a file, not a folder"),
    (["train", "--task", "pair"], "a_file", "a_file' is a file, not a folder"),
    (["compare", "--no-track", "--tasks", "pair", "--methods", "ptv2"], "a_folder", "it is a folder"),
    (["compare", "--no-track", "--tasks", "pair", "--methods", "ptv2"], "a_file/t.md", "is a file, not a folder"),
    (["transfer", "--tasks", "pair", "--seeds", "1"], "a_folder", "it is a folder"),
    # session 25: `--out README.md` (or params.yaml, or beside the user's own .json) was replaced by the table
    (["compare", "--no-track", "--tasks", "pair", "--methods", "ptv2"], "notes.md", "notes.md' exists and is not "
                                                                                  "part of an earlier ptv2 table"),
    (["compare", "--no-track", "--tasks", "pair", "--methods", "ptv2"], "a_file", "pass a path ending in .md"),
    (["transfer", "--tasks", "pair", "--seeds", "1"], "params.yaml", "pass a path ending in .md"),
    (["transfer", "--tasks", "pair", "--seeds", "1"], "mine.md", "mine.json' exists and is not part of an earlier"),
    # session 31: a folder that takes no new files (/proc; another user's, a read-only mount) was a traceback,
    # for compare and transfer after every run
    (["train", "--task", "pair"], "/proc/ptv2-run", "'/proc' takes no new files"),
    (["compare", "--no-track", "--tasks", "pair", "--methods", "ptv2"], "/proc/t.md", "'/proc' takes no new files"),
    (["transfer", "--tasks", "pair", "--seeds", "1"], "/proc/t.md", "'/proc' takes no new files"),
    # session 34: a name over the file system's 255 bytes was an OSError traceback
    (["train", "--task", "pair"], "a" * 300, "give a path whose every name has at most 255 bytes"),
    (["compare", "--no-track", "--tasks", "pair", "--methods", "ptv2"], "a" * 300 + ".md", "at most 255 bytes"),
])
def test_an_output_path_that_cannot_be_written_is_one_line_before_any_run(params, root, capsys, argv, out, needle):
    """Regression (session 24): a file where the output's folder goes was mkdir's FileExistsError traceback;
    `compare --out <a folder>` an IsADirectoryError after every run had finished."""
    (root / "a_file").write_text("keep")
    (root / "a_folder").mkdir(exist_ok=True)
    (root / "notes.md").write_text("# my notes\n")
    (root / "mine.json").write_text("{}")
    kept = {p: p.read_bytes() for p in (root / "notes.md", root / "mine.json", params)}
    _one_line_exit_2(capsys, [argv[0], "--params", str(params), *argv[1:], "--out", str(root / out),
                              *(["--work", str(root / "w")] if argv[0] in ("compare", "transfer") else [])], needle)
    assert (root / "a_file").read_text() == "keep" and not (root / "w").exists()
    assert all(p.read_bytes() == b for p, b in kept.items())


# ---- racing writers, reruns ---------------------------------------------------------------------------------

def test_a_second_writer_is_refused_and_the_first_finishes(params, root, tiny_dir):
    """Two `ptv2 train` into one --out: the second is refused (naming the holder); the first's model survives."""
    import time

    from helpers import write_sentiment_tsv

    write_sentiment_tsv(root / "sent/train.tsv", 8000, 0)
    out = root / "shared"
    first = subprocess.Popen([sys.executable, "-m", "ptv2", "train", "--params", str(params), "--task", "sent",
                              "--out", str(out), "--set", "train.epochs.ptv2=3"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out.parent / ".shared.lock").is_file() and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None  # still training
    second = subprocess.run([sys.executable, "-m", "ptv2", "train", "--params", str(params), "--task", "sent",
                             "--out", str(out), "--set", "train.lr.ptv2=0.05"], capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 2 and "is being written by" in second.stderr and "pid" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1, second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["epochs_run"] == 3 and (out / "model/adapter.safetensors").is_file()


def test_rerunning_a_finished_early_stopped_run_is_a_no_op(params, root, capsys):
    """Regression: a finished run that stopped early trained one more epoch when its command was rerun."""
    argv = ["train", "--params", str(params), "--task", "sent", "--out", str(root / "es"),
            "--set", "train.epochs.ptv2=8", "--set", "train.patience=1", "--set", "train.lr.ptv2=0.0000001"]
    assert main(argv) == 0
    first = json.loads((root / "es/metrics.json").read_text())
    assert first["epochs_run"] < 8  # stopped early
    mtime = (root / "es/model/adapter.safetensors").stat().st_mtime
    assert main(argv) == 0
    again = json.loads((root / "es/metrics.json").read_text())
    assert again["epochs_run"] == first["epochs_run"]
    assert (root / "es/model/adapter.safetensors").stat().st_mtime == mtime
    assert not [p for p in root.glob(".es*tmp*")] and not [p for p in (root / "es").glob(".*tmp*")]


def test_a_run_stopped_midway_leaves_no_record_that_another_config_reuses(params, root, capsys, monkeypatch):
    """Regression (session 41): a run stopped midway (Ctrl-C, SIGTERM) left the folder's earlier record (another
    config's finished run) beside its own half-trained model; rerunning that other config answered "already trained
    with this config: nothing to do" and handed on the stopped run's model (here its prompt of length 8)."""
    from ptv2.training import loop

    out = root / "stopped"
    argv = ["train", "--params", str(params), "--task", "sent", "--out", str(out)]
    assert main(argv) == 0
    spec = json.loads((out / "model/adapter_config.json").read_text())

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # after step 0 saved its model, as a kill between epochs

    with monkeypatch.context() as m:
        m.setattr(loop, "_run_epoch", stopped)
        assert main(argv + ["--set", "prompt.length=8"]) == 130
    assert json.loads((out / "model/adapter_config.json").read_text()) != spec  # the stopped run's model is there
    capsys.readouterr()
    assert main(argv) == 0
    assert "nothing to do" not in capsys.readouterr().err
    assert json.loads((out / "model/adapter_config.json").read_text()) == spec


def test_sigterm_stops_a_run_as_ctrl_c_does(params, root):
    """Regression (session 41): SIGTERM (docker stop, Slurm's time limit, `timeout`) ended `ptv2 train` (and a DVC
    stage) on the spot: no word, its MLflow run left RUNNING. It now takes Ctrl-C's path: the one line, exit 130,
    nothing half-written left, and the same command resumes from the checkpoint."""
    import signal
    import time

    out = root / "termed"
    argv = [sys.executable, "-m", "ptv2", "train", "--params", str(params), "--task", "sent", "--out", str(out),
            "--set", "train.epochs.ptv2=100000"]
    def term_after(needle: str) -> str:
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                env={**os.environ, "TQDM_DISABLE": "1"})
        seen, deadline = "", time.monotonic() + 240
        while needle not in seen and time.monotonic() < deadline and proc.poll() is None:
            seen += proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        err = seen + proc.stderr.read()
        assert proc.wait(timeout=60) == 130, err[-2000:]
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("ptv2: interrupted"), err[-2000:]
        return err

    term_after("epoch 2/")  # a checkpoint is on disk
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "model"]
    assert "resumed from" in term_after("resumed from")  # the same command goes on where it stopped


_BLOCKED = """
import datetime, sys
import torch.distributed as dist
from ptv2.procenv import sigterm_as_interrupt
with sigterm_as_interrupt(grace_s=2):
    print("waiting", flush=True)
    # rank 0 of 2 waits for its peer inside torch (C++), where Python runs no signal handler
    dist.TCPStore("127.0.0.1", 0, 2, True, timeout=datetime.timedelta(seconds=120), wait_for_workers=True)
"""


def test_sigterm_stops_a_process_blocked_inside_a_library(params):
    """Regression (session 42): SIGTERM as Ctrl-C ran only between bytecodes, so `ptv2 train` as rank 0 of 2 with
    no peer (WORLD_SIZE=2 by hand, a node that never came up), blocked in torch's TCPStore, ignored `timeout` and
    `docker stop`'s SIGTERM for the store's 30 minutes. A watchdog ends it after the grace with one line, 143."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)  # the store's own timeout is 120 s
    finally:
        proc.kill()
    took, err = time.monotonic() - t0, proc.stderr.read()
    assert code == 143 and took < 30, (code, took, err[-2000:])
    assert err.strip().splitlines()[-1] == ("ptv2: stopped by SIGTERM: the process was blocked inside a library and "
                                            "did not stop within 2 s"), err[-2000:]


def test_more_processes_on_a_node_than_gpus_is_one_line(params, capsys, root, monkeypatch):
    """Regression (found on a lent 1-GPU H200): two torchrun processes with a CUDA device ended in a torchrun
    traceback (rank 1 had no GPU of its own). Now each process says why in one line, exit 2, before any work."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for device in ("cuda", "auto"):
        _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", "sent", "--set", f"train.device={device}"],
                         "2 processes on this node but 1 CUDA GPU(s)")
        assert not (root / "outputs").exists()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one process per GPU passes
    from ptv2.training.loop import check_device
    from ptv2.config import load_config

    check_device(load_config(params).train)


def test_more_data_parallel_cpu_processes_than_cores_is_one_line_before_any_starts(params, capsys, monkeypatch):
    """Regression (session 34): train.processes 64 on this 2-core machine launched 64 processes, a model copy each,
    past its 24 GB; the stage now refuses before torchrun starts any."""
    import subprocess

    from ptv2.config import load_config
    from ptv2.errors import ConfigError
    from ptv2.stages.launch import data_parallel

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"launched {a}"))
    import torch

    most = max(2, len(os.sched_getaffinity(0)))  # two always: the gloo pair
    for device in ("cpu",) + (() if torch.cuda.is_available() else ("auto",)):  # auto without CUDA: the CPU
        cfg = load_config(params, [f"train.processes={most + 1}", f"train.device={device}"])
        with pytest.raises(ConfigError, match=rf"{most + 1} data-parallel processes on this node but \d+ CPU "
                                              rf"core\(s\) to run them: set train.processes to at most {most}"):
            data_parallel(cfg, "ptv2.stages.adapt", [])


def test_outputs_get_the_mode_the_umask_gives_not_private_temp_modes(params, trained, root, capsys):
    """Regression (session 25): outputs renamed into place kept mkstemp / mkdtemp's 0600 / 0700, so a bundle's
    folder and manifest (and a model's weights) were unreadable to a server running as another user."""
    import stat

    from ptv2.files import atomic_write_text

    old = os.umask(0o022)
    try:
        out = root / "b_modes"
        assert main(["export", "--params", str(params), "--model", str(trained), "--out", str(out),
                     "--set", "export.int8=false", "--set", "serving.int8=false"]) == 0
        capsys.readouterr()
        for p in [out, *out.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
        os.umask(0o077)  # a private umask stays private
        atomic_write_text(root / "private.txt", "x")
        assert stat.S_IMODE((root / "private.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_outputs_are_written_in_utf8_whatever_the_locale(root):
    """Regression (session 41): atomic_write_text wrote in the locale's encoding, so under an ASCII locale (or a
    cp1252 one) the report stage's '—' for a missing cell, and the experiments' '±' and '→', ended in a
    UnicodeEncodeError traceback, and files moved between hosts read otherwise."""
    import subprocess
    import sys

    out = root / "report.md"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    code = ("import locale, sys; from ptv2.files import atomic_write_text; "
            "assert locale.getpreferredencoding(False).lower() in ('ascii', 'ansi_x3.4-1968'), locale.getpreferredencoding(False); "
            "atomic_write_text(sys.argv[1], '\\u2014 \\u00b1 \\u2192')")  # escaped: the command line is ASCII too
    proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes().decode("utf-8") == "— ± →"


def test_an_output_that_is_a_device_or_pipe_is_refused_and_left_as_it_is(tmp_path):
    """Regression (session 42): the atomic writers renamed their temp file onto the output path, so `--out
    /dev/stdout` (a bench table, a metrics file) replaced the link itself with a file of ours (as root, /dev/stdout
    became a regular file in /dev); a link to /dev/null or a named pipe likewise. Refused in one line now."""
    from ptv2.errors import ArtifactError
    from ptv2.files import atomic_write_text

    link, pipe = tmp_path / "out.md", tmp_path / "pipe.md"
    link.symlink_to(os.devnull)
    os.mkfifo(pipe)
    for path in (link, pipe):
        with pytest.raises(ArtifactError, match="it is a device or pipe, not a file; pass a file path"):
            atomic_write_text(path, "x")
    assert link.is_symlink() and os.readlink(link) == os.devnull and pipe.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.md", "pipe.md"]  # no temp file left


@pytest.fixture()
def small_disk(tmp_path):
    """A 2 MiB tmpfs, filled up to 16 KiB short of full (root with CAP_SYS_ADMIN only: skipped elsewhere)."""
    where = tmp_path / "small"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (where / "fill").write_bytes(b"\0" * (2048 - 16) * 1024)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_is_one_line_for_training_and_export(params, root, capsys, small_disk):
    """Regression (session 41): on a full disk `ptv2 train` ended in safetensors' 'I/O error: No space left on
    device (os error 28)' traceback (a checkpoint), `ptv2 export` in onnx's 'DecodeError: Wire format was corrupt'
    (a truncated file read back); each is one line naming the folder now, nothing half-written left."""
    _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", "pair", "--out", str(small_disk / "run")],
                     f"No space left on device ({small_disk}")
    assert main(["train", "--params", str(params), "--task", "pair", "--out", str(root / "run")]) == 0
    capsys.readouterr()
    _one_line_exit_2(capsys, ["export", "--params", str(params), "--model", str(root / "run" / "model"),
                              "--out", str(small_disk / "bundle")], f"No space left on device ({small_disk}")
    assert not [p for p in small_disk.iterdir() if p.name.startswith(".") and "tmp" in p.name]


def test_a_full_temporary_folder_is_one_line_naming_it(params, root, capsys, small_disk, monkeypatch):
    """Regression (session 42): onnxruntime's quantizer and tempfile write in the temporary folder, not beside the
    output: with TMPDIR full on another file system `ptv2 export` said "No space left on device: free space there"
    (where?) or, on the real backbone, onnx's "DecodeError: Wire format was corrupt"; now one line naming TMPDIR."""
    import tempfile

    assert main(["train", "--params", str(params), "--task", "pair", "--out", str(root / "run")]) == 0
    capsys.readouterr()
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk))  # what TMPDIR=<small_disk> gives a new process
    _one_line_exit_2(capsys, ["export", "--params", str(params), "--model", str(root / "run" / "model"),
                              "--out", str(root / "bundle")],
                     f"No space left on device ({small_disk}, the temporary folder): free space there, or point "
                     f"TMPDIR at a folder with room")
    assert not (root / "bundle").exists()


def test_a_run_out_of_memory_is_one_line_naming_the_knobs(params, root, capsys, monkeypatch):
    """Regression (session 43): a batch or max_length too large for the host (or a job under `ulimit -v`, as batch
    schedulers set) ended `ptv2 train` in torch's "RuntimeError: [enforce fail at alloc_cpu.cpp:127] ...
    DefaultCPUAllocator: can't allocate memory" traceback from the backbone's embeddings; now one line, exit 2."""
    import torch
    from transformers.models.bert import modeling_bert

    def huge(self, *args, **kwargs):  # the allocator's own failure, where the real one happened
        return torch.empty(2**62, dtype=torch.uint8)

    monkeypatch.setattr(modeling_bert.BertEmbeddings, "forward", huge)
    err = _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", "pair", "--out", str(root / "run")],
                           "out of memory: an allocation of 4398046511104.0 MiB failed; lower train.batch_size")
    assert "backbone.max_length" in err and not (root / "run" / "model").exists()


def test_python_oo_is_one_line_naming_pythonoptimize(params, root):
    """Regression (session 43): under PYTHONOPTIMIZE=2 (-OO: docstrings stripped, which transformers builds its model
    classes from) `ptv2 train` printed transformers' "[ERROR] ... not documented" lines and "backbone ... cannot be
    loaded (No `Args` or `Parameters` section ...); set backbone.name to a local model folder", a wrong fix."""
    r = subprocess.run([sys.executable, "-OO", "-m", "ptv2", "train", "--params", str(params), "--task", "pair",
                        "--out", str(root / "run")], cwd=root, capture_output=True, text=True, timeout=300)
    lines = [x for x in r.stderr.replace("\r", "\n").splitlines() if x.strip() and "it/s]" not in x]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert "cannot be loaded under PYTHONOPTIMIZE=2 (python -OO)" in lines[0] and "unset PYTHONOPTIMIZE" in lines[0]


def test_a_backbone_folder_with_another_models_tokenizer_is_one_line(root, tiny_dir, capsys):
    """Regression (session 43): a backbone folder whose tokenizer files came from another model (more tokens than
    the model's embedding rows) ended `ptv2 train` in "IndexError: index out of range in self" from the
    embeddings' first forward; now one line naming both sizes."""
    from transformers import BertTokenizerFast

    mixed = root / "mixed"
    shutil.copytree(tiny_dir, mixed)
    vocab = json.loads((tiny_dir / "tokenizer.json").read_text())["model"]["vocab"]
    more = {**vocab, **{f"extra{i}": len(vocab) + i for i in range(50)}}
    BertTokenizerFast(vocab=more, do_lower_case=True).save_pretrained(mixed)
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump(tiny_params(root, mixed, epochs={"ptv2": 1, "finetune": 1})))
    _one_line_exit_2(capsys, ["train", "--params", str(p), "--task", "pair", "--out", str(root / "run")],
                     f"backbone {str(mixed)!r}: its tokenizer has {len(more)} tokens, more than the model's "
                     f"{len(vocab)} embeddings (a tokenizer from another model?)")


_LFS = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 90867\n"


def test_a_data_file_that_is_a_git_lfs_pointer_is_one_line(params, root, capsys):
    """Regression (session 43): a data repository cloned without git-lfs holds ~130-byte pointers where its files
    should be; ptv2 read the pointer's "version https://git-lfs..." line as a header and said "fix the template in
    params.yaml" (the wrong fix). Now one line naming the pointer and `git lfs pull`."""
    (root / "sent" / "train.tsv").write_text(_LFS)
    _one_line_exit_2(capsys, ["train", "--params", str(params), "--task", "sent", "--out", str(root / "run")],
                     f"{root / 'sent' / 'train.tsv'} is a Git LFS pointer, not the file itself (cloned without "
                     f"git-lfs): fetch it with `git lfs install && git lfs pull` in its repository")


def _config_change(**change):
    def apply(folder):
        c = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**c, **change}))
    return apply


@pytest.mark.parametrize("damage, needle", [
    (_config_change(num_hidden_layers=3), "16 weights its config.json asks for are not in its weights file (they "
                                          "would start random), e.g. encoder.layer.2."),
    (_config_change(num_hidden_layers=1), "16 weights its config.json does not ask for are in its weights file (the "
                                          "model would be cut short), e.g. encoder.layer.1."),
    (_config_change(hidden_size=64), "cannot be loaded (its weights have other sizes than its config.json gives)"),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:3000]),
     "cannot be loaded (its weights file is damaged: Error while deserializing header"),
    (lambda f: (f / "tokenizer.json").unlink(), "its tokenizer holds only its 5 special tokens (every word would read "
                                                 "[UNK]): put the model's tokenizer files"),
    (lambda f: (f / "model.safetensors").write_text(_LFS), "model.safetensors is a Git LFS pointer, not the file itself "
                                                           "(cloned without git-lfs): fetch it with `git lfs install"),
], ids=["more-layers", "fewer-layers", "other-sizes", "cut-weights", "no-tokenizer", "lfs-pointer"])
def test_a_backbone_folder_whose_files_disagree_is_one_line(root, tiny_dir, capsys, damage, needle):
    """Regression (session 43): a config.json that asks for more layers than the weights hold, or fewer, trained
    silently (the missing layers random, a frozen backbone of noise; or the model cut short), a backbone without
    its tokenizer files trained on [UNK] alone (transformers builds a tokenizer of special tokens), and weights of
    other sizes, cut short or a Git LFS pointer (a hub repository cloned without git-lfs) were tracebacks
    (RuntimeError, SafetensorError); each is one line now."""
    folder = root / "bb"
    shutil.copytree(tiny_dir, folder)
    damage(folder)
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump(tiny_params(root, folder, epochs={"ptv2": 1, "finetune": 1})))
    _one_line_exit_2(capsys, ["train", "--params", str(p), "--task", "pair", "--out", str(root / "run")], needle)
    assert not (root / "run" / "model").exists()


@pytest.mark.parametrize("named", ["config.json", "model.safetensors", "."])
def test_a_backbone_name_that_is_a_file_or_a_folder_without_a_model_is_one_line(params, root, tiny_dir, capsys,
                                                                                 monkeypatch, named):
    """Regression (session 43): backbone.name naming the model's config.json (relative, as a user types it) ended
    `ptv2 train` in torch.load's UnpicklingError traceback (transformers reads a config file as a config, then
    unpickles it as weights); its weights file or a folder without a model were one line in transformers' words
    ("Repo id must be in the form ...", "Unrecognized model ... `model_type` key"). Each names what to pass now."""
    monkeypatch.chdir(tiny_dir.parent)
    name = f"{tiny_dir.name}/{named}" if named != "." else str(root)
    why = f"{name} is a file; backbone.name names the model's folder" if named != "." else \
        f"{root} holds no config.json"
    _one_line_exit_2(capsys, ["train", "--params", str(params), "--set", f"backbone.name={name}", "--task", "pair",
                              "--out", str(root / "run")], f"backbone {name!r} cannot be loaded ({why}")


def test_a_backbone_without_pooler_weights_is_not_pooled_by_a_random_layer(root, tiny_dir, capsys):
    """Regression (session 43): a checkpoint without pooler weights (an MLM checkpoint's, as roberta-base's) got a
    random pooler from transformers, and `backbone.pooling: pooler` trained on it silently (the frozen baseline
    too); with no pooler at all (ELECTRA) the same setting was a ValueError traceback. load_backbone drops the
    random layer; 'pooler' pooling is one line naming the fix, and mean pooling trains as before."""
    from safetensors.torch import load_file, save_file

    folder = root / "bb"
    shutil.copytree(tiny_dir, folder)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("pooler.")}, folder / "model.safetensors",
              metadata={"format": "pt"})
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump(tiny_params(root, folder, epochs={"ptv2": 1, "finetune": 1})))
    _one_line_exit_2(capsys, ["train", "--params", str(p), "--set", "backbone.pooling=pooler", "--task", "sent",
                              "--out", str(root / "pooler")],
                     "backbone.pooling = 'pooler' needs a backbone with a trained pooler layer, and this one has none")
    assert main(["train", "--params", str(p), "--set", "backbone.pooling=mean", "--task", "sent", "--out",
                 str(root / "mean")]) == 0


def test_sigterm_is_an_interrupt_only_inside_the_block():
    """The CLI also runs inside other processes (these tests): SIGTERM's handler is theirs again after it."""
    import signal
    import time

    from ptv2.procenv import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs before this ends
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("what", ["model", "bundle"])
def test_a_reader_that_leaves_early_ends_predict_quietly(params, bundle, root, what):
    """Regression (session 41): `ptv2 predict … | head -1` ended in a BrokenPipeError traceback (print, then the
    interpreter's own flush). Like Unix tools it now stops quietly: nothing on stderr but the progress, exit 141."""
    import threading

    model = root / "m/model" if what == "model" else bundle
    proc = subprocess.Popen([sys.executable, "-m", "ptv2", "predict", "--params", str(params), "--model", str(model)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    feed = threading.Thread(target=lambda: (proc.stdin.write("a\tb\n" * 4000), proc.stdin.close()))
    feed.start()
    assert json.loads(proc.stdout.readline())["line"] == 1
    proc.stdout.close()  # the reader leaves, as `head -1` does
    err = proc.stderr.read()
    feed.join()
    assert proc.wait(timeout=120) == 141, err[-2000:]
    assert "Traceback" not in err and "Error" not in err, err[-2000:]


def test_a_broken_pipe_that_is_not_stdouts_stays_an_error(params, monkeypatch):
    """An EPIPE from a socket (a tracking server that hung up) is not the reader leaving: it is not hidden."""
    import ptv2.cli.app as app

    def hung_up(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(app, "cmd_registry", hung_up)
    with pytest.raises(BrokenPipeError):
        main(["registry", "--params", str(params)])


@pytest.mark.parametrize("entry", ["cli", "stage"])
def test_a_compile_cache_folder_torch_cannot_create_is_one_line(params, tmp_path, entry):
    """Regression (session 45): TORCHINDUCTOR_CACHE_DIR naming a folder that cannot be created (below a file, under
    /proc) ended every command that loads a backbone, and every DVC stage, in torch's FileNotFoundError /
    NotADirectoryError traceback at import (transformers imports torch._dynamo, which makes the folder)."""
    (tmp_path / "a-file").write_text("x")
    where = tmp_path / "a-file" / "cache"
    cmd = ([sys.executable, "-m", "ptv2", "train", "--params", str(params), "--task", "sent", "--out",
            str(tmp_path / "run")] if entry == "cli" else
           [sys.executable, "-m", "ptv2.stages.baseline", "--task", "sent", "--metrics", str(tmp_path / "m.json")])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=params.parent,
                       env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(where)})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (f"ptv2: error: TORCHINDUCTOR_CACHE_DIR = '{where}' cannot be created "
                                                 f"(Not a directory): point it at a folder this user may write, or "
                                                 f"unset it"), r.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command,fn", [("predict", "cmd_predict"), ("registry", "cmd_registry"),
                                        ("train", "cmd_train")])
def test_ctrl_c_promises_a_resume_only_where_there_is_one(params, monkeypatch, capsys, command, fn):
    """Regression (session 45): Ctrl-C in `ptv2 predict` (reading stdin, labelling a file), `evaluate` or
    `registry` said "finished epochs are checkpointed, rerun the same command to resume": they have no epochs."""
    import ptv2.cli.app as app

    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(app, fn, stopped)
    argv = [command, "--params", str(params)] + (["--model", "m"] if command == "predict" else [])
    assert main(argv) == 130
    resumes = app.RESUME in capsys.readouterr().err
    assert resumes == (command == "train"), command
    commands = set(app.parser()._subparsers._group_actions[0].choices)
    assert app.TRAINING <= commands and {"predict", "evaluate", "registry", "serve", "export"} <= commands - app.TRAINING


@pytest.mark.parametrize("redirect,needle", [
    ("<&-", "no texts to label: stdin is closed; pass --text TEXT"),  # was AttributeError: 'NoneType' … 'isatty'
    (">&-", "stdout is closed, so `ptv2 predict`'s answers would be lost"),  # was exit 0, every answer dropped
])
def test_predict_with_stdin_or_stdout_closed_is_one_line(params, trained, redirect, needle):
    """Regression (session 41): started with stdin closed (`<&-`, some supervisors) `ptv2 predict` was an
    AttributeError traceback; with stdout closed it printed its answers nowhere and exited 0."""
    import shlex

    cmd = shlex.join([sys.executable, "-m", "ptv2", "predict", "--params", str(params), "--model", str(trained)])
    feed = "" if redirect == "<&-" else "echo 'a\tb' | "
    r = subprocess.run(["bash", "-c", f"{feed}{cmd} {redirect}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith(f"ptv2: error: {needle}"), r.stderr[-2000:]


def test_answers_written_to_a_full_disk_are_one_line(params, trained):
    """Regression (session 45): `ptv2 predict > answers.jsonl` on a full disk failed only at the interpreter's last
    flush: "Exception ignored in: <_io.TextIOWrapper name='<stdout>'> OSError: [Errno 28]", exit 120 (Python's
    default buffering; /dev/full stands in for the full disk). Now one line naming standard output, exit 2."""
    import shlex

    cmd = shlex.join([sys.executable, "-m", "ptv2", "predict", "--params", str(params), "--model", str(trained),
                      "--text", "a", "--text-pair", "b"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as a user's shell has it
    r = subprocess.run(["bash", "-c", f"{cmd} > /dev/full"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == ("ptv2: error: writing standard output (/dev/full) failed: No space "
                                                 "left on device; free space there, or send the output elsewhere")


def test_predict_refuses_a_stdin_line_beyond_its_bound(params, trained, tmp_path):
    """Regression (session 45): `ptv2 predict < /dev/zero` (or a binary file without a line break) read one endless
    line until the host ran out of memory (11.8 GB in 40 s); a 50 MB line took 100 s and 7.4 GB for one answer.
    A stdin line is at most MAX_LINE_CHARS characters (a line break, \\r\\n too, not counted) now."""
    import io
    import shlex

    from ptv2.cli.inputs import MAX_LINE_CHARS, read_inputs

    cmd = shlex.join([sys.executable, "-m", "ptv2", "predict", "--params", str(params), "--model", str(trained)])
    long = tmp_path / "long.tsv"
    long.write_text("a\tb\n" + "x" * (MAX_LINE_CHARS + 1) + "\tb\n")
    for feed, n in (("/dev/zero", 1), (str(long), 2)):
        r = subprocess.run(["bash", "-c", f"{cmd} < {shlex.quote(feed)}"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert r.stderr.strip().splitlines()[-1].startswith(
            f"ptv2: error: line {n} on stdin is over {MAX_LINE_CHARS:,} characters"), r.stderr[-2000:]
    got = read_inputs(None, None, io.StringIO("y" * MAX_LINE_CHARS + "\r\nz\n"))  # at the bound: read whole
    assert got.numbers == (1, 2) and len(got.texts[0]) == MAX_LINE_CHARS and got.texts[1] == "z"


def _without_root_powers(cmd: list[str], tmp_path) -> list[str]:
    """``cmd`` run so that file modes hold for it: as is for a user, under capsh without root's read-anything
    capabilities for root; skipped where neither can be had."""
    import shlex

    if os.geteuid() != 0:
        return cmd
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    drop = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c"]
    if not shutil.which("capsh") or not subprocess.run([*drop, f"! cat {shlex.quote(str(probe))}"],
                                                       capture_output=True).returncode == 0:
        pytest.skip("running as root without capsh's dropped capabilities: file modes do not apply")
    return [*drop, shlex.join(cmd)]


@pytest.mark.parametrize("what", ["data", "params"])
def test_a_file_this_user_may_not_read_is_one_line(params, root, tmp_path, what):
    """Regression (session 42): a data file or params.yaml this user may not read (another user's, mode 600) was a
    PermissionError traceback; it is one line naming the file and the fix now."""
    target = root / "sent/train.tsv" if what == "data" else params
    cmd = _without_root_powers([sys.executable, "-m", "ptv2", "train", "--params", str(params), "--task", "sent",
                                "--out", str(root / "run")], tmp_path)
    target.chmod(0)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (f"ptv2: error: Permission denied ({target}): give this user access to "
                                                 f"it (read for inputs, write for output folders), or point ptv2 at "
                                                 f"another path"), r.stderr[-2000:]
