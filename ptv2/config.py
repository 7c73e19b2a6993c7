"""Typed, validated configuration: the only reader of ``params.yaml``.

Every section is a frozen dataclass. ``load_config`` rejects unknown keys, wrong
types and impossible values at load time, naming the key and what is allowed.
Overrides use dotted keys (``--set train.epochs=3``), parsed as YAML scalars.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from ptv2.errors import ConfigError

TaskType = Literal[
    "classification", "pair_classification", "regression", "multiple_choice", "token_classification"
]
Method = Literal["ptv2", "prefix_tuning", "prompt_tuning", "ptuning_v1", "lora", "adalora", "qlora", "finetune"]
METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman", "entity_f1")
DATA_ROOT_ENV = "PTV2_DATA_ROOT"
LR_DEFAULTS = {"ptv2": 1e-2, "prefix_tuning": 1e-2, "prompt_tuning": 3e-2, "ptuning_v1": 1e-3, "lora": 5e-4,
               "adalora": 5e-4, "qlora": 5e-4, "finetune": 3e-5}
EPOCH_DEFAULTS = {"ptv2": 10, "prefix_tuning": 10, "prompt_tuning": 10, "ptuning_v1": 10, "lora": 5, "adalora": 5,
                  "qlora": 5, "finetune": 3}


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    pooling: Literal["cls", "mean", "pooler"] = "mean"
    max_length: int = 128

    def __post_init__(self) -> None:
        _check(self.max_length >= 8, "backbone.max_length", self.max_length, "an integer >= 8")


@dataclass(frozen=True)
class PromptConfig:
    length: int = 16  # P virtual tokens per layer; 0 = plain backbone
    reparam: bool = False  # Prefix-Tuning's MLP reparameterization
    reparam_hidden: int = 512
    dropout: float = 0.1
    init: Literal["random", "vocab", "words"] = "random"  # prompt_tuning
    init_words: str = ""  # prompt_tuning with init: words
    template: str = ""  # ptuning_v1: e.g. "[v] [v] question [v]"; "" = length x [v]
    encoder: Literal["lstm", "mlp"] = "lstm"  # ptuning_v1 prompt encoder
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value"])

    def __post_init__(self) -> None:
        _check(0 <= self.length <= 256, "prompt.length", self.length, "an integer in [0, 256]")
        _check(self.lora_r >= 1, "prompt.lora_r", self.lora_r, "an integer >= 1")
        _check(self.reparam_hidden >= 1, "prompt.reparam_hidden", self.reparam_hidden, ">= 1")
        _check(0.0 <= self.dropout < 1.0, "prompt.dropout", self.dropout, "a float in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    method: Method = "ptv2"
    lr: dict[str, float] = field(default_factory=lambda: dict(LR_DEFAULTS))
    epochs: dict[str, int] = field(default_factory=lambda: dict(EPOCH_DEFAULTS))  # per method
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    head_dropout: float = 0.1
    patience: int = 3  # epochs without improvement before stopping; 0 = never stop early
    max_train_examples: int = 0  # 0 = all; else a seeded subsample
    val_fraction: float = 0.1  # carved from train for model selection (dev is only reported)
    val_max: int = 1000
    length_grouping: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = 0  # torch CPU threads; 0 = torch's default

    def __post_init__(self) -> None:
        _check(self.method in self.epochs, "train.epochs", self.epochs, f"an epoch count for method {self.method!r}")
        for m, v in self.epochs.items():
            _check(v >= 1, f"train.epochs.{m}", v, "an integer >= 1")
        for name in ("batch_size", "eval_batch_size", "grad_accum"):
            _check(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "an integer >= 1")
        _check(self.method in self.lr, "train.lr", self.lr, f"a learning rate for method {self.method!r}")
        for m, v in self.lr.items():
            _check(0 < v < 1, f"train.lr.{m}", v, "a float in (0, 1)")
        _check(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", self.warmup_ratio, "a float in [0, 1)")
        _check(0.0 <= self.val_fraction < 0.5, "train.val_fraction", self.val_fraction, "a float in [0, 0.5)")
        _check(self.patience >= 0, "train.patience", self.patience, "an integer >= 0")
        _check(self.max_train_examples >= 0, "train.max_train_examples", self.max_train_examples, ">= 0")


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's data lives and how to read it; no code per task."""

    type: TaskType
    format: Literal["tsv", "jsonl", "conll", "hub"]
    metrics: list[str]
    files: dict[str, str] = field(default_factory=dict)  # split -> path under data_root
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

    def __post_init__(self) -> None:
        for m in self.metrics:
            _check(m in METRICS, "metrics", m, f"one of {list(METRICS)}")
        _check(len(self.metrics) >= 1, "metrics", self.metrics, "at least one metric (the first selects)")
        if self.format == "hub":
            _check(bool(self.hub_name), "hub_name", self.hub_name, "a dataset name for format: hub")
        else:
            _check("train" in self.files, "files", self.files, "a 'train' entry (split -> file)")
        if self.format == "tsv" and not self.header:
            _check(bool(self.columns), "columns", self.columns, "column names when header: false")
        if self.type != "token_classification":
            _check(bool(self.text_a), "text_a", self.text_a, "a template such as '{sentence}'")
        if self.type == "pair_classification":
            _check(bool(self.text_b), "text_b", self.text_b, "a second template for a pair task")
        if self.type in ("classification", "pair_classification"):
            _check(len(self.labels) >= 2, "labels", self.labels, "the list of label values (>= 2)")
        if self.type == "multiple_choice":
            _check(len(self.choices) >= 2, "choices", self.choices, "templates for >= 2 choices")


