"""Reading params.yaml: YAML 1.2 booleans, duplicate keys refused, ``--set`` overrides, types checked
against the schema, unknown and missing keys refused, ``data_root`` resolved."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from ptv2.config.schema import DATA_ROOT_ENV, Config
from ptv2.errors import ConfigError
from ptv2.strict import key_problems


def _not_a_mapping(key: str, value: Any, sub: str) -> ConfigError:
    """A section or per-name table given one value (`dvc exp run -S train.epochs=1`: epochs are per method), or
    none (``backbone:`` with nothing under it, `--set tasks.cb=null`: the example read "tasks.cb.type=None")."""
    if value is None:
        return ConfigError(f"{key} is empty (null): write its keys under it in params.yaml (e.g. {key}.{sub}), or "
                           f"set them with --set {key}.{sub}=VALUE")
    return ConfigError(f"{key} must be a mapping, got {value!r}: set one of its keys (e.g. {key}.{sub}={value!r}), "
                       f"or write it as a mapping in params.yaml")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type hint ``tp`` (recursing into dataclasses)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _not_a_mapping(key, value, dataclasses.fields(tp)[0].name)
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
            raise _not_a_mapping(key, value, "<name>")
        _, vt = get_args(tp)
        return {str(k): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and (isinstance(value, (int, float)) and not isinstance(value, bool)
                        or isinstance(value, str) and _EXPONENT.match(value)):  # YAML 1.1 reads 3e-2 as a string
        if not math.isfinite(float(value)):  # head_l2 [.inf] reached torch as a traceback; inf weight decay, NaNs
            raise ConfigError(f"{key} = {value!r} is not a finite number: give a finite value")
        return float(value)
    if tp is str and isinstance(value, (str, int, float, bool)) and key.split("[")[0].endswith("labels"):
        return str(value)  # label values may be written as YAML ints/bools
    if tp in (int, str, bool) and type(value) is tp:
        return value
    # YAML reads an unquoted {a} as a mapping and [a] as a list: a template or a label then needs quotes
    hint = " (YAML read the braces or brackets as structure: quote the value, e.g. key='\"{a}\"')" \
        if tp is str and isinstance(value, (dict, list)) else ""
    if value is None:  # `--set key=` and `key:` are YAML's null; an empty string is written ''
        hint = " (an empty value is YAML's null: give a value" + ("; an empty string is written ''" if tp is str else "") + ")"
    raise ConfigError(f"{key} = {value!r} has the wrong type: expected {getattr(tp, '__name__', tp)}{hint}")


_EXPONENT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
MOVED = {"export.min_int8_agreement": "serving.int8_min_agreement (a serving policy applied to the recorded int8 checks)"}


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    unknown, missing, names = key_problems(cls, data)
    where = prefix or "top level"
    if unknown:
        moved = [f"{prefix}.{k} is now {MOVED[f'{prefix}.{k}']}" for k in unknown if f"{prefix}.{k}" in MOVED]
        shown = f"{unknown[:8]} and {len(unknown) - 8} more" if len(unknown) > 8 else f"{unknown}"  # another file?
        raise ConfigError(f"unknown key(s) {shown} in {where}; allowed keys: {names}"
                          + (f" ({'; '.join(moved)})" if moved else ""))
    if missing:
        raise ConfigError(f"missing key(s) {missing} in {where}; add them to params.yaml")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
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
    node[parts[-1]] = read_yaml(raw, f"override {assignment!r}")


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. PyYAML's 1.1 rules read yes/no/on/off as booleans, and
    tools that re-write params.yaml (``dvc exp run -S``) leave such label values unquoted."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys are defaults the node may override
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                              f"{seen[key]}): keep one of them")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_Yaml12Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


MAX_VALUES = 100_000  # a config's values once YAML aliases are expanded; the default params.yaml holds ~330


def _expanded_values(obj: Any, where: str) -> int:
    """How many values ``obj`` holds with its YAML aliases expanded (a node counts each time it is referenced),
    computed once per distinct node: nine nested aliases of nine ("billion laughs") read in 0.2 s and then
    exhausted memory when validated or printed. A node that contains itself is refused."""
    memo: dict[int, int] = {}

    def size(o: Any) -> int:
        if not isinstance(o, (list, dict)):
            return 1
        if id(o) not in memo:
            memo[id(o)] = -1  # in progress: meeting it again means it contains itself
            memo[id(o)] = 1 + sum(size(x) for x in (o.values() if isinstance(o, dict) else o))
        elif memo[id(o)] < 0:
            raise ConfigError(f"{where}: a YAML alias refers to a value that contains it; write the values out")
        return memo[id(o)]

    return size(obj)


def read_yaml(text: str, where: str = "params.yaml") -> Any:
    """YAML 1.2 booleans, duplicate keys refused, aliases expanding to at most MAX_VALUES values; a syntax error
    is one ConfigError naming the line."""
    try:
        data = yaml.load(text, Loader=_Yaml12Loader)
        n = _expanded_values(data, where)
    except RecursionError:  # in the parser or in the count
        raise ConfigError(f"{where}: nested too deeply to read; flatten it") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error{at}: {problem}; quote values that contain ': ', "
                          f"'{{' or '#' (e.g. key='\"{{a}} {{b}}\"')") from None
    if n > MAX_VALUES:
        raise ConfigError(f"{where}: its YAML aliases (*name) expand to {n:,} values, over {MAX_VALUES:,}; write the "
                          f"values out instead of nesting aliases")
    return data


def load_config(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override, validate. Relative ``data_root`` resolves against the file's folder;
    the ``PTV2_DATA_ROOT`` environment variable replaces it."""
    path = Path(path)
    cfg = _build(Config, _read(path, overrides), "")
    env = os.environ.get(DATA_ROOT_ENV)
    return dataclasses.replace(cfg, data_root=_resolve(env or cfg.data_root, path, f"${DATA_ROOT_ENV}" if env else
                                                       "data_root"))


