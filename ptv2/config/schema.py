"""The shape of params.yaml: one frozen dataclass per section, no defaults of their own (params.yaml is the
one source of values; task blocks have optional keys). Each checks its values when built."""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ptv2.config.checks import check_output_folders
from ptv2.config.deploy import MAX_SWAPS, ExportConfig, FlowsConfig, ServingConfig, TrackingConfig
from ptv2.errors import ConfigError
from ptv2.errors import check_value as _check  # one rule for a value error, shared with ptv2.prompt
from ptv2.prompt import PromptConfig

TaskType = Literal[
    "classification", "pair_classification", "regression", "multiple_choice", "token_classification"
]
Method = Literal["ptv2", "prefix_tuning", "prompt_tuning", "ptuning_v1", "lora", "adalora", "qlora", "finetune"]
SPLITS = ("train", "val", "dev", "test")  # val: carved from train unless a task brings its own file
METRICS = ("accuracy", "f1", "f1_macro", "mcc", "pearson", "spearman", "entity_f1")
# Which metrics read which predictions: ids of a class or choice, numbers, or tag sequences
METRICS_BY_TYPE = {"classification": ("accuracy", "f1", "f1_macro", "mcc"),
                   "pair_classification": ("accuracy", "f1", "f1_macro", "mcc"),
                   "multiple_choice": ("accuracy", "f1", "f1_macro", "mcc"),
                   "regression": ("pearson", "spearman"), "token_classification": ("entity_f1",)}
DATA_ROOT_ENV = "PTV2_DATA_ROOT"
MAX_SEED = 2**32 - 1
TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")  # a task template's placeholder: {field} or {a.b}
# A task's name is a DVC stage key (adapt@NAME), a word on a stage's command line, a folder and part of a
# registered model's name: letters, digits, '_' and '-' fit all four ("my task" split the stage's command); at most
# 64 of them (a 300-character name failed as "File name too long", a traceback, making its output folder)
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_per_method(key: str, values: dict[str, Any]) -> None:
    """The keys of a per-method mapping (train.lr, train.epochs, a task's epochs) name methods: a typo ('lroa: 3')
    or a method's rate under a task was accepted and never read."""
    for m, v in values.items():
        _check(m in get_args(Method), f"{key}.{m}", v, f"a method's name as its key, one of {list(get_args(Method))}")


def check_seed(key: str, seed: int) -> None:
    """A seed numpy and torch both take, or one ConfigError naming ``key``."""
    # numpy's seeding (data carve, transformers.set_seed) takes only non-negative 32-bit seeds
    _check(0 <= seed <= MAX_SEED, key, seed, f"an integer in [0, {MAX_SEED}]")


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    pooling: Literal["cls", "mean", "pooler"]
    normalize: bool  # pooled vectors L2-normalised before the heads (a sentence-transformers Normalize module)
    max_length: int
    pair_encoding: Literal["cross", "bi"]  # pair tasks: both texts in one row, or each alone (model.heads)

    def __post_init__(self) -> None:
        _check(self.max_length >= 8, "max_length", self.max_length, "an integer >= 8")


