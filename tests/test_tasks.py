import re

import pytest

from helpers import TASKS, merged
from ptv2.config import config_from_dict
from ptv2.data.collate import Collator, encode_split, length_grouped_batches
from ptv2.data.tasks import fill, load_task
from ptv2.errors import ConfigError, DataError


def _spec(name, **changes):
    return config_from_dict(merged({"tasks": {name: {**TASKS[name], **changes}}})).tasks[name]


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_type_loads_and_batches(root, tiny, name):
    _, tok = tiny
    spec = _spec(name)
    td = load_task(name, spec, root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)
    assert len(td.split("val")) >= 1 and len(td.split("train")) >= 1
    feats = encode_split(td.split("train"), spec.type, tok, 32)
    batch = Collator(tok.pad_token_id, spec.type)(feats[:4])
    n_rows = 4 * len(spec.choices) if spec.type == "multiple_choice" else 4
    assert batch["input_ids"].shape[0] == n_rows
    assert batch["attention_mask"].sum(1).min() > 0
    if spec.type == "token_classification":
        assert batch["labels"].shape == batch["input_ids"].shape
        assert td.labels[0] == "O" and {"B-PER", "B-LOC"} <= set(td.labels)
    elif spec.type == "regression":
        assert batch["labels"].dtype.is_floating_point
    else:
        assert batch["labels"].shape == (4,)


def test_val_is_carved_from_train_disjoint_and_seeded(root):
    spec = _spec("sent")
    a = load_task("sent", spec, root, seed=0, val_fraction=0.25, val_max=1000, max_train=0)
    b = load_task("sent", spec, root, seed=0, val_fraction=0.25, val_max=1000, max_train=0)
    assert len(a.split("val")) == 50 and len(a.split("train")) == 150
    assert a.split("val")["text_a"] == b.split("val")["text_a"]
    assert len(a.split("dev")) == 40  # dev untouched: reported, never used for selection


def test_tsv_quirks_extra_columns_and_quotes(root):
    td = load_task("reg", _spec("reg"), root, seed=0, val_fraction=0.0, val_max=1000, max_train=0)
    assert len(td.split("train")) == 30  # no rows merged by quote parsing
    assert '"cat"' in td.split("train")[0]["text_a"]