def _read(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The params file as a mapping, overrides applied (not yet validated)."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "not found"
        raise ConfigError(f"config file {str(path)!r} {what} (pass --params PATH to a params.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    data = read_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for ov in overrides:
        apply_override(data, ov)
    return data


def params_folder(params: str | Path) -> Path:
    """The project folder of a params file: the folder the file is in, not its link target's. Resolving the file
    took a params.yaml linked to a shared config for a project in the config's folder: its MLflow store, registry
    and relative data_root there, one store for every project linking it."""
    return Path(params).absolute().parent.resolve()


def _resolve(root: str, params: Path, key: str = "data_root") -> str:
    """A data root as an absolute path: relative ones against the params file's folder. A leading ``~`` is
    refused: DVC takes it as a folder named ``~`` (its ``${data_root}`` dependency), so ptv2 does too."""
    if root.startswith("~"):
        home = os.path.expanduser(root)
        raise ConfigError(f"{key} = {root!r} starts with '~', which is not expanded here (nor by DVC): write the "
                          f"absolute path{f' ({home!r})' if home != root else ''} or one relative to params.yaml")
    return str((Path(root) if Path(root).is_absolute() else params_folder(params) / root).resolve())


def file_data_root(path: str | Path = "params.yaml") -> str:
    """The params file's own ``data_root``, resolved, whatever ``$PTV2_DATA_ROOT`` says: the folder ``dvc repro``
    tracks (dvc.yaml's ``${data_root}`` dependency), where ``load_config`` gives the one runs read."""
    path = Path(path)
    return _resolve(_build(Config, _read(path), "").data_root, path)


def comparison_config(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config the comparison's runs use: params.yaml, then ``compare.overrides`` (its budget:
    epochs, subsamples), then the command line's ``overrides``."""
    base = load_config(path, overrides)
    if not base.compare.overrides:
        return base
    try:
        return load_config(path, [*base.compare.overrides, *overrides])
    except ConfigError as e:  # the file was valid without them: "unknown key(s) ['bogus'] in train" sent users there
        raise ConfigError(f"compare.overrides in {path} (the comparison's budget) made it invalid: {e}") from None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate an in-memory mapping (used by tests and saved artifacts)."""
    return _build(Config, data, "")