@dataclass(frozen=True)
class PretrainConfig:
    """Multi-task prompt pretraining: one shared deep prompt, one head per task."""

    tasks: list[str] = field(default_factory=list)  # the mixture (train splits only)
    weights: dict[str, float] = field(default_factory=dict)  # optional per-task multipliers
    strategy: Literal["proportional", "temperature", "uniform"] = "proportional"
    cap: int = 10000  # K: examples-proportional cap per task (0 = no cap)
    temperature: float = 2.0
    batches_per_epoch: int = 0  # 0 = sum of capped task sizes / batch_size
    batching: Literal["homogeneous", "mixed"] = "homogeneous"  # one task per batch, or rows of many tasks
    task_rank: int = 0  # > 0: per-task rank-r multiplicative factors on the shared prompt (Multitask Prompt Tuning)
    epochs: int = 3
    out_dir: str = "outputs/pretrain"

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "pretrain.epochs", self.epochs, "an integer >= 1")
        _check(self.cap >= 0, "pretrain.cap", self.cap, "an integer >= 0")
        _check(self.temperature > 0, "pretrain.temperature", self.temperature, "a float > 0")
        _check(self.batches_per_epoch >= 0, "pretrain.batches_per_epoch", self.batches_per_epoch, ">= 0")
        _check(self.task_rank >= 0, "pretrain.task_rank", self.task_rank, "an integer >= 0 (0 = off)")
        for t, w in self.weights.items():
            _check(w > 0, f"pretrain.weights.{t}", w, "a float > 0")


@dataclass(frozen=True)
class AdaptConfig:
    """Adaptation: each task starts from the pretrained prompt (and head, when it was in the mixture)."""

    tasks: list[str] = field(default_factory=list)
    init_head: bool = True
    epochs: int = 0  # 0 = the task's / train's epochs
    out_dir: str = "outputs/adapt"


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "ptv2"
    registry_prefix: str = "ptv2-"  # registered model per task: <prefix><task>
    promote_margin: float = 0.0  # champion replaced when challenger >= champion + margin (metric points)


@dataclass(frozen=True)
class FlowsConfig:
    """Prefect: the retraining schedule and how the adapt fan-out runs."""

    retrain_cron: str = "0 3 * * *"
    timezone: str = "UTC"
    task_runner: Literal["thread", "dask", "ray"] = "thread"  # dask/ray need prefect-dask / prefect-ray
    max_workers: int = 2
    retries: int = 2
    retry_delay_s: int = 30

    def __post_init__(self) -> None:
        _check(len(self.retrain_cron.split()) == 5, "flows.retrain_cron", self.retrain_cron, "a 5-field cron string")
        _check(self.retries >= 0 and self.max_workers >= 1, "flows", (self.retries, self.max_workers),
               "retries >= 0 and max_workers >= 1")