@dataclass(frozen=True)
class TrainConfig:
    method: Method
    lr: dict[str, float]
    epochs: dict[str, int]  # per method
    batch_size: int
    eval_batch_size: int
    grad_accum: int
    warmup_ratio: float
    weight_decay: float
    head_dropout: float
    head_init: Literal["fit", "random"]  # fit: each head fitted on the step-0 features first (LP-FT)
    head_l2: list[float]  # L2 strengths tried by the fitted head (chosen on val)
    cosent_scale: float  # bi-encoded similarity: CoSENT's scale (sentence-transformers: 20)
    patience: int  # epochs without a new best val score before stopping; 0 = never stop early
    select_alpha: float  # a trained epoch replaces step 0 only if it beats it on val by the paired test at this level
    select_samples: int  # random swaps of that paired permutation test
    max_train_examples: int  # 0 = all; else a seeded subsample
    val_fraction: float  # carved from train for model selection (dev is only reported)
    val_max: int
    length_grouping: bool
    device: Literal["auto", "cpu", "cuda"]
    num_threads: int  # torch CPU threads; 0 = torch's default
    precision: Literal["auto", "fp32", "bf16"]  # training autocast; auto: bf16 on CUDA, measured on a CPU (training.speed)
    compile: bool  # torch.compile the backbone's forward while training (ptv2.training.speed)
    processes: int  # data-parallel processes the DVC stages launch per node (torchrun); 1 = one process

    def __post_init__(self) -> None:
        check_per_method("epochs", self.epochs)
        check_per_method("lr", self.lr)
        _check(self.method in self.epochs, "epochs", self.epochs, f"an epoch count for method {self.method!r}")
        for m, v in self.epochs.items():
            _check(v >= 1, f"epochs.{m}", v, "an integer >= 1")
        for name in ("batch_size", "eval_batch_size", "grad_accum"):
            _check(getattr(self, name) >= 1, f"{name}", getattr(self, name), "an integer >= 1")
        _check(self.method in self.lr, "lr", self.lr, f"a learning rate for method {self.method!r}")
        for m, v in self.lr.items():
            _check(0 < v < 1, f"lr.{m}", v, "a float in (0, 1)")
        _check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", self.warmup_ratio, "a float in [0, 1)")
        _check(0.0 <= self.val_fraction < 0.5, "val_fraction", self.val_fraction, "a float in [0, 0.5)")
        _check(len(self.head_l2) >= 1 and all(0 <= x <= 1e6 for x in self.head_l2), "head_l2", self.head_l2,
               "a non-empty list of L2 strengths in [0, 1e6]")  # 1e300 overflowed the head's float32 (a traceback)
        _check(self.cosent_scale > 0, "cosent_scale", self.cosent_scale, "a float > 0, e.g. 20")
        _check(self.patience >= 0, "patience", self.patience, "an integer >= 0")
        _check(0.0 < self.select_alpha <= 1.0, "select_alpha", self.select_alpha,
               "a test level in (0, 1]; 1 = any higher val score replaces step 0")
        _check(1 <= self.select_samples <= MAX_SWAPS, "select_samples", self.select_samples,
               f"an integer in [1, {MAX_SWAPS}], e.g. 1000")
        need = math.ceil(1 / self.select_alpha - 1 - 1e-9)  # the test's smallest p is 1 / (samples + 1)
        _check(need <= MAX_SWAPS, "select_alpha", self.select_alpha,
               f"a level of at least {1 / (MAX_SWAPS + 1):.6g}: a smaller one needs over {MAX_SWAPS} swaps")
        _check(self.select_samples >= need, "select_samples", self.select_samples,
               f"at least {need} swaps: with fewer, no p-value reaches select_alpha = {self.select_alpha} and no "
               f"trained epoch could ever replace step 0 (or raise select_alpha)")
        _check(self.max_train_examples >= 0, "max_train_examples", self.max_train_examples, ">= 0")
        _check(self.processes >= 1, "processes", self.processes, "an integer >= 1 (data-parallel processes per node)")
        _check(self.num_threads >= 0, "num_threads", self.num_threads, "an integer >= 0 (0 = torch's default)")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a float >= 0")
        _check(0.0 <= self.head_dropout < 1.0, "head_dropout", self.head_dropout, "a float in [0, 1)")
        _check(self.val_max >= 1, "val_max", self.val_max, "an integer >= 1 (most val rows carved from train)")


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's data lives and how to read it; no code per task."""

    type: TaskType
    format: Literal["tsv", "jsonl", "conll", "hub"]
    metrics: list[str]
    files: dict[str, str] = field(default_factory=dict)  # split -> path under data_root
    label_files: dict[str, str] = field(default_factory=dict)  # split -> one label per line (WiC's *.gold.txt)
    hub_name: str = ""  # for format: hub
    hub_subset: str = ""
    header: bool = True  # tsv: first line names the columns
    columns: list[str] = field(default_factory=list)  # tsv without header
    text_a: str = ""  # template over fields, e.g. "{premise}"
    text_b: str = ""
    choices: list[str] = field(default_factory=list)  # multiple_choice templates
    label: str = "label"
    labels: list[str] = field(default_factory=list)  # label values as strings (index = class id)
    max_train_examples: int | None = None  # overrides train.max_train_examples
    epochs: dict[str, int] = field(default_factory=dict)  # per method; overrides train.epochs
    pair_encoding: Literal["", "cross", "bi"] = ""  # pair tasks: overrides backbone.pair_encoding
    quiet_margin: float | None = None  # prompt.init quiet: this task's own start; overrides prompt.quiet_margin

    def __post_init__(self) -> None:
        for m in self.metrics:
            _check(m in METRICS, "metrics", m, f"one of {list(METRICS)}")
            _check(m in METRICS_BY_TYPE[self.type], "metrics", m,
                   f"a metric of a {self.type} task: {list(METRICS_BY_TYPE[self.type])}")
        n_classes = len(self.choices) if self.type == "multiple_choice" else len(self.labels)
        if "f1" in self.metrics and self.type in ("classification", "pair_classification", "multiple_choice"):
            _check(n_classes == 2, "metrics", "f1", f"f1_macro for {n_classes} classes (f1 is the second "
                                                    f"class's binary F1, for two)")
        _check(len(self.metrics) >= 1, "metrics", self.metrics, "at least one metric (the first selects)")
        _check(len(set(self.metrics)) == len(self.metrics), "metrics", self.metrics, "each metric once")
        if self.format == "hub":
            _check(bool(self.hub_name), "hub_name", self.hub_name, "a dataset name for format: hub")
            _check(not Path(self.hub_name).exists(), "hub_name", self.hub_name,
                   "a hub dataset name, not a local folder (local files: format tsv, jsonl or conll with files:)")
        else:
            _check("train" in self.files, "files", self.files, "a 'train' entry (split -> file)")
        _check(set(self.files) <= set(SPLITS), "files", sorted(self.files), f"splits among {list(SPLITS)}")
        for split in self.label_files:
            _check(split in self.files, "label_files", self.label_files, f"splits that files: lists ({sorted(self.files)})")
        for key, paths in (("files", self.files), ("label_files", self.label_files)):
            for split, f in paths.items():  # DVC tracks data_root (the prepare stage's dependency), nothing else:
                # a file elsewhere changed and `dvc repro` said "up to date", the old model still served
                inside = os.path.normpath(f)  # 'sent/../sent/dev.tsv' stays inside; '../x', 'a/../../x' leave it
                _check(not os.path.isabs(inside) and inside.split(os.sep)[0] != ".." and not f.startswith("~"),
                       f"{key}.{split}", f, "a path under data_root (DVC tracks data_root only, so data elsewhere "
                       "would change without retraining): move the file under data_root, or set data_root to a "
                       "folder that holds it")
        if self.format == "tsv" and not self.header:
            _check(bool(self.columns), "columns", self.columns, "column names when header: false")
        if self.type != "token_classification":
            _check(bool(self.text_a), "text_a", self.text_a, "a template such as '{sentence}'")
        if self.type == "pair_classification":
            _check(bool(self.text_b), "text_b", self.text_b, "a second template for a pair task")
        for key, templates in (("text_a", [self.text_a]), ("text_b", [self.text_b]), ("choices", self.choices)):
            for t in filter(None, templates):  # a template naming no field gives every row the same text
                _check(bool(TEMPLATE_FIELD.search(t)), key, t, "a template naming a column, such as '{sentence}'")
        if self.type in ("classification", "pair_classification"):
            _check(len(self.labels) >= 2, "labels", self.labels, "the list of label values (>= 2)")
        _check(len(set(self.labels)) == len(self.labels), "labels", self.labels, "distinct label values")
        self._check_ignored()
        if self.pair_encoding == "bi":
            _check(bool(self.text_b) and self.type in ("pair_classification", "regression"), "pair_encoding",
                   self.pair_encoding, "'' or 'cross' for a task without text_b or of another type than "
                   "pair_classification / regression")
        check_per_method("epochs", self.epochs)
        for m, v in self.epochs.items():  # 0 or -1 ran no epoch: step 0 alone, reported as the trained model
            _check(v >= 1, f"epochs.{m}", v, "an integer >= 1 (or leave the method out: train.epochs)")
        if self.max_train_examples is not None:
            _check(self.max_train_examples >= 0, "max_train_examples", self.max_train_examples, ">= 0 (0 = all)")
        if self.quiet_margin is not None:
            _check(self.quiet_margin > 0, "quiet_margin", self.quiet_margin, "a float > 0, e.g. 5 (or leave it out)")
        if self.type == "multiple_choice":
            _check(len(self.choices) >= 2, "choices", self.choices, "templates for >= 2 choices")

    def _check_ignored(self) -> None:
        """Keys this task's type or format would ignore, refused (a regression task's labels were recorded in its
        model's spec; a token task's text_a, a hub name on a TSV task went unread)."""
        ignored = {"labels": self.type in ("regression", "multiple_choice"),  # a number, a choice's index
                   "choices": self.type != "multiple_choice",
                   "text_a": self.type == "token_classification",  # it reads tokens and tags
                   "text_b": self.type in ("token_classification", "multiple_choice"),
                   "columns": self.format != "tsv" or self.header,  # a header line names them
                   "hub_name": self.format != "hub", "hub_subset": self.format != "hub"}
        for key, unread in ignored.items():
            value = getattr(self, key)
            header = " with a header" if key == "columns" and self.format == "tsv" else ""
            _check(not (unread and value), key, value,
                   f"nothing for a {self.type} task in format {self.format}{header} (it would be ignored): remove it")