def test_a_tsv_header_naming_a_column_twice_is_refused(root):
    # regression (session 38): the row kept the last of two 'sentence' columns, so the template read it silently
    path = root / "sent/train.tsv"
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    path.write_text("\n".join(["\t".join(header + [" sentence "])] + [f"{r}\tother" for r in lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"train.tsv: the header line names column\(s\) \['sentence'\] more than once"):
        load_task("sent", _spec("sent"), root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)
    path.write_text("\n".join(["\t".join(header + ["", ""])] + [f"{r}\t\t" for r in lines[1:]]) + "\n")
    assert len(load_task("sent", _spec("sent"), root, seed=0, val_fraction=0.0, val_max=1000, max_train=0)
               .split("train")) == len(lines) - 1  # empty trailing column names are no column


def test_template_with_non_word_field_names():
    # regression: MRPC's columns are '#1 String' / '#2 String'
    assert fill("{#1 String} / {t.x}", {"#1 String": "a b", "t": {"x": 1}}, "mrpc") == "a b / 1"
    with pytest.raises(DataError, match="names field 'nope'"):
        fill("{nope}", {"a": 1}, "t")
    # regression (session 24): a JSONL null or object was trained on as the text "None" / "{'x': 1}"
    for value, shown in ((None, "null"), ({"x": 1}, '{"x": 1}'), ([1], "[1]")):
        with pytest.raises(DataError, match=f"field 't.x' is {re.escape(shown)} in row"):
            fill("{t.x}", {"t": {"x": value}}, "t")


def test_a_task_with_its_own_val_file_keeps_it(root):
    # regression: carving replaced the user's files.val with rows of train, silently
    (root / "sent/val.tsv").write_text((root / "sent/dev.tsv").read_text())
    spec = _spec("sent", files={"train": "sent/train.tsv", "val": "sent/val.tsv", "dev": "sent/dev.tsv"})
    td = load_task("sent", spec, root, seed=0, val_fraction=0.25, val_max=1000, max_train=0)
    assert td.split("val")["text_a"] == td.split("dev")["text_a"]
    assert len(td.split("train")) == 200  # nothing carved out of train


@pytest.mark.parametrize("fit,held,fix", [("val", "dev", "drop files.val"), ("train", "test", "point files.train"),
                                          ("val", "test", "drop files.val"), ("train", "dev", "point files.train")])
def test_a_split_that_is_only_reported_is_never_trained_or_selected_on(root, fit, held, fix):
    """Regression (session 33): files.val naming the dev file (however the path is written) trained and selected
    the model on dev; train or val naming a reported split's file is one line."""
    files = {"train": "sent/train.tsv", fit: f"sent/../sent/{held}.tsv", held: f"sent/{held}.tsv"}
    (root / "sent/test.tsv").write_text((root / "sent/dev.tsv").read_text())
    with pytest.raises(DataError, match=rf"task 'sent': files.{fit} and files.{held} are the same file "
                                        rf"\(sent/{held}.tsv\); {held} is only reported.*{fix}"):
        load_task("sent", _spec("sent", files=files), root, seed=0, val_fraction=0.1, val_max=1000, max_train=0)


def test_a_val_file_that_is_the_train_file_is_refused(root):
    """Regression (session 35): `--set tasks.cb.files.val=CB/train.jsonl` selected on the rows it trained on: the
    frozen bar's head read val 100.00 and took the weakest L2 (1e-5, val loss 0.0006)."""
    files = {"train": "sent/train.tsv", "val": "./sent/train.tsv", "dev": "sent/dev.tsv"}
    with pytest.raises(DataError, match=r"task 'sent': files.val and files.train are the same file \(./sent/train.tsv\);"
                                        r" model selection would score the rows it trains on: drop files.val"):
        load_task("sent", _spec("sent", files=files), root, seed=0, val_fraction=0.1, val_max=1000, max_train=0)


def test_no_val_split_names_the_fix(root):
    td = load_task("sent", _spec("sent"), root, seed=0, val_fraction=0.0, val_max=1000, max_train=0)
    with pytest.raises(DataError, match=r"no split 'val'.*train.val_fraction > 0.*files.val"):
        td.split("val")


def test_unknown_split_name_in_files_is_refused():
    with pytest.raises(ConfigError, match=r"files.*splits among \['train', 'val', 'dev', 'test'\]"):
        _spec("sent", files={"train": "sent/train.tsv", "validation": "sent/dev.tsv"})


def test_unknown_label_is_a_clear_error(root):
    spec = _spec("pair", labels=["no", "maybe"])
    with pytest.raises(DataError, match=r"unknown label 'yes'.*tasks.pair.labels"):
        load_task("pair", spec, root, seed=0, val_fraction=0.1, val_max=1000, max_train=0)


@pytest.mark.parametrize("changes,message", [
    ({"labels": ["no", "no"]}, r"labels = \['no', 'no'\] is not allowed: expected distinct label values"),
    ({"text_b": "the second sentence"}, r"text_b = 'the second sentence' is not allowed: expected a template naming"),
])
def test_a_task_spec_that_would_train_on_nonsense_is_refused(changes, message):
    # regression (session 24): duplicate labels ended in "unknown label 'yes'; known labels ['no', 'no']";
    # a template naming no column trained every row on the same text, silently
    with pytest.raises(ConfigError, match=message):
        _spec("pair", **changes)
    with pytest.raises(ConfigError, match=r"choices = 'rain' is not allowed: expected a template naming a column"):
        _spec("mc", choices=["{choice1}", "rain"])


@pytest.mark.parametrize("name,bad,message", [
    ("reg", "high", r"data row 4 has label 'high', not a finite number"),
    ("reg", "nan", r"data row 4 has label 'nan', not a finite number"),
    ("mc", 2, r"data row 4 has label 2, not a choice index 0..1"),
    ("mc", "b", r"data row 4 has label 'b', not a choice index 0..1"),
])
def test_a_label_a_regression_or_choice_task_cannot_read_names_the_row(root, name, bad, message):
    # regression (session 24): float('high') / int('b') reached the user as a ValueError traceback; session 45: the
    # row is counted from 1, as the file's lines are (the fourth line was "row 3")
    import json

    path = root / _spec(name).files["train"]
    lines = path.read_text().splitlines()
    if name == "reg":
        cols = lines[3].split("\t")
        cols[4] = bad
        lines[3] = "\t".join(cols)
    else:
        lines[3] = json.dumps({**json.loads(lines[3]), "label": bad})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_task(name, _spec(name), root, seed=0, val_fraction=0.1, val_max=1000, max_train=0)


def test_missing_file_and_empty_split(root):
    with pytest.raises(DataError, match="not found"):
        load_task("sent", _spec("sent", files={"train": "nope.tsv"}), root, seed=0, val_fraction=0.1, val_max=1000, max_train=0)
    (root / "empty.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match="is empty"):
        load_task("sent", _spec("sent", files={"train": "empty.tsv"}), root, seed=0, val_fraction=0.1, val_max=1000, max_train=0)


def test_overlong_text_truncated_with_warning(root, tiny, caplog):
    import datasets

    _, tok = tiny
    ds = datasets.Dataset.from_dict({"text_a": ["good " * 100, "bad"], "text_b": ["", ""], "label": [1, 0]})
    feats = encode_split(ds, "classification", tok, 16)
    assert len(feats[0]["input_ids"]) == 16
    assert "1 of 2 texts longer than max_length=16 were truncated" in caplog.text


def test_length_grouping_covers_every_index_once():
    import torch

    lengths = [i % 17 for i in range(203)]
    batches = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(0), mega=4)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(203))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    plain = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(0), group=False)
    assert spread < sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain)


