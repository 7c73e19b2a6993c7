"""The sections of params.yaml that run and ship trained models: tracking and the registry gate, the Prefect
flows, the ONNX export checks, serving limits (``schema.Config`` holds them; same rules: no defaults)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from ptv2.config.checks import _valid_cron, _valid_timezone
from ptv2.errors import check_value as _check

# a registered model's name: <registry_prefix><task> (a task name has at most 64 characters), multitask_model; at
# most 256 characters, the length of the name column of MLflow's SQL registry
REGISTERED_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
# the most random swaps of a paired permutation test (``train.select_samples``, ``tracking.permutation_samples``): a
# p-value resolution of 1e-6, ~26 s per test on 1,000 rows; each swap is a metric call, so 1e9 looked like a hang (7 h)
MAX_SWAPS = 1_000_000


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str
    registry_prefix: str  # registered model per task: <prefix><task>
    multitask_model: str  # the registered model serving every task's champion from one encoder
    promote_margin: float  # metric points the challenger must win by (in the paired test)
    promote_alpha: float  # level of the one-sided paired tests (vs baseline, vs champion, int8 vs fp32)
    permutation_samples: int  # random swaps of the paired permutation test

    def __post_init__(self) -> None:
        _check(0 < self.promote_alpha < 0.5, "promote_alpha", self.promote_alpha, "a level in (0, 0.5), e.g. 0.05")
        _check(100 <= self.permutation_samples <= MAX_SWAPS, "permutation_samples", self.permutation_samples,
               f"an integer in [100, {MAX_SWAPS}]")
        need = math.floor(1 / self.promote_alpha + 1e-9)  # the gate's smallest p is 1 / (samples + 1), below alpha
        _check(need <= MAX_SWAPS, "promote_alpha", self.promote_alpha,
               f"a level above {1 / (MAX_SWAPS + 1):.6g}: a smaller one needs over {MAX_SWAPS} swaps")
        _check(self.permutation_samples >= need, "permutation_samples", self.permutation_samples,
               f"at least {need} swaps: with fewer, no p-value falls below promote_alpha = {self.promote_alpha} and "
               f"the gate could never promote a model (or raise promote_alpha)")
        _check(self.promote_margin >= 0, "promote_margin", self.promote_margin, "a float >= 0 (metric points)")
        _check(0 < len(self.experiment.strip()) and len(self.experiment) <= 500, "experiment", self.experiment,
               "an MLflow experiment name of 1 to 500 characters")  # MLflow's own limit, met at the first run
        # MLflow refuses '/' and ':' in a registered model's name (at the promote stage, after the training), and
        # an '@' would make models:/NAME@ALIAS ambiguous: one plain word each, checked before any work
        _check(REGISTERED_NAME.fullmatch(self.multitask_model) is not None, "multitask_model", self.multitask_model,
               "a registered model name of 1 to 256 letters, digits, '_', '-' and '.'")
        _check(REGISTERED_NAME.fullmatch(self.registry_prefix + "x" * 64) is not None, "registry_prefix",
               self.registry_prefix, "at most 192 letters, digits, '_', '-' and '.' (a task name of up to 64 follows it)")

    def task_model(self, task: str) -> str:
        """The registered model that holds ``task``'s versions."""
        return f"{self.registry_prefix}{task}"


@dataclass(frozen=True)
class FlowsConfig:
    """Prefect: the retraining schedule and how the adapt fan-out runs."""

    retrain_cron: str
    timezone: str
    task_runner: Literal["thread", "dask", "ray"]  # dask/ray need prefect-dask / prefect-ray
    max_workers: int  # stale adapt@ stages run side by side on this many workers
    threads_per_worker: int  # math-library threads per worker (0 = library default)
    cluster_address: str  # an existing Dask scheduler / Ray cluster; "" = start a local one ($PTV2_CLUSTER wins)
    dvc_remote: str  # a DVC remote name: outputs are pushed there after a run ("" = none)
    retries: int
    retry_delay_s: int

    def __post_init__(self) -> None:
        _check(_valid_cron(self.retrain_cron), "retrain_cron", self.retrain_cron,
               "a 5-field cron string Prefect accepts, e.g. '0 3 * * *' (minute 0-59, hour 0-23)")
        _check(_valid_timezone(self.timezone), "timezone", self.timezone, "an IANA time zone such as 'UTC' or 'Europe/Paris'")
        _check(self.retries >= 0, "retries", self.retries, "an integer >= 0")
        _check(self.retry_delay_s >= 0, "retry_delay_s", self.retry_delay_s, "an integer >= 0")
        _check(self.max_workers >= 1, "max_workers", self.max_workers, "an integer >= 1")
        _check(self.threads_per_worker >= 0, "threads_per_worker", self.threads_per_worker, "an integer >= 0")