@dataclass(frozen=True)
class PretrainConfig:
    """Multi-task prompt pretraining: one shared deep prompt, one head per task."""

    tasks: list[str]  # the mixture (train splits only)
    weights: dict[str, float]  # optional per-task multipliers
    strategy: Literal["proportional", "temperature", "uniform"]
    cap: int  # K: examples-proportional cap per task (0 = no cap)
    temperature: float
    batches_per_epoch: int  # 0 = sum of capped task sizes / batch_size
    batching: Literal["homogeneous", "mixed"]  # one task per batch, or rows of many tasks
    task_rank: int  # > 0: per-task rank-r multiplicative factors on the shared prompt (Multitask Prompt Tuning)
    epochs: int
    out_dir: str

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.cap >= 0, "cap", self.cap, "an integer >= 0")
        _check(self.temperature > 0, "temperature", self.temperature, "a float > 0")
        _check(self.batches_per_epoch >= 0, "batches_per_epoch", self.batches_per_epoch, ">= 0")
        _check(self.task_rank >= 0, "task_rank", self.task_rank, "an integer >= 0 (0 = off)")
        for t, w in self.weights.items():
            _check(w > 0, f"weights.{t}", w, "a float > 0")


@dataclass(frozen=True)
class AdaptConfig:
    """Adaptation: each task starts from the pretrained prompt (and head, when it was in the mixture)."""

    tasks: list[str]
    init_head: bool
    epochs: int  # 0 = the task's / train's epochs
    out_dir: str
    baseline_dir: str  # each task's frozen-backbone baseline (the promotion gate's bar)

    def __post_init__(self) -> None:
        _check(self.epochs >= 0, "epochs", self.epochs, "an integer >= 0 (0 = each task's own epochs)")