def test_a_saved_label_order_other_than_the_tasks_is_refused(root):
    td = load_task("pair", _spec("pair"), root, seed=0, val_fraction=0.1, val_max=1000, max_train=0)
    td.check_labels(list(td.labels), "model m was trained")  # the same order passes
    with pytest.raises(DataError, match=r"model m was trained with labels \['yes', 'no'\] for 'pair', params.yaml "
                                        r"now says \['no', 'yes'\]; evaluate with the labels it was trained on"):
        td.check_labels(["yes", "no"], "model m was trained")


@pytest.mark.parametrize("row,ok", [
    ({"tokens": ["john", "lives", "in", "paris"], "tags": ["B-PER", "O", "O", "B-LOC"]}, True),
    ({"words": ["john", "lives"], "ner": ["B-PER", "O"]}, False),  # other field names
    ({"tokens": ["john", "lives", "in"], "tags": ["B-PER", "O"]}, False),  # a tag short: words would shift
    ({"tokens": "john lives", "tags": ["B-PER", "O"]}, False),  # a string, not a list of words
])
def test_a_jsonl_token_task_needs_tokens_and_tags_of_one_length(root, row, ok):
    # regression (session 28): a JSONL token_classification task whose rows lack 'tokens'/'tags' was a
    # KeyError traceback from the tag set
    import json

    (root / "ner/train.jsonl").write_text("\n".join(json.dumps(row) for _ in range(10)) + "\n")
    spec = _spec("ner", format="jsonl", files={"train": "ner/train.jsonl"})
    if ok:
        td = load_task("ner", spec, root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)
        assert td.labels == ["O", "B-LOC", "B-PER"] and td.split("train")["tags"][0] == [2, 0, 0, 1]
    else:
        with pytest.raises(DataError, match=r"task 'ner', split 'train': data row 1 is .*needs 'tokens' \(a list of words\) "
                                            r"and 'tags' \(one tag per word, as many as tokens\)"):
            load_task("ner", spec, root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)


@pytest.mark.parametrize("tags,labels,message", [
    ([3, 0, 0, 5], [], r"data row 1 has tags \[3, 0, 0, 5\]; tags are names such as 'B-PER' and 'O', not ids"),
    (["1", "0", "0", "2"], [], r"tags \['0', '1', '2'\] are not entity tags"),  # ids as text: chunks of type '_'
    (["PER", "O", "O", "LOC"], [], r"tags \['LOC', 'PER'\] are not entity tags"),
    (["U-PER", "O", "O", "U-LOC"], [], r"tags \['U-LOC', 'U-PER'\] are not entity tags"),  # BILOU
    (["B-PER", "O", "O", "B-LOC"], ["O", "B-PER", "B-LOC", "PER"], r"tags \['PER'\] are not entity tags"),
    (["S-PER", "O", "O", "E-LOC"], [], None),  # IOBES, as seqeval reads it
])
def test_a_token_task_needs_entity_tags(root, tags, labels, message):
    # regression (session 38): integer tag ids (a hub export's ner_tags) were a TypeError traceback from the tag set,
    # and tags without B-/I-/E-/S- trained a model whose entity F1 and served entities chunk them into nonsense
    import json

    row = {"tokens": ["john", "lives", "in", "paris"], "tags": tags}
    (root / "ner/train.jsonl").write_text("\n".join(json.dumps(row) for _ in range(10)) + "\n")
    spec = _spec("ner", format="jsonl", files={"train": "ner/train.jsonl"}, **({"labels": labels} if labels else {}))
    if message is None:
        assert load_task("ner", spec, root, seed=0, val_fraction=0.2, val_max=1000, max_train=0).split("train")["tags"]
        return
    with pytest.raises(DataError, match=r"task 'ner'.*" + message):
        load_task("ner", spec, root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)