@dataclass(frozen=True)
class ExportConfig:
    """ONNX deployment: the parity gate a model must pass to be promoted, and the int8 checks (recorded per task)."""

    out_dir: str
    int8: bool
    parity_tol: float  # max |ORT - PyTorch| over logits, fp32
    parity_batch_sizes: list[int]
    parity_lengths: list[int]  # 0 = max_length
    int8_regression_tol: float  # regression: int8 and fp32 agree when within this (label units)
    checks_dir: str  # per-example dev predictions of each bundle (read by the promotion gate)
    frozen_dir: str  # the frozen baselines' bundle: the candidate served where no trained model beats it

    def __post_init__(self) -> None:
        _check(self.parity_tol > 0, "parity_tol", self.parity_tol, "a float > 0")
        _check(self.int8_regression_tol >= 0, "int8_regression_tol", self.int8_regression_tol, "a float >= 0")
        # an empty list checked no case and passed the parity gate; a 0 checked an empty batch, a negative was a
        # traceback from torch
        _check(len(self.parity_batch_sizes) >= 1 and all(1 <= b <= 1024 for b in self.parity_batch_sizes),
               "parity_batch_sizes", self.parity_batch_sizes, "a non-empty list of batch sizes in [1, 1024]")
        _check(len(self.parity_lengths) >= 1 and all(t >= 0 for t in self.parity_lengths), "parity_lengths",
               self.parity_lengths, "a non-empty list of token counts >= 0 (0 = backbone.max_length)")


@dataclass(frozen=True)
class ServingConfig:
    """Serving a bundle (``ptv2 predict`` on a bundle, the registered pyfunc model behind ``mlflow models serve``)."""

    micro_batch: int  # rows per onnxruntime run, sorted by length and padded to the longest in each
    max_rows: int  # a request with more rows is refused (HTTP 400)
    max_text_chars: int  # a text longer than this is refused (HTTP 400)
    max_request_chars: int  # all texts of a request together: what tokenizing it may cost (HTTP 400 above)
    max_request_tokens: int  # encoder tokens a request may need, bounded before tokenizing (HTTP 400 above)
    release_rows: int  # a request of more encoder rows gives its memory back after it (arena shrink, heap trim)
    int8: bool  # registered models serve encoder.int8.onnx, for the tasks int8_min_agreement lets it serve
    int8_min_agreement: float  # int8 serves a task whose export checks found this share of dev equal to fp32
    spinning: bool  # onnxruntime threads spin between ops: lower latency for a server that owns its cores
    int8_fallback_margin: float  # int8 classification rows with top-two probabilities closer than this: fp32

    def limits(self) -> dict[str, int]:
        return {"micro_batch": self.micro_batch, "max_rows": self.max_rows, "max_text_chars": self.max_text_chars,
                "max_request_chars": self.max_request_chars, "max_request_tokens": self.max_request_tokens,
                "release_rows": self.release_rows}

    def __post_init__(self) -> None:
        for name, value in self.limits().items():  # every limit is a count
            _check(value >= 1, name, value, "an integer >= 1")
        _check(0 <= self.int8_fallback_margin <= 1, "int8_fallback_margin", self.int8_fallback_margin,
               "a probability gap in [0, 1] (0 = never fall back to fp32)")
        _check(0 <= self.int8_min_agreement <= 1, "int8_min_agreement", self.int8_min_agreement,
               "a share in [0, 1] (0 = int8 serves every task its paired test does not find worse)")