@dataclass(frozen=True)
class CompareConfig:
    """The method comparison (``ptv2 compare``, ``comparison/dvc.yaml``): what runs, and its budget."""

    tasks: list[str]
    methods: list[str]
    seeds: list[int]
    one_seed: list[str]  # large tasks: first seed only
    overrides: list[str]  # "section.key=value", for the comparison's runs only
    out: str
    work: str

    def __post_init__(self) -> None:
        for m in self.methods:
            _check(m in get_args(Method), "methods", m, f"one of {list(get_args(Method))}")
        _check(len(self.seeds) >= 1, "seeds", self.seeds, "at least one seed")
        for key in ("tasks", "methods", "seeds"):  # a repeat would run twice and count twice in mean ± std
            names = getattr(self, key)
            _check(len(set(names)) == len(names), key, names, "a list naming each once")
        for x in self.seeds:
            check_seed("seeds", x)
        for t in self.one_seed:
            _check(t in self.tasks, "one_seed", t, f"one of compare.tasks {self.tasks}")
        for o in self.overrides:
            _check("=" in o and not o.startswith("compare."), "overrides", o,
                   "'section.key=value' outside the compare section")


@dataclass(frozen=True)
class RunConfig:
    task: str
    out_dir: str


@dataclass(frozen=True)
class Config:
    data_root: str
    seed: int
    backbone: BackboneConfig
    prompt: PromptConfig
    train: TrainConfig
    run: RunConfig
    pretrain: PretrainConfig
    adapt: AdaptConfig
    tracking: TrackingConfig
    flows: FlowsConfig
    export: ExportConfig
    serving: ServingConfig
    compare: CompareConfig
    tasks: dict[str, TaskSpec]

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)
        known = sorted(self.tasks)
        for name in known:
            _check(bool(TASK_NAME.fullmatch(name)), "tasks", name,
                   "a task name of 1 to 64 letters, digits, '_' and '-' (it names DVC stages, folders and registered "
                   "models)")
        for where, names in (("pretrain.tasks", self.pretrain.tasks), ("pretrain.weights", list(self.pretrain.weights)),
                             ("adapt.tasks", self.adapt.tasks), ("compare.tasks", self.compare.tasks)):
            for t in names:
                _check(t in self.tasks, where, t, f"a task defined under 'tasks:' ({known})")
        for where, names in (("pretrain.tasks", self.pretrain.tasks), ("adapt.tasks", self.adapt.tasks)):
            _check(len(names) >= 1 and len(set(names)) == len(names), where, names,
                   f"a non-empty list of distinct tasks from 'tasks:' ({known})")
        check_output_folders({"pretrain.out_dir": self.pretrain.out_dir, "adapt.out_dir": self.adapt.out_dir,
                              "adapt.baseline_dir": self.adapt.baseline_dir, "export.out_dir": self.export.out_dir,
                              "export.frozen_dir": self.export.frozen_dir, "export.checks_dir": self.export.checks_dir})
        for t in self.pretrain.weights:  # a weight of a task outside the mixture was never read
            _check(t in self.pretrain.tasks, "pretrain.weights", t, f"a task of pretrain.tasks {self.pretrain.tasks}")
        t = self.tracking
        clash = [n for n in known if t.task_model(n) == t.multitask_model]
        _check(not clash, "tracking.multitask_model", t.multitask_model,
               f"a name other than task {clash[:1]}'s registered model (registry_prefix + task)")
        _check(self.export.int8 or not self.serving.int8, "serving.int8", self.serving.int8,
               "false, or export.int8: true (bundles carry an int8 encoder only when exported with one)")

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise ConfigError(f"unknown task {name!r}; known tasks: {sorted(self.tasks)} (add it under 'tasks:')")
        return self.tasks[name]

    def data_path(self, rel: str) -> Path:
        return Path(self.data_root) / rel

    def epochs_for(self, task: str, adapting: bool = False) -> int:
        """Epochs for ``task`` under the configured method (adapt / task override first)."""
        if adapting and self.adapt.epochs:
            return self.adapt.epochs
        m = self.train.method
        return self.task(task).epochs.get(m, self.train.epochs[m])

    def prompt_for(self, tasks: list[str]) -> PromptConfig:
        """The prompt settings a model of ``tasks`` starts from: one task's own ``quiet_margin`` where it sets
        one (a shared mixture prompt has one start: ``prompt.quiet_margin``)."""
        own = self.tasks.get(tasks[0]) if len(tasks) == 1 else None
        if own is not None and own.quiet_margin is not None:
            return dataclasses.replace(self.prompt, quiet_margin=own.quiet_margin)
        return self.prompt

    def pair_encoding(self, task: str) -> str:
        """How ``task``'s pairs are encoded: its own setting, else the backbone's; one-text tasks: cross."""
        spec = self.task(task)
        if not spec.text_b or spec.type not in ("pair_classification", "regression"):
            return "cross"
        return spec.pair_encoding or self.backbone.pair_encoding

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