def test_a_classifier_whose_train_rows_hold_one_label_is_refused(root, caplog):
    # regression (session 28): train rows all 'a' trained a model that read 100.00 on val and chance on dev,
    # with no word of why
    import json

    rows = [{"premise": f"p {i}", "hypothesis": f"h {i}", "label": "no"} for i in range(20)]
    (root / "pair/train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"task 'pair': its train rows \(after carving val\) hold one label only "
                                        r"\('no' of \['no', 'yes'\]\); a classifier needs rows of two labels"):
        load_task("pair", _spec("pair"), root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)
    spec = _spec("pair", labels=["no", "yes", "maybe"], metrics=["accuracy"])  # a label no row has: a warning, and the task loads
    mixed = [{**r, "label": "yes" if i % 2 else "no"} for i, r in enumerate(rows)]
    (root / "pair/train.jsonl").write_text("\n".join(json.dumps(r) for r in mixed) + "\n")
    with caplog.at_level("WARNING"):
        td = load_task("pair", spec, root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)
    assert set(td.split("train")["label"]) == {0, 1}
    assert "no train row is labelled ['maybe']" in caplog.text


def test_a_conll_line_with_a_word_and_no_tag_names_the_line(root):
    # regression (session 28): "paris" alone on a line became a tag named "paris", silently
    path = root / "ner/train.txt"
    lines = path.read_text().splitlines()
    lines[5] = "paris"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train.txt: line 6 is 'paris', one column; a CoNLL line is the word, then its tag"):
        load_task("ner", _spec("ner"), root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)


def test_a_regression_task_whose_train_targets_never_vary_is_refused(root):
    # session 28: like a one-label classifier, it trained silently with nothing to learn
    path = root / "reg/train.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    path.write_text("\n".join("\t".join(r[:4] + ["3.0"] + r[5:]) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"task 'reg': every train row \(after carving val\) has the label 3.0; "
                                        r"a regression task needs targets that vary"):
        load_task("reg", _spec("reg"), root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)


def test_text_holding_unicode_line_separators_stays_one_row(tmp_path):
    """Regression (session 29): lines were split by str.splitlines, which also breaks at U+2028, U+0085, form feeds
    …; a valid JSONL row whose text holds one raw (json.dumps(ensure_ascii=False) writes U+2028 as is) was refused
    as "line 1 is not valid JSON", and such a TSV text became a row short of columns. Line ends: \\n, \\r\\n, \\r."""
    import json

    from ptv2.data.readers import jsonl_rows, tsv_rows

    texts = ["one\u2028two", "web\x85text", "page\x0cbreak", "file\x1cgroup\u2029para"]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"s": t, "label": "x"}, ensure_ascii=False) + "\n"
                                              for t in texts), encoding="utf-8")
    assert [r["s"] for r in jsonl_rows(tmp_path / "a.jsonl")] == texts
    for end in ("\n", "\r\n", "\r"):
        (tmp_path / "a.tsv").write_bytes("".join(f"{t}\t1{end}" for t in texts).encode())
        assert [r["s"] for r in tsv_rows(tmp_path / "a.tsv", False, ["s", "label"])] == texts, repr(end)


