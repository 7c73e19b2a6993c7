import re
from pathlib import Path

import pytest
import yaml

from ptv2.config import apply_override, config_from_dict, load_config, read_yaml
from ptv2.errors import ConfigError

from helpers import PROJECT, merged, repo_params

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_define_all_nine_tasks():
    cfg = load_config(ROOT / "params.yaml")
    assert set(cfg.tasks) == {"sst2", "mrpc", "cola", "stsb", "rte", "cb", "copa", "wsc", "conll2003"}
    assert Path(cfg.data_root).is_absolute()
    types = {t.type for t in cfg.tasks.values()}
    assert types == {"classification", "pair_classification", "regression", "multiple_choice", "token_classification"}


def test_unknown_key_is_rejected_with_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epochz'\] in train.*allowed keys"):
        config_from_dict(merged({"train": {"epochz": 3}}))


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"train.batch_size = 'big' has the wrong type"):
        config_from_dict(merged({"train": {"batch_size": "big"}}))
    # an unquoted {field} on the command line is a YAML mapping: the line says to quote it (session 24)
    with pytest.raises(ConfigError, match=r"text_a = \{'s': None\} has the wrong type: expected str \(YAML read"):
        load_config(PROJECT / "params.yaml", ["tasks.sst2.text_a={s}"])
    # session 45: `--set tracking.registry_prefix=` (meaning an empty prefix) said only "= None has the wrong type"
    with pytest.raises(ConfigError, match=r"^tracking.registry_prefix = None has the wrong type: expected str \(an empty "
                                          r"value is YAML's null: give a value; an empty string is written ''\)$"):
        load_config(PROJECT / "params.yaml", ["tracking.registry_prefix="])
    with pytest.raises(ConfigError, match=r"^train.batch_size = None has the wrong type: expected int \(an empty value "
                                          r"is YAML's null: give a value\)$"):
        load_config(PROJECT / "params.yaml", ["train.batch_size="])


@pytest.mark.parametrize("assignment,needle", [
    ("tasks.stsb.labels=[a, b]", "labels = ['a', 'b'] is not allowed: expected nothing for a regression task"),
    ("tasks.copa.labels=[x, y]", "labels = ['x', 'y'] is not allowed: expected nothing for a multiple_choice task"),
    ("tasks.cb.choices=['{premise}', '{hypothesis}']", "choices = ['{premise}', '{hypothesis}'] is not allowed"),
    ("tasks.conll2003.text_a='{tokens}'", "text_a = '{tokens}' is not allowed: expected nothing for a "
                                          "token_classification task in format conll (it would be ignored)"),
    ("tasks.copa.text_b='{choice1}'", "text_b = '{choice1}' is not allowed"),
    ("tasks.sst2.columns=[a, b]", "expected nothing for a classification task in format tsv with a header"),
    ("tasks.cb.columns=[a, b]", "expected nothing for a pair_classification task in format jsonl (it would"),
    ("tasks.cb.hub_name=super_glue", "hub_name = 'super_glue' is not allowed")])
def test_a_key_the_task_type_would_ignore_is_refused(assignment, needle):
    # regression (session 34): a regression task's labels were taken silently and recorded in its model's spec;
    # a token task's text_a, a TSV task's hub_name, columns under a header line went unread
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(ROOT / "params.yaml", [assignment])


def test_impossible_value_names_key_and_allowed():
    with pytest.raises(ConfigError, match=r"prompt.length = -1 is not allowed"):
        config_from_dict(merged({"prompt": {"length": -1}}))
    with pytest.raises(ConfigError, match=r"pooling = 'max' is not allowed: expected one of \['cls', 'mean', 'pooler'\]"):
        config_from_dict(merged({"backbone": {"pooling": "max"}}))