@dataclass(frozen=True)
class ExportConfig:
    """ONNX deployment: parity and int8 gates that a model must pass to be promoted."""

    out_dir: str = "outputs/bundle"
    int8: bool = True
    parity_tol: float = 1e-4  # max |ORT - PyTorch| over logits, fp32
    parity_batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    parity_lengths: list[int] = field(default_factory=lambda: [1, 40, 128, 0])  # 0 = max_length
    max_int8_drop: float = 0.5  # metric points lost by int8 on dev before the gate refuses

    def __post_init__(self) -> None:
        _check(self.parity_tol > 0, "export.parity_tol", self.parity_tol, "a float > 0")
        _check(self.max_int8_drop >= 0, "export.max_int8_drop", self.max_int8_drop, "a float >= 0")


@dataclass(frozen=True)
class CompareConfig:
    """The method comparison (``ptv2 compare``, ``comparison/dvc.yaml``): what runs, and its budget."""

    tasks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["ptv2", "finetune"])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    one_seed: list[str] = field(default_factory=list)  # large tasks: first seed only
    overrides: list[str] = field(default_factory=list)  # "section.key=value", for the comparison's runs only
    out: str = "reports/baselines.md"
    work: str = "outputs/baselines"

    def __post_init__(self) -> None:
        for m in self.methods:
            _check(m in get_args(Method), "compare.methods", m, f"one of {list(get_args(Method))}")
        _check(len(self.seeds) >= 1, "compare.seeds", self.seeds, "at least one seed")
        for t in self.one_seed:
            _check(t in self.tasks, "compare.one_seed", t, f"one of compare.tasks {self.tasks}")
        for o in self.overrides:
            _check("=" in o and not o.startswith("compare."), "compare.overrides", o,
                   "'section.key=value' outside the compare section")


@dataclass(frozen=True)
class RunConfig:
    task: str = "cb"
    out_dir: str = "outputs"


@dataclass(frozen=True)
class Config:
    data_root: str = "../shared/data"
    seed: int = 42
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = sorted(self.tasks)
        for where, names in (("pretrain.tasks", self.pretrain.tasks), ("pretrain.weights", list(self.pretrain.weights)),
                             ("adapt.tasks", self.adapt.tasks), ("compare.tasks", self.compare.tasks)):
            for t in names:
                _check(t in self.tasks, where, t, f"a task defined under 'tasks:' ({known})")

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: expected {allowed}")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type hint ``tp`` (recursing into dataclasses)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key} = {value!r} is not allowed: expected one of {list(get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        _, vt = get_args(tp)
        return {str(k): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (str, int, float, bool)) and key.split("[")[0].endswith("labels"):
        return str(value)  # label values may be written as YAML ints/bools
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{key} = {value!r} has the wrong type: expected {getattr(tp, '__name__', tp)}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = prefix or "top level"
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed keys: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix or 'config'}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the nested dict ``data``."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: {p!r} is not a section")
    node[parts[-1]] = read_yaml(raw)


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. PyYAML's 1.1 rules read yes/no/on/off as booleans, and
    tools that re-write params.yaml (``dvc exp run -S``) leave such label values unquoted."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)


def load_config(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override, validate. Relative ``data_root`` resolves against the file's folder;
    the ``PTV2_DATA_ROOT`` environment variable replaces it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (pass --params PATH)")
    data = read_yaml(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for ov in overrides:
        apply_override(data, ov)
    cfg = _build(Config, data, "")
    root = os.environ.get(DATA_ROOT_ENV) or cfg.data_root
    root_path = Path(root) if Path(root).is_absolute() else (path.resolve().parent / root)
    return dataclasses.replace(cfg, data_root=str(root_path.resolve()))


def comparison_config(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config the comparison's runs use: params.yaml, then ``compare.overrides`` (its budget:
    epochs, subsamples), then the command line's ``overrides``."""
    base = load_config(path, overrides)
    if not base.compare.overrides:
        return base
    return load_config(path, [*base.compare.overrides, *overrides])


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate an in-memory mapping (used by tests and saved artifacts)."""
    return _build(Config, data, "")