@pytest.mark.parametrize("bad", [{"label": None}, {}])
def test_a_row_with_a_null_or_missing_label_names_the_row_and_the_fix(root, bad):
    """Regression (session 29): a JSONL row with "label": null was "unknown label 'None' … Add it to
    tasks.pair.labels", a fix that would teach the model a label 'None'; a row without the field named no fix."""
    import json

    rows = [{"premise": f"p {i}", "hypothesis": f"h {i}", "label": "yes" if i % 2 else "no"} for i in range(20)]
    rows[7] = {"premise": "p", "hypothesis": "h", **bad}
    (root / "pair/train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"task 'pair', split 'train': data row 8 has no label \('label' is missing or null; "
                                        r"1 such row\(s\)\): label every row of the split, or set tasks.pair.label"):
        load_task("pair", _spec("pair"), root, seed=0, val_fraction=0.2, val_max=1000, max_train=0)


@pytest.mark.parametrize("name, label, values", [("pair", "meta.answer", ["yes", "no"]), ("reg", "meta.score", [1.5, 4]),
                                                 ("mc", "meta.gold", [0, 1])])
def test_a_label_in_a_nested_field_is_read_as_template_fields_are(tmp_path, name, label, values):
    """Regression (session 39): templates read nested JSON fields (`{target.span1_text}`) but `label: meta.answer`
    refused every row ("row 0 has no label ('meta.answer' is missing or null)", a fix already made). A key that
    holds the dot itself still wins."""
    import json

    rows = [{"q": {"a": f"text {i % 2}", "b": "other"}, "c1": "x", "c2": "y", "meta": {label.split(".")[1]: values[i % 2]}}
            for i in range(12)]
    rows[0] = {**rows[0], label: values[0], "meta": {label.split(".")[1]: values[1]}}  # the dotted key itself
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    templates = {"choices": ["{c1}", "{c2}"]} if name == "mc" else {"text_b": "{q.b}"}
    spec = _spec(name, format="jsonl", files={"train": "t.jsonl"}, text_a="{q.a}", label=label, **templates,
                 **({"header": True, "columns": []} if name == "reg" else {}))
    td = load_task(name, spec, tmp_path, seed=0, val_fraction=0.25, val_max=1000, max_train=0)
    got = sorted(list(td.split("train")["label"]) + list(td.split("val")["label"]))
    if name == "pair":  # labels ["no", "yes"]: ids
        want = sorted([spec.labels.index(values[i % 2]) for i in range(12)])
    else:
        want = sorted(float(values[i % 2]) if name == "reg" else values[i % 2] for i in range(12))
    assert got == want


def test_a_template_reads_a_list_item_by_its_index(tmp_path):
    """A multiple-choice row that keeps its choices in a list (HellaSwag's `endings`): `{endings.1}` is its second
    item; an index past the end names the field as any missing one does."""
    import json

    rows = [{"ctx": "the man", "endings": [f"end {i}", f"other {i}"], "label": i % 2} for i in range(8)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = _spec("mc", files={"train": "t.jsonl"}, text_a="{ctx}", choices=["{endings.0}", "{endings.1}"])
    td = load_task("mc", spec, tmp_path, seed=0, val_fraction=0.25, val_max=1000, max_train=0)
    got = {tuple(c) for c in list(td.split("train")["choices"]) + list(td.split("val")["choices"])}
    assert got == {(f"end {i}", f"other {i}") for i in range(8)}
    with pytest.raises(DataError, match="names field 'endings.2'"):
        fill("{endings.2}", rows[0], "mc")


@pytest.mark.parametrize("labels", [["false", "true"], ["False", "True"], [False, True]])
def test_json_boolean_labels_match_labels_spelled_as_the_file_or_as_python_does(tmp_path, labels):
    """Regression: a JSONL file labelled `true` / `false` (SuperGLUE's WSC, BoolQ) read as 'True' / 'False', so
    `labels: ["false", "true"]`, spelt as the file spells them, refused every row ("unknown label 'True'; known
    labels ['false', 'true']"); the Python spelling (as params.yaml's wsc) and YAML booleans still work."""
    import json

    rows = [{"a": f"text {i}", "b": "other", "label": i % 3 == 0} for i in range(12)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = _spec("pair", format="jsonl", files={"train": "t.jsonl"}, text_a="{a}", text_b="{b}", labels=labels)
    td = load_task("pair", spec, tmp_path, seed=0, val_fraction=0.25, val_max=1000, max_train=0)
    got = sorted(list(td.split("train")["label"]) + list(td.split("val")["label"]))
    assert got == sorted(int(i % 3 == 0) for i in range(12))
    rows[5]["label"] = "yes"  # a string that is no boolean is still unknown
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"unknown label 'yes'"):
        load_task("pair", spec, tmp_path, seed=0, val_fraction=0.25, val_max=1000, max_train=0)