@pytest.mark.parametrize("override, message", [
    ({"seed": -1}, r"seed = -1 is not allowed"),  # numpy refused it with a traceback (session 13)
    ({"seed": 2**32}, r"seed = 4294967296 is not allowed"),
    ({"compare": {"seeds": [1, -3]}}, r"seeds = -3 is not allowed"),
    ({"train": {"num_threads": -1}}, r"num_threads = -1 is not allowed"),
    # a test that cannot reach its level: no trained epoch could replace step 0, no model could be promoted
    ({"train": {"select_alpha": 0.05, "select_samples": 10}}, r"train.select_samples = 10 is not allowed: expected "
                                                              r"at least 19 swaps"),
    ({"tracking": {"promote_alpha": 0.001, "permutation_samples": 500}},
     r"tracking.permutation_samples = 500 is not allowed: expected at least 1000 swaps: with fewer, no p-value falls "
     r"below promote_alpha = 0.001 and the gate could never promote a model"),
    ({"train": {"weight_decay": -0.1}}, r"weight_decay = -0.1 is not allowed"),
    ({"train": {"head_dropout": 1.0}}, r"head_dropout = 1.0 is not allowed"),
    ({"train": {"val_max": 0}}, r"val_max = 0 is not allowed"),
    ({"tasks": {"cb": {**repo_params()["tasks"]["cb"], "max_train_examples": -5}}},
     r"max_train_examples = -5 is not allowed"),
    # session 28: taken silently (peft reads a negative dropout as none; adapt ran no epoch)
    ({"prompt": {"lora_dropout": -1.0}}, r"prompt.lora_dropout = -1.0 is not allowed: expected a float in \[0, 1\)"),
    ({"prompt": {"lora_alpha": -16}}, r"prompt.lora_alpha = -16 is not allowed: expected an integer > 0"),
    ({"adapt": {"epochs": -1}}, r"adapt.epochs = -1 is not allowed: expected an integer >= 0"),
    # session 38: a method-keyed rate or epoch count under a misspelt method was never read; a task's 0 epochs
    # trained none (its step 0 reported as the trained model)
    ({"train": {"epochs": {"lroa": 3}}}, r"train.epochs.lroa = 3 is not allowed: expected a method's name as its key"),
    ({"train": {"lr": {"Ptv2": 0.01}}}, r"train.lr.Ptv2 = 0.01 is not allowed: expected a method's name as its key"),
    ({"tasks": {"cb": {**repo_params()["tasks"]["cb"], "epochs": {"ptv_2": 5}}}}, r"tasks.cb.epochs.ptv_2 = 5 is not"),
    ({"tasks": {"cb": {**repo_params()["tasks"]["cb"], "epochs": {"ptv2": 0}}}},
     r"tasks.cb.epochs.ptv2 = 0 is not allowed: expected an integer >= 1"),
    ({"pretrain": {"weights": {"wsc": 2.0}}}, r"pretrain.weights = 'wsc' is not allowed: expected a task of pretrain"),
    # session 38: an empty list passed the export's parity gate with no case checked
    ({"export": {"parity_batch_sizes": []}}, r"export.parity_batch_sizes = \[\] is not allowed: expected a non-empty"),
    ({"export": {"parity_batch_sizes": [8, 0]}}, r"export.parity_batch_sizes = \[8, 0\] is not allowed"),
    ({"export": {"parity_lengths": []}}, r"export.parity_lengths = \[\] is not allowed"),
    ({"export": {"parity_lengths": [40, -1]}}, r"export.parity_lengths = \[40, -1\] is not allowed"),
    # session 38: export.frozen_dir = export.out_dir passed DVC; the trained bundle, written last, was registered
    # as the frozen baseline too
    ({"export": {"frozen_dir": "./outputs/bundle/"}}, r"export.frozen_dir = './outputs/bundle/' is not allowed: "
                                                       r"expected a folder apart from export.out_dir"),
    ({"export": {"checks_dir": "outputs/bundle/checks"}}, r"export.checks_dir = .* apart from export.out_dir"),
    ({"pretrain": {"out_dir": "outputs"}}, r"adapt.out_dir = 'outputs/adapt' .* apart from pretrain.out_dir"),
    ({"adapt": {"baseline_dir": "."}}, r"adapt.baseline_dir = '.' is not allowed: expected a folder of its own"),
    # session 44: `dvc exp run -S train.epochs=1` (epochs are per method) said only "must be a mapping, got 1"
    ({"train": {"epochs": 1}}, r"^train.epochs must be a mapping, got 1: set one of its keys \(e.g. "
                               r"train.epochs.<name>=1\), or write it as a mapping in params.yaml$"),
    ({"export": 3}, r"^export must be a mapping, got 3: set one of its keys \(e.g. export.out_dir=3\)"),
    # session 45: a metric named twice was taken (labels named twice were refused)
    ({"tasks": {"cb": {**repo_params()["tasks"]["cb"], "metrics": ["accuracy", "accuracy"]}}},
     r"tasks.cb.metrics = \['accuracy', 'accuracy'\] is not allowed: expected each metric once"),
    # session 45: a section or task left empty (`backbone:` alone, `--set tasks.cb=null`) got the example
    # "e.g. backbone.name=None"
    ({"backbone": None}, r"^backbone is empty \(null\): write its keys under it in params.yaml \(e.g. backbone.name\), "
                         r"or set them with --set backbone.name=VALUE$"),
    ({"tasks": {"cb": None}}, r"^tasks.cb is empty \(null\): .*--set tasks.cb.type=VALUE$"),
])
def test_values_the_training_would_crash_on_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(merged(override))


