"""ModelSpec: everything needed to rebuild a model, typed; saved as a model folder's ``adapter_config.json``.

Built from the config (``ptv2.training.build.spec_from_config``), holding its ``PromptConfig`` as it is
(as peft saves its config as the adapter's), never from defaults of its own: every field is required, so
params.yaml stays the one source of values. Pure data: no torch, no I/O;
``to_dict`` / ``from_dict`` are the JSON form (``from_dict`` rejects unknown and missing keys).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ptv2.errors import ConfigError
from ptv2.prompt import PromptConfig
from ptv2.strict import key_problems


class SpecError(ValueError):
    """A spec mapping with unknown, missing or ill-typed fields."""


FROZEN = "frozen"  # the frozen-backbone baseline's name: its record's method, its table row, its folders


@dataclass(frozen=True)
class HeadSpec:
    """One task's head and how its outputs read: type, label names (index = class id), metrics."""

    type: str
    labels: list[str]
    metrics: list[str]
    text_b: bool  # the task takes a text pair
    pair_encoding: str  # cross (one row per pair) | bi (each text its own row; see model.heads)

    @property
    def n_out(self) -> int:
        return max(1, len(self.labels))


@dataclass(frozen=True)
class ModelSpec:
    method: str
    backbone: str  # hub name or local folder
    pooling: str
    normalize: bool  # pooled vectors L2-normalised before the heads (not token tasks' per-token states)
    max_length: int
    head_dropout: float
    prompt: PromptConfig  # params.yaml's prompt settings, held as they are (length, init, reparam, lora_*, ...)
    tasks: dict[str, HeadSpec]
    task_rank: int  # > 0: per-task low-rank factors on the shared deep prompt
    # lineage, empty when not applicable
    trained_as: str = ""  # prefix_tuning is stored folded, as method ptv2
    mixture: dict[str, Any] = field(default_factory=dict)  # the pretraining mixture's description
    adapted_from: dict[str, str] = field(default_factory=dict)  # path + weights_sha256 of the start prompt
    backbone_sha: str = ""  # sha256 of the backbone folder's files it was trained on ("" for a hub name)

    def with_tasks(self, tasks: dict[str, HeadSpec]) -> "ModelSpec":
        return dataclasses.replace(self, tasks=tasks)

    def folded(self) -> "ModelSpec":
        """The spec an artifact stores: Prefix-Tuning's MLP is folded into plain P-Tuning v2 prefixes."""
        if self.method != "prefix_tuning":
            return self
        return dataclasses.replace(self, method="ptv2", trained_as="prefix_tuning",
                                   prompt=dataclasses.replace(self.prompt, reparam=False))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict):
            raise SpecError(f"a model spec must be a mapping, got {type(data).__name__}")
        if "normalize" not in data:  # saved before the setting existed: its heads read raw pooled vectors
            data = {**data, "normalize": False}
        unknown, missing, _ = key_problems(cls, data)
        if unknown or missing:
            raise SpecError(f"model spec: unknown keys {unknown}, missing keys {missing}")
        tasks = data["tasks"]
        if not isinstance(tasks, dict) or not tasks:
            raise SpecError("model spec: 'tasks' must be a non-empty mapping")
        heads = {name: _strict(HeadSpec, h, f"task {name!r}") for name, h in tasks.items()}
        try:
            prompt = _strict(PromptConfig, data["prompt"], "prompt")
        except ConfigError as e:
            raise SpecError(f"model spec: prompt: {e}") from None
        return cls(**{**data, "prompt": prompt, "tasks": heads})


def _strict(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` after the one strict key rule (``ptv2.strict``); SpecError naming ``where`` otherwise."""
    bad = key_problems(cls, data) if isinstance(data, dict) else ([], [], [])
    if not isinstance(data, dict) or bad[0] or bad[1]:
        raise SpecError(f"model spec: {where}: unknown keys {bad[0]}, missing keys {bad[1]}")
    return cls(**data)
