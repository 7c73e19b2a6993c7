"""Strict mapping -> dataclass checking, one rule for the config loader and the model spec: every key must
be a field, every field without a default must be given. Pure Python, no I/O."""
from __future__ import annotations

import dataclasses
from typing import Any


def key_problems(cls: type, data: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(unknown keys, missing required fields, every field name) of ``data`` against dataclass ``cls``."""
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return sorted(set(data) - names), sorted(required - set(data)), sorted(names)