def test_the_largest_seed_numpy_takes_loads():
    config_from_dict(merged({"seed": 2**32 - 1}))


def test_method_needs_a_learning_rate():
    with pytest.raises(ConfigError, match="train.lr"):
        config_from_dict(merged({"train": {"method": "finetune", "lr": {"ptv2": 0.01}}}))


def test_task_spec_validation():
    with pytest.raises(ConfigError, match="labels"):
        config_from_dict(merged({"tasks": {"x": {"type": "classification", "format": "tsv", "files": {"train": "a"},
                                          "text_a": "{s}", "metrics": ["accuracy"]}}}))
    with pytest.raises(ConfigError, match="metrics"):
        config_from_dict(merged({"tasks": {"x": {"type": "regression", "format": "tsv", "files": {"train": "a"},
                                          "text_a": "{s}", "metrics": ["bleu"]}}}))


@pytest.mark.parametrize("key, path", [("files", "/elsewhere/train.tsv"), ("files", "../train.tsv"),
                                       ("files", "SST-2/../../train.tsv"), ("files", "~/train.tsv"),
                                       ("label_files", "/elsewhere/train.gold.txt")])
def test_task_files_must_lie_under_data_root_which_dvc_tracks(key, path):
    """Regression (session 43): a task file outside data_root (an absolute path, or one climbing out with '..')
    trained, but DVC tracks data_root only (the prepare stage's dependency): after the file changed, `dvc repro`
    said "nothing (up to date)" and the old model stayed served. Refused now, naming the fix."""
    task = {"type": "classification", "format": "tsv", "files": {"train": "x/train.tsv"}, "text_a": "{s}",
            "labels": ["0", "1"], "metrics": ["accuracy"]}
    if key == "label_files":
        task["label_files"] = {"train": path}
    else:
        task["files"] = {"train": path}
    with pytest.raises(ConfigError, match=rf"tasks\.x\.{key}\.train = {re.escape(repr(path))} is not allowed: "
                                          r"expected a path under data_root \(DVC tracks data_root only"):
        config_from_dict(merged({"tasks": {"x": task}}))
    for inside in ("x/train.tsv", "x/../x/train.tsv"):  # a '..' that stays under data_root is fine
        config_from_dict(merged({"tasks": {"x": {**task, "files": {"train": inside}, "label_files": {}}}}))


