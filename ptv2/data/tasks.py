"""Tasks from config: TaskSpec -> normalized ``datasets.Dataset`` per split.

Normalized columns, whatever the source format:
- classification / pair_classification: ``text_a``, ``text_b`` (may be ""), ``label`` (int id)
- regression: ``text_a``, ``text_b``, ``label`` (float)
- multiple_choice: ``text_a``, ``choices`` (list[str]), ``label`` (index of the right choice)
- token_classification: ``tokens`` (list[str]), ``tags`` (list[int])

Splits: ``train``, ``dev``, ``test`` as listed in the spec, plus ``val`` carved from train
(seeded) for model selection, so the reported dev numbers are never used to pick a model.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ptv2.config import TEMPLATE_FIELD, Config, TaskSpec
from ptv2.data.readers import conll_rows, join_labels, jsonl_rows, tsv_rows
from ptv2.errors import DataError
from ptv2.spans import is_chunk_tag

log = logging.getLogger(__name__)
datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()


@dataclass
class TaskData:
    name: str
    spec: TaskSpec
    labels: list[str]  # class / tag names; [] for regression and multiple choice
    splits: dict[str, datasets.Dataset]

    def split(self, name: str) -> datasets.Dataset:
        if name not in self.splits:
            fix = ("set train.val_fraction > 0 to carve one from train, or give the task files.val" if name == "val"
                   else f"give the task files.{name}")
            raise DataError(f"task {self.name!r} has no split {name!r} (it has {sorted(self.splits)}); {fix}")
        return self.splits[name]

    def check_labels(self, labels: list[str], source: str) -> None:
        """A saved model's label order (``source``: what made it, e.g. "model M was trained") must be the task's,
        or its class ids would be scored against other labels."""
        if labels != self.labels:
            raise DataError(f"{source} with labels {labels} for {self.name!r}, params.yaml now says {self.labels}; "
                            f"evaluate with the labels it was trained on")


_MISSING = object()


def field_value(row: dict[str, Any], path: str, missing: Any = None) -> Any:
    """The value of field ``path`` in a row: the key itself where the row has it, else ``a.b`` read as nested
    fields (SuperGLUE's ``target.span1_text``) and ``a.0`` as a list's first item (HellaSwag's ``endings.0``);
    ``missing`` where there is none."""
    if path in row:
        return row[path]
    node: Any = row
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return missing
    return node


def fill(template: str, row: dict[str, Any], task: str) -> str:
    """Fill ``{field}`` / ``{a.b}`` placeholders from a row."""

    def lookup(m: re.Match[str]) -> str:
        node = field_value(row, m.group(1), _MISSING)
        if node is _MISSING:
            raise DataError(
                f"task {task!r}: template {template!r} names field {m.group(1)!r}, "
                f"but rows have fields {sorted(row)}; fix the template in params.yaml"
            )
        if node is None or isinstance(node, (dict, list)):  # str() would train on "None" or "{'x': 1}"
            raise DataError(f"task {task!r}: field {m.group(1)!r} is {json.dumps(node)[:60]} in row "
                            f"{json.dumps(row)[:120]}; template fields must be text or numbers: fix the data")
        return str(node)

    return TEMPLATE_FIELD.sub(lookup, template)


def _raw_rows(spec: TaskSpec, root: Path, split: str) -> list[dict[str, Any]]:
    path = root / spec.files[split]
    if spec.format == "tsv":
        rows = list(tsv_rows(path, spec.header, spec.columns))
    elif spec.format == "conll":
        rows = list(conll_rows(path))
    else:
        rows = list(jsonl_rows(path))
    if split in spec.label_files:  # labels kept in a file of their own (WiC's *.gold.txt)
        rows = join_labels(rows, root / spec.label_files[split], spec.label)
    return rows


def _label_id(value: Any, labels: list[str], task: str, split: str, row: int, unit: str = "data row") -> int:
    """A class (or tag) name's id in ``labels``; the error names ``row`` (counted from 0) as "data row 7"."""
    key = str(value)
    if isinstance(value, bool) and key not in labels:  # a JSON true / false: labels may spell it as the file does
        key = key.lower()
    if key not in labels:
        raise DataError(
            f"task {task!r}, split {split!r}: unknown label {key!r} ({unit} {row + 1}); known labels {labels}. "
            f"Add it to tasks.{task}.labels in params.yaml or fix the data"
        )
    return labels.index(key)


def _number(value: Any, row: int, task: str, split: str) -> float:
    """A regression target: a finite number (a word or NaN in the score column was a ValueError traceback)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise DataError(f"task {task!r}, split {split!r}: data row {row + 1} has label {value!r}, not a finite number; "
                        f"a regression task needs a numeric label column (tasks.{task}.label) or fix the data")
    return x


def _choice(value: Any, row: int, n: int, task: str, split: str) -> int:
    """A multiple-choice label: the index of the right choice, 0 .. n-1."""
    try:
        k = int(str(value).strip())
    except ValueError:
        k = -1
    if not 0 <= k < n:
        raise DataError(f"task {task!r}, split {split!r}: data row {row + 1} has label {value!r}, not a choice index "
                        f"0..{n - 1}; fix the data or tasks.{task}.label")
    return k


def _check_token_rows(rows: list[dict[str, Any]], task: str, split: str) -> None:
    """Token-classification rows hold ``tokens`` (words) and ``tags`` (one per word), as CoNLL files give them;
    a JSONL row without them was a KeyError traceback, and unequal lengths would tag the wrong words."""
    for i, r in enumerate(rows):
        tokens, tags = r.get("tokens"), r.get("tags")
        ok = (isinstance(tokens, list) and isinstance(tags, list) and len(tokens) == len(tags)
              and all(isinstance(x, str) for x in tokens))
        if not ok:
            raise DataError(f"task {task!r}, split {split!r}: data row {i + 1} is {json.dumps(r)[:120]}; a "
                            f"token_classification row needs 'tokens' (a list of words) and 'tags' (one tag per word, "
                            f"as many as tokens): rename the fields in the data or use format: conll")
        if not all(isinstance(x, str) for x in tags):  # tag ids (a hub export's ner_tags) were a TypeError traceback
            raise DataError(f"task {task!r}, split {split!r}: data row {i + 1} has tags {json.dumps(tags)[:80]}; tags are "
                            f"names such as 'B-PER' and 'O', not ids: write each tag's name in the data")


def check_tag_scheme(tags: list[str], task: str) -> None:
    """A token task's tags must be IOB / IOBES chunk tags: its metric (entity F1) and served answers are entities."""
    bad = [t for t in tags if not is_chunk_tag(t)]
    if bad:
        raise DataError(f"task {task!r}: tags {bad[:5]} are not entity tags ('O', or B-/I-/E-/S- and a type such as "
                        f"'B-PER'); a token task is scored and served as entities (entity_f1): write the tags in "
                        f"IOB or IOBES form in the data")


def normalize(rows: list[dict[str, Any]], spec: TaskSpec, labels: list[str], task: str, split: str) -> dict[str, list]:
    """Raw rows -> normalized columns (see module docstring). An error names a row as "data row N": counted from 1,
    a header line and blank lines not counted (it said "row 3" of the file's fourth line, counted from 0)."""
    t = spec.type
    if t == "token_classification":
        unit = "sentence" if spec.format == "conll" else "data row"  # a CoNLL row is a sentence of lines
        _check_token_rows(rows, task, split)
        return {
            "tokens": [r["tokens"] for r in rows],
            "tags": [[_label_id(x, labels, task, split, i, unit) for x in r["tags"]] for i, r in enumerate(rows)],
        }
    out: dict[str, list] = {"text_a": [fill(spec.text_a, r, task) for r in rows]}
    if t == "multiple_choice":
        out["choices"] = [[fill(c, r, task) for c in spec.choices] for r in rows]
    else:
        out["text_b"] = [fill(spec.text_b, r, task) if spec.text_b else "" for r in rows]
    raw = [field_value(r, spec.label) for r in rows]  # `label: meta.label` reads a nested field, as templates do
    missing = [i for i, y in enumerate(raw) if y is None]  # a null label read as the label 'None'
    if missing:
        raise DataError(f"task {task!r}, split {split!r}: data row {missing[0] + 1} has no label ({spec.label!r} is missing or "
                        f"null; {len(missing)} such row(s)): label every row of the split, or set tasks.{task}.label "
                        f"to the field that holds it")
    if t == "regression":
        out["label"] = [_number(y, i, task, split) for i, y in enumerate(raw)]
    elif t == "multiple_choice":
        out["label"] = [_choice(y, i, len(spec.choices), task, split) for i, y in enumerate(raw)]
    else:
        out["label"] = [_label_id(y, labels, task, split, i) for i, y in enumerate(raw)]
    return out


def _tag_set(rows: list[dict[str, Any]], task: str) -> list[str]:
    """All tags seen in train, 'O' first, entity tags grouped by type (B before I)."""
    _check_token_rows(rows, task, "train")
    seen = {t for r in rows for t in r["tags"]}
    rest = sorted(seen - {"O"}, key=lambda s: (s[2:], s[:1]))
    return (["O"] if "O" in seen else []) + rest


def _check_held_out(name: str, spec: TaskSpec, root: Path) -> None:
    """Training and model selection never read the file of a reported split (dev, test), and selection never
    scores the rows trained on (a files.val that is the train file read val 100.00 and chose the weakest L2)."""
    same = lambda a, b: (root / a).resolve() == (root / b).resolve()  # noqa: E731
    if "val" in spec.files and "train" in spec.files and same(spec.files["val"], spec.files["train"]):
        raise DataError(f"task {name!r}: files.val and files.train are the same file ({spec.files['val']}); model "
                        f"selection would score the rows it trains on: drop files.val (val is carved from train) or "
                        f"point it at rows kept out of training")
    for fit in ("train", "val"):
        for held in ("dev", "test"):
            if fit in spec.files and held in spec.files and same(spec.files[fit], spec.files[held]):
                raise DataError(f"task {name!r}: files.{fit} and files.{held} are the same file ({spec.files[held]}); "
                                f"{held} is only reported, never trained or selected on: "
                                + ("drop files.val (val is carved from train)" if fit == "val"
                                   else f"point files.{fit} at another file"))


def load_task(name: str, spec: TaskSpec, data_root: str | Path, seed: int, val_fraction: float,
              val_max: int, max_train: int) -> TaskData:
    """Load every split of a task; carve ``val`` from train; optionally subsample train (seeded)."""
    if spec.format == "hub":
        return _load_hub(name, spec, seed, val_fraction, val_max, max_train)
    _check_held_out(name, spec, Path(data_root))
    raw = {split: _raw_rows(spec, Path(data_root), split) for split in spec.files}
    for split, rows in raw.items():
        if not rows:
            raise DataError(f"task {name!r}: split {split!r} ({spec.files[split]}) is empty; point it at a file with rows")
    labels = list(spec.labels)
    if spec.type == "token_classification" and not labels:
        labels = _tag_set(raw["train"], name)
    splits = {s: datasets.Dataset.from_dict(normalize(rows, spec, labels, name, s)) for s, rows in raw.items()}
    return _checked(TaskData(name, spec, labels, carve(splits, seed, val_fraction, val_max, max_train)))


def _checked(td: TaskData) -> TaskData:
    """A classifier's train rows must hold at least two of its labels: trained on one, it was "100.00" on val and
    chance on dev, with no word of why. Labels with no train row at all are warned about. A regression task's
    train targets must vary, for the same reason. A token task's tags must be entity tags (``check_tag_scheme``)."""
    if td.spec.type == "token_classification":
        check_tag_scheme(td.labels, td.name)
    if td.spec.type not in ("classification", "pair_classification", "regression"):
        return td
    train = td.split("train")["label"]
    seen = set(train)
    if td.spec.type == "regression":
        if len(seen) < 2:
            raise DataError(f"task {td.name!r}: every train row (after carving val) has the label {train[0]!r}; a "
                            f"regression task needs targets that vary: fix the data or tasks.{td.name}.label")
        return td
    if len(seen) < 2:
        raise DataError(f"task {td.name!r}: its train rows (after carving val) hold one label only "
                        f"({td.labels[train[0]]!r} of {td.labels}); a classifier needs rows of two labels "
                        f"or more: fix the data, or tasks.{td.name}.labels")
    absent = [y for i, y in enumerate(td.labels) if i not in seen]
    if absent:
        log.warning("task %r: no train row is labelled %s (labels %s): the model can never predict %s",
                    td.name, absent, td.labels, "it" if len(absent) == 1 else "them")
    return td


def _load_hub(name: str, spec: TaskSpec, seed: int, val_fraction: float, val_max: int, max_train: int) -> TaskData:
    """Hub datasets (needs internet or a local HF cache); columns mapped like local rows."""
    try:
        dd = datasets.load_dataset(spec.hub_name, spec.hub_subset or None)
    except Exception as e:  # offline, unknown name...
        raise DataError(f"task {name!r}: cannot load hub dataset {spec.hub_name!r}: {e}") from None
    names = {"validation": "dev"}
    raw = {names.get(s, s): d.to_list() for s, d in dd.items()}
    if any(r.get(spec.label) == -1 for r in raw.get("test", [])[:10]):
        raw.pop("test")  # GLUE-style hidden test labels
    labels = list(spec.labels) or (_tag_set(raw["train"], name) if spec.type == "token_classification" else [])
    splits = {s: datasets.Dataset.from_dict(normalize(rows, spec, labels, name, s)) for s, rows in raw.items()}
    return _checked(TaskData(name, spec, labels, carve(splits, seed, val_fraction, val_max, max_train)))


def carve(splits: dict[str, datasets.Dataset], seed: int, val_fraction: float, val_max: int,
          max_train: int) -> dict[str, datasets.Dataset]:
    """Seeded: hold out ``val`` from train (for selection), then subsample the rest of train.

    A task that brings its own ``val`` file keeps it: carving would silently replace the user's split.
    """
    train = splits["train"].shuffle(seed=seed)
    if val_fraction > 0 and "val" not in splits:
        n_val = max(1, min(val_max, int(round(len(train) * val_fraction))))
        if len(train) - n_val < 1:
            raise DataError(f"train has only {len(train)} rows: too few to carve a validation split")
        splits["val"] = train.select(range(n_val))
        train = train.select(range(n_val, len(train)))
    if max_train and len(train) > max_train:
        train = train.select(range(max_train))
    splits["train"] = train
    return splits


def load_task_data(cfg: Config, name: str) -> TaskData:
    """Task ``name`` as params.yaml defines it: data root, seed, val carving, train subsample."""
    spec = cfg.task(name)
    max_train = spec.max_train_examples if spec.max_train_examples is not None else cfg.train.max_train_examples
    return load_task(name, spec, cfg.data_root, cfg.seed, cfg.train.val_fraction, cfg.train.val_max, max_train)