def test_overrides_and_env_data_root(tmp_path, monkeypatch):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(merged({"data_root": "data", "train": {"epochs": {"ptv2": 2}}})))
    cfg = load_config(p, ["train.epochs.ptv2=5", "prompt.reparam=true"])
    assert cfg.train.epochs["ptv2"] == 5 and cfg.prompt.reparam is True
    assert cfg.data_root == str((tmp_path / "data").resolve())  # relative to the params file
    monkeypatch.setenv("PTV2_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert load_config(p).data_root == str(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(p, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_data_root_with_a_tilde_is_one_line(tmp_path, monkeypatch):
    """Regression (session 27): `data_root: ~/data` read '<params folder>/~/data' ("data file … not found"), and
    DVC's `${data_root}` dependency would take it as a folder named '~' too; refused, naming the expanded path."""
    from ptv2.config import file_data_root

    monkeypatch.delenv("PTV2_DATA_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(merged({"data_root": "~/data"})))
    for load in (load_config, file_data_root):
        with pytest.raises(ConfigError, match=rf"data_root = '~/data' starts with '~'.*absolute path \('{tmp_path}/data'\)"):
            load(p)
    monkeypatch.setenv("PTV2_DATA_ROOT", "~nobody_here/x")
    with pytest.raises(ConfigError, match=r"^\$PTV2_DATA_ROOT = '~nobody_here/x' starts with '~'.*write the absolute path or"):
        load_config(tmp_path / "params.yaml", ["data_root=data"])


def test_a_yaml_alias_bomb_is_one_line_before_it_is_expanded(tmp_path):
    """Regression (session 27): nine nested aliases of nine in params.yaml ("billion laughs") read in 0.2 s, then
    `ptv2 train` spent 39 s and 4 GB to a MemoryError traceback printing the value; a self-containing alias
    recursed. Small aliases stay allowed."""
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    base = yaml.safe_dump(merged({}))
    for value, needle in ((f"[{', '.join(levels)}]", r"expand to 490,329,387 values, over 100,000"),
                          ("&x [1, *x]", "a YAML alias refers to a value that contains it"),
                          ("[" * 20000 + "]" * 20000, "nested too deeply to read")):
        p = tmp_path / "params.yaml"
        p.write_text(base + f"bomb: {value}\n")
        with pytest.raises(ConfigError, match=rf"^{p}: .*{needle}"):
            load_config(p)
    p.write_text(base)
    with pytest.raises(ConfigError, match=r"^override 'seed=.*expand to"):
        load_config(tmp_path / "params.yaml", [f"seed=[{', '.join(levels[:7])}]"])
    p.write_text("shared: &s {epochs: {ptv2: 3}}\n" + base.replace("train:\n", "train:\n  <<: *s\n", 1))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['shared'\]"):  # read, aliases expanded, validated
        load_config(p)
    # a merge key (`<<: *defaults`) was "YAML syntax error: could not determine a constructor for the tag merge"
    assert read_yaml("a: &s {x: 1, y: 2}\nb:\n  <<: *s\n  y: 3\n") == {"a": {"x": 1, "y": 2}, "b": {"x": 1, "y": 3}}
    with pytest.raises(ConfigError, match="duplicate key 'y'"):
        read_yaml("a: &s {x: 1}\nb:\n  <<: *s\n  y: 3\n  y: 4\n")


def test_unknown_task_lists_known():
    with pytest.raises(ConfigError, match=r"unknown task 'nope'"):
        config_from_dict(repo_params()).task("nope")


@pytest.mark.parametrize("name,ok", [("my_task-2", True), ("NLI", True), ("my task", False), ("a/b", False),
                                     ("x@y", False), ("-x", False), ("über", False), ("a.b", False),
                                     ("t" * 64, True), ("t" * 65, False)])
def test_a_task_name_must_be_a_word_dvc_and_the_registry_take(name, ok):
    # regression (session 28): "my task" was taken, then split the adapt stage's command (--task ${item}) in two;
    # (session 34) a 300-character name failed making its output folder: "File name too long", a traceback
    base = repo_params()
    params = {**base, "tasks": {**base["tasks"], name: base["tasks"]["cb"]}}
    if ok:
        assert name in config_from_dict(params).tasks
    else:
        with pytest.raises(ConfigError, match=rf"tasks = {name!r} is not allowed: expected a task name of 1 to 64 "
                                              r"letters, digits, '_' and '-'"):
            config_from_dict(params)


@pytest.mark.parametrize("key,value,ok", [
    ("registry_prefix", "ptv2-", True), ("registry_prefix", "team.ptv2_", True), ("registry_prefix", "a/b-", False),
    ("registry_prefix", "x:y-", False), ("registry_prefix", "a@b-", False), ("registry_prefix", "a b-", False),
    ("multitask_model", "ptv2-all", True), ("multitask_model", "a/b", False), ("multitask_model", "m:1", False),
    ("multitask_model", "all@prod", False), ("multitask_model", "m" * 256, True), ("multitask_model", "m" * 257, False),
    ("registry_prefix", "p" * 192, True), ("registry_prefix", "p" * 193, False)])
def test_registered_model_names_are_words_mlflow_and_models_uris_take(key, value, ok):
    """Regression (session 30): tracking.registry_prefix 'a/b-' was taken, and MLflow refused the name ('Names
    cannot contain '/' or ':'') only at the promote stage, after the training; an '@' made models:/NAME@ALIAS
    unparseable for `ptv2 serve`."""
    params = merged({"tracking": {key: value}})
    if ok:
        assert getattr(config_from_dict(params).tracking, key) == value
    else:
        with pytest.raises(ConfigError, match=rf"{key} = {re.escape(repr(value))} is not allowed: expected .*letters, "
                                              r"digits, '_', '-' and '\.'"):
            config_from_dict(params)


def test_an_experiment_name_mlflow_would_refuse_is_refused_at_load():
    """MLflow takes experiment names of at most 500 characters: a longer one failed at the first tracked stage."""
    assert config_from_dict(merged({"tracking": {"experiment": "team/ptv2: nightly"}})).tracking.experiment
    for name in ("a" * 501, "  "):
        with pytest.raises(ConfigError, match=r"tracking.experiment = .* is not allowed: expected an MLflow experiment"):
            config_from_dict(merged({"tracking": {"experiment": name}}))


@pytest.mark.parametrize("task,metrics,message", [
    ("cb", ["accuracy", "f1"], r"tasks.cb.metrics = 'f1' is not allowed: expected f1_macro for 3 classes"),
    ("sst2", ["pearson"], r"tasks.sst2.metrics = 'pearson' is not allowed: expected a metric of a classification task"),
    ("stsb", ["accuracy"], r"tasks.stsb.metrics = 'accuracy' is not allowed: expected a metric of a regression task"),
    ("conll2003", ["f1"], r"expected a metric of a token_classification task: \['entity_f1'\]"),
])
def test_a_metric_the_tasks_predictions_cannot_give_is_refused(task, metrics, message):
    # regression (session 28): "f1" on a 3-class task was binary or macro by which ids a split held
    base = repo_params()
    params = {**base, "tasks": {**base["tasks"], task: {**base["tasks"][task], "metrics": metrics}}}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(params)


def test_apply_override_creates_sections():
    d: dict = {}
    apply_override(d, "a.b.c=1.5")
    assert d == {"a": {"b": {"c": 1.5}}}


def test_yes_no_labels_stay_strings(tmp_path):
    # regression: `dvc exp run -S` re-writes params.yaml with labels [no, yes] unquoted; YAML 1.1
    # turned them into booleans and every 'yes' row became an "unknown label"
    p = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text().replace("  reparam: false", "  reparam: true")
    p.write_text(text + "  t:\n    type: classification\n    format: tsv\n    files: {train: a.tsv}\n"
                 "    text_a: '{s}'\n    labels: [no, yes]\n    metrics: [accuracy]\n")
    cfg = load_config(p)
    assert cfg.tasks["t"].labels == ["no", "yes"]
    assert cfg.prompt.reparam is True
    assert load_config(p, ["prompt.reparam=false"]).prompt.reparam is False


def test_exponent_floats_are_numbers(tmp_path):
    # regression (session 24): `--set train.lr.ptv2=3e-2` was "has the wrong type: expected float" (YAML 1.1
    # reads 3e-2 as a string); in the file as well
    assert load_config(ROOT / "params.yaml", ["train.lr.ptv2=3e-2"]).train.lr["ptv2"] == 0.03
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text().replace("  temperature: 2.0", "  temperature: 2e0"))
    assert "2e0" in p.read_text() and load_config(p).pretrain.temperature == 2.0
    assert load_config(ROOT / "params.yaml", ["tasks.sst2.labels=[1e3, x]"]).tasks["sst2"].labels == ["1e3", "x"]
    with pytest.raises(ConfigError, match=r"train.lr.ptv2 = '1e-3x' has the wrong type: expected float"):
        load_config(ROOT / "params.yaml", ["train.lr.ptv2=1e-3x"])


@pytest.mark.parametrize("assignment,key", [("train.head_l2=[.inf]", r"train.head_l2\[0\] = inf"),
                                            ("train.weight_decay=.nan", "train.weight_decay = nan"),
                                            ("pretrain.temperature=1e999", "pretrain.temperature = '1e999'"),
                                            ("pretrain.weights={cb: -.inf}", "pretrain.weights.cb = -inf")])
def test_a_float_that_is_not_finite_is_refused(assignment, key):
    # regression (session 34): head_l2 [.inf] reached torch ("value cannot be converted to type float without
    # overflow", a traceback); an infinite weight decay trained NaNs in silence
    with pytest.raises(ConfigError, match=key + " is not a finite number: give a finite value"):
        load_config(ROOT / "params.yaml", [assignment])
    if "head_l2" in assignment:  # finite, but past float32: the fitted head's tensor overflowed (a traceback)
        with pytest.raises(ConfigError, match=r"head_l2 = \[1e\+300\] is not allowed: expected a non-empty list"):
            load_config(ROOT / "params.yaml", ["train.head_l2=[1e300]"])


def test_compare_section_is_validated():
    with pytest.raises(ConfigError, match=r"compare.methods = 'loar' is not allowed"):
        config_from_dict(merged({"compare": {"methods": ["loar"]}}))
    with pytest.raises(ConfigError, match=r"compare.one_seed = 'sst2'"):
        config_from_dict(merged({"compare": {"tasks": [], "one_seed": ["sst2"]}}))
    with pytest.raises(ConfigError, match=r"compare.overrides"):
        config_from_dict(merged({"compare": {"overrides": ["train.epochs"]}}))
    with pytest.raises(ConfigError, match=r"compare.tasks = 'nope'"):
        config_from_dict(merged({"compare": {"tasks": ["nope"], "one_seed": []}}))


def test_comparison_budget_applies_to_comparison_runs_only(tmp_path):
    from ptv2.config import comparison_config

    text = (ROOT / "params.yaml").read_text()
    p = tmp_path / "params.yaml"
    p.write_text(text.replace("data_root: ../shared/data", f"data_root: {ROOT.parent / 'shared/data'}"))
    plain, cmp = load_config(p), comparison_config(p)
    assert plain.task("rte").max_train_examples is None and cmp.task("rte").max_train_examples == 800
    assert cmp.train.epochs["lora"] == 4 and cmp.task("cb").epochs["finetune"] == 6
    # the command line still wins over the budget
    assert comparison_config(p, ["tasks.rte.max_train_examples=50"]).task("rte").max_train_examples == 50
    # session 38: a bad budget line read "unknown key(s) ['bogus'] in train", sending users to params.yaml's train
    with pytest.raises(ConfigError, match=r"^compare.overrides in .*params.yaml \(the comparison's budget\) made it "
                                          r"invalid: unknown key\(s\) \['bogus'\] in train"):
        comparison_config(p, ["compare.overrides=[train.bogus=1]"])


@pytest.mark.parametrize("expr,ok", [("0 3 * * *", True), ("*/15 9-17 * * 1-5", True), ("0 0 1 * *", True),
                                     ("61 25 * * *", False), ("H 3 * * *", False), ("0 3 * * * *", False),
                                     ("bad", False), ("", False)])
def test_the_config_accepts_the_crons_prefects_schedule_accepts(expr, ok):
    """The config checks cron strings without Prefect (cronsim); they agree with Prefect's CronSchedule."""
    from prefect.client.schemas.schedules import CronSchedule

    from ptv2.config.checks import _valid_cron

    assert _valid_cron(expr) is ok
    if ok:
        CronSchedule(cron=expr, timezone="UTC")
    elif len(expr.split()) == 5:
        with pytest.raises(ValueError):
            CronSchedule(cron=expr, timezone="UTC")


def test_a_params_path_that_is_no_params_file_says_what_it_is(tmp_path):
    """Regression (session 30): `--params /` and `--params /dev/null` said "not found"; another YAML file's
    unknown keys were listed all (a password file: 879 characters on one line)."""
    with pytest.raises(ConfigError, match=r"config file '.*' is a folder \(pass --params PATH to a params.yaml\)"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"config file '/dev/null' is not a regular file"):
        load_config("/dev/null")
    other = tmp_path / "other.yaml"
    other.write_text("".join(f"key{i}: {i}\n" for i in range(20)))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['key0', .*'key15'\] and 12 more in top level") as e:
        load_config(other)  # (sorted as text)
    assert "key9" not in str(e.value)


def test_a_params_file_linked_to_a_shared_config_belongs_to_the_project_it_is_in(tmp_path, capsys, monkeypatch):
    """Regression (session 42): the project folder was the params file's resolved parent, so a params.yaml linked
    to a shared config made the config's folder the project: its relative data_root read there, and `ptv2
    registry` / the stages used an MLflow store there (one store for every project linking it)."""
    from ptv2.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PTV2_DATA_ROOT", raising=False)
    shared, project = tmp_path / "shared", tmp_path / "project"
    shared.mkdir()
    project.mkdir()
    (shared / "params.yaml").write_text((PROJECT / "params.yaml").read_text().replace(
        "data_root: ../shared/data", "data_root: data", 1))
    link = project / "params.yaml"
    link.symlink_to(shared / "params.yaml")
    assert load_config(link).data_root == str((project / "data").resolve())
    assert main(["registry", "--params", str(link)]) == 0
    assert f"no registered model in sqlite:///{project.resolve() / 'mlruns.db'}" in capsys.readouterr().out
    from ptv2.config import params_folder  # the one home of that rule (the stages' and commands' root)

    assert params_folder(link) == project.resolve()
