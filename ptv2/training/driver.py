"""The one training driver: single-task training, mixture pretraining and adaptation.

``train`` loads the tasks' data, builds the model from the config's ModelSpec (optionally starting
from a pretrained folder, unless that run kept its step 0: ``_start``), encodes, plans batches (length-grouped for one task, a sampled mixture
for pretraining), fits, reloads the best model, evaluates the report splits and writes
``<out>/metrics.json``. A finished run with the same key is returned as is (rerunning is a no-op).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ptv2.config import Config
from ptv2.data.mixture import mixture_planner, mixture_rates
from ptv2.data.tasks import TaskData, load_task_data
from ptv2.errors import ArtifactError, ConfigError
from ptv2.files import check_replaceable, output_lock, write_json
from ptv2.model.backbone import load_backbone, own_pooling, position_limit
from ptv2.model.prompted import count_parameters
from ptv2.model.spec import FROZEN, ModelSpec
from ptv2.procenv import is_main_rank
from ptv2.training import RUN_ID
from ptv2.training.artifacts import is_model_dir, read_spec, verify_model_dir, weights_sha
from ptv2.training.build import check_pretrained, head_spec, init_from_pretrained, load_model, model_from_spec, \
    reusable_backbone, spec_from_config
from ptv2.training.checkpoint import is_checkpoint
from ptv2.training.evaluate import evaluate
from ptv2.training.fingerprint import run_key
from ptv2.training.loop import check_device, fit, single_task_planner
from ptv2.training.splits import Split, encode

log = logging.getLogger(__name__)
RECORD = "metrics.json"  # a run's record, beside its model/ folder: what finished runs and kept epochs are read from
RUN_ENTRIES = ("model", "checkpoint", RECORD, RUN_ID)  # all a run folder holds, besides hidden temp folders
# The frozen baseline's L2 grid for its fitted heads, fixed so that no setting weakens the bar: with
# train.head_l2 [1000] its CB head fell to the class prior (dev 41.07 against 78.57), while a trained model under the
# same setting, its head then trained by gradient, reached 76.79 and beat the crippled bar by the paired test.
# Not wider: its L2 is chosen on val loss, and the class prior's (CB val loss 0.92) wins over 1e-2's (0.98).
FROZEN_HEAD_L2 = (1e-5, 1e-4, 1e-3, 1e-2)

# The frozen baseline trains no epoch: its rate and epoch count are placeholders, fixed so that a project that
# trains another method alone (train.epochs without 'ptv2') still gets its bar, and no rate moves its run key
_NO_TRAINING = {"lr": {"ptv2": 1e-3}, "epochs": {"ptv2": 1}}


@dataclass
class TrainRun:
    """A finished run: its ``metrics.json`` record and model folder."""

    record: dict[str, Any]
    model_dir: Path
    main: bool = True  # False on the other ranks of a data-parallel run: rank 0 holds the results

    @property
    def metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """split -> task -> metric -> value (val: the best epoch's; dev/test: the saved model's)."""
        return self.record["metrics"]

    @property
    def trainable(self) -> int:
        return self.record["trainable_params"]

    @property
    def total(self) -> int:
        return self.record["total_params"]

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.record["history"]


def finished(out_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The metrics record of a finished run with this key in ``out_dir``, else None (also for a record that
    cannot be read, or a model folder that fails its manifest: the run is trained again and rewrites them,
    where a damaged record was a JSONDecodeError)."""
    path = Path(out_dir) / RECORD
    if not (path.is_file() and (Path(out_dir) / "model").is_dir()):
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        log.warning("%s cannot be read (%s): the run is trained again", path, e)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        log.warning("%s is not a run's record: the run is trained again", path)
        return None
    if record.get("key") != key:
        return None
    try:  # its model is what a reuse hands on (an adaptation's start, a table's artifact): damaged, it was an
        verify_model_dir(Path(out_dir) / "model")  # adaptation's checksum error, "retrain" with no way named
    except ArtifactError as e:
        log.warning("%s holds a damaged model (%s): the run is trained again", out_dir, str(e).split("; ")[0])
        return None
    return record


def train(cfg: Config, tasks: list[str], out_dir: str | Path, mixture: bool = False,
          init_from: str | Path | None = None, report_splits: tuple[str, ...] = ("dev",),
          on_log: Callable[[dict[str, Any]], None] | None = None, frozen: bool = False) -> TrainRun:
    """Train ``cfg.train.method`` on ``tasks`` (one, unless ``mixture``); select on ``val``; report
    ``report_splits``. ``init_from``: a pretrained model folder to start from (adaptation).
    ``frozen``: the frozen-backbone baseline instead: no prompt, heads fitted on the backbone's own
    features (``frozen_config``), no training epoch."""
    if frozen:
        cfg = frozen_config(cfg)
    if not tasks:
        raise ConfigError("no task to train: name one (--task) or list the mixture in pretrain.tasks")
    if not mixture and len(tasks) != 1:
        raise ConfigError(f"single-task training takes one task, got {tasks}; pretrain a mixture instead")
    check_device(cfg.train)
    for t in tasks:
        cfg.task(t)  # unknown names fail here, before any work
    out_dir = Path(out_dir)
    key = run_key(cfg, tasks, mixture, init_from, frozen)
    done = finished(out_dir, key)
    if done is not None:
        log.info("%s is already trained with this config (key %s): nothing to do", out_dir, key)
        return TrainRun(done, out_dir / "model")
    check_positions(cfg)
    check_run_folder(out_dir)
    check_replaceable(out_dir / "model", is_model_dir, "a ptv2 model folder")  # before training, not after
    check_replaceable(out_dir / "checkpoint", is_checkpoint, "a training checkpoint")
    # one writer per output folder; under torchrun rank 0 holds it for the group (the others only read)
    main = is_main_rank()
    with output_lock(out_dir) if main else contextlib.nullcontext():
        if main:
            _drop_stale_record(out_dir)
        data = {t: load_task_data(cfg, t) for t in tasks}  # bad data fails here, before the model loads
        return _train(cfg, data, out_dir, mixture, init_from, report_splits, on_log, key, frozen)


def _drop_stale_record(out_dir: Path) -> None:
    """A run about to replace ``out_dir``'s model makes the record there (another config's, or a damaged one)
    stale: removed before any write, so a run stopped midway (Ctrl-C, SIGTERM, a crash) leaves no record. Kept,
    a later run of the record's config found it and took the stopped run's model for its own: "already trained
    with this config: nothing to do" over a model with a prompt of another length (session 41)."""
    with contextlib.suppress(FileNotFoundError):
        (out_dir / RECORD).unlink()


def check_run_folder(out_dir: Path) -> None:
    """``out_dir`` is new, empty or a run folder, else one ConfigError: `--out .`, `--out data` or `--out /` wrote
    model/, checkpoint/ and metrics.json among a project's, a data folder's or the system's own files."""
    if not out_dir.is_dir():  # new (a file there is check_replaceable's to name)
        return
    other = sorted(p.name for p in out_dir.iterdir() if p.name not in RUN_ENTRIES and not p.name.startswith("."))
    if other:
        shown = ", ".join(other[:4]) + (f" and {len(other) - 4} more" if len(other) > 4 else "")
        raise ConfigError(f"run folder {str(out_dir)!r} holds other files ({shown}): a run writes its "
                          f"{', '.join(RUN_ENTRIES)} there; pass a new or empty folder (--out)")


def frozen_config(cfg: Config) -> Config:
    """The frozen-backbone baseline's settings: method ptv2 with a prompt of length 0 (the plain backbone),
    heads fitted on its features (LP-FT's first step, and nothing after it). The bar is the backbone's own
    embedding of each text, whatever the trained models are set to: pair tasks bi-encoded (a head on
    [u, v, |u-v|, u*v]; for similarity the cosine), pooled as the backbone says its embeddings are pooled
    (``own_pooling``; else ``backbone.pooling``), its heads' L2 chosen from ``FROZEN_HEAD_L2`` whatever
    ``train.head_l2`` says. Cross-encoded, STS-B's frozen head scored 44.3 dev pearson, CLS-pooled 78.8, against the
    cosine of mean-pooled embeddings' 86.96: models far below it would have passed."""
    tasks = {n: dataclasses.replace(t, pair_encoding="") for n, t in cfg.tasks.items()}
    own = dataclasses.replace(cfg.backbone, pair_encoding="bi",
                              pooling=own_pooling(cfg.backbone.name) or cfg.backbone.pooling)
    return dataclasses.replace(cfg, tasks=tasks, backbone=own,
                               prompt=dataclasses.replace(cfg.prompt, length=0, reparam=False),
                               train=dataclasses.replace(cfg.train, method="ptv2", head_init="fit",
                                                         head_l2=list(FROZEN_HEAD_L2), **_NO_TRAINING))


def _train(cfg: Config, data: dict[str, TaskData], out_dir: Path, mixture: bool, init_from: str | Path | None,
           report_splits: tuple[str, ...], on_log: Callable[[dict[str, Any]], None] | None, key: str,
           frozen: bool = False) -> TrainRun:
    tasks = list(data)
    backbone, tok = load_backbone(cfg.backbone.name)
    spec = spec_from_config(cfg, {t: head_spec(cfg, d) for t, d in data.items()}, cfg.pretrain.task_rank if mixture else 0)
    L = cfg.backbone.max_length
    pe = {t: h.pair_encoding for t, h in spec.tasks.items()}
    train_s = {t: encode(d, "train", tok, L, pe[t]) for t, d in data.items()}
    val_s = {t: encode(d, "val", tok, L, pe[t]) for t, d in data.items()}
    planner, epochs, extra = _plan(cfg, train_s, mixture, init_from is not None)
    epochs = 0 if frozen else epochs
    if mixture:
        spec = dataclasses.replace(spec, mixture=extra["mixture"])
    start = _start(spec, init_from)
    if start is not None:  # lineage in the artifact
        spec = dataclasses.replace(spec, adapted_from={"path": str(start), "weights_sha256": weights_sha(start)})
    steps = epochs * len(planner(_generator(cfg.seed))) // cfg.train.grad_accum
    quiet = sample_ids(train_s) if start is None else None  # else copied weights
    model, tok = model_from_spec(spec, backbone, tok, seed=cfg.seed, total_steps=steps, quiet=quiet)
    copied: list[str] = []
    if start is not None:
        copied = init_from_pretrained(model, start, tasks[0], cfg.adapt.init_head)
        log.info("adapting from %s: %d tensors copied (head %s)", start, len(copied),
                 "copied" if any(k.startswith("heads.") for k in copied) else "fresh")
    fit_tasks = [t for t in tasks if not any(k.startswith(f"heads.{t}.") for k in copied)]  # a copied head stays
    trainable, total = count_parameters(model)
    loaded_mb = rss_mb()
    log.info("%s on %s: %s train rows; %d of %d params trainable (%.3f%%)",
             "the frozen baseline (heads only)" if frozen else cfg.train.method, tasks,
             {t: len(s.feats) for t, s in train_s.items()}, trainable, total, 100 * trainable / total)
    # a mixture fits its heads on at most its cap of each task's rows: 3.2 of its 8.5 minutes went to fitting on
    # every train row (reports/pipeline_run_s8.md), several times what an epoch samples
    result = fit(model, train_s, val_s, planner, cfg.train, cfg.seed, tok.pad_token_id, out_dir, epochs, key, on_log,
                 fit_tasks, cfg.pretrain.cap if mixture else 0)
    if not result.main:
        return TrainRun({"tasks": tasks, "key": key}, out_dir / "model", main=False)
    best, _, _ = load_model(out_dir / "model", backbone=reusable_backbone(model), tokenizer=tok)
    metrics: dict[str, dict[str, dict[str, float]]] = {
        "val": next(r["val"] for r in result.history if r["epoch"] == result.best_epoch)}
    for split in report_splits:
        for t, d in data.items():
            if split in d.splits:
                s = encode(d, split, tok, L, pe[t])
                metrics.setdefault(split, {})[t] = evaluate(best, t, s.feats, s.ds, s.labels, s.metrics,
                                                            tok.pad_token_id, cfg.train.eval_batch_size)
    record = {"tasks": tasks, "method": FROZEN if frozen else cfg.train.method, "key": key, "metrics": metrics, **extra,
              "init_from": str(start or ""), "start": _start_name(init_from, start),
              "trainable_params": trainable, "total_params": total,
              "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
              "train_seconds": round(result.seconds, 1), "precision": result.precision, "history": result.history, "loaded_rss_mb": loaded_mb,
              "peak_rss_mb": rss_mb("VmHWM"),
              "artifact_bytes": sum(f.stat().st_size for f in (out_dir / "model").iterdir())}
    write_json(out_dir / RECORD, record)
    return TrainRun(record, out_dir / "model")


def kept_step0(model_dir: str | Path) -> bool:
    """Whether the run that saved ``model_dir`` kept its step 0 (its record beside the folder says best
    epoch 0): its prompt is then the start it was given, nothing it learned. No readable record: False."""
    try:
        return json.loads((Path(model_dir).parent / RECORD).read_text()).get("best_epoch") == 0
    except (OSError, ValueError, AttributeError):
        return False


def _start(spec: ModelSpec, init_from: str | Path | None) -> Path | None:
    """The folder whose weights start the model, or None for its own start. A pretrained prompt that kept
    its step 0 learned nothing from the mixture: the task starts from its own start instead (its rows'
    quiet prompt, its own ``quiet_margin``, heads fitted on its features), as ``ptv2 train`` would; the
    pretrained folder must still fit the settings."""
    if init_from is None:
        return None
    if not kept_step0(init_from):
        return Path(init_from)
    check_pretrained(spec, read_spec(init_from), init_from)
    log.info("%s kept its step 0 (the mixture taught its prompt nothing): starting from this task's own start",
             init_from)
    return None


def _start_name(init_from: str | Path | None, start: Path | None) -> str:
    """The record's word for where training started."""
    return "pretrained" if start is not None else ("own (pretraining kept its step 0)" if init_from else "own")


def sample_ids(train: dict[str, Split], n: int = 64) -> list[list[int]]:
    """Token ids of the first ``n`` encoder rows of the training data, over the tasks (a bi-encoded pair or a
    multiple-choice example holds several rows): what ``prompt.init: quiet`` measures each layer's mean query on."""
    rows: list[list[int]] = []
    for s in train.values():
        for f in s.feats[:n]:
            ids = f["input_ids"]
            rows += [list(r) for r in ids] if ids and isinstance(ids[0], list) else [list(ids)]
    return rows[:n]


def check_positions(cfg: Config) -> None:
    """``backbone.max_length`` must fit the backbone's position table, or training works and the first
    long dev text crashes."""
    limit = position_limit(cfg.backbone.name)
    if limit is not None and cfg.backbone.max_length > limit:
        raise ConfigError(f"backbone.max_length = {cfg.backbone.max_length} is more than the {limit} positions of "
                          f"backbone {cfg.backbone.name!r}; set backbone.max_length <= {limit}")


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def _plan(cfg: Config, train_s: dict[str, Split], mixture: bool, adapting: bool):
    """(planner, epochs, extra record fields): length-grouped batches of one task, or the sampled mixture."""
    t = cfg.train
    if not mixture:
        (name, split), = train_s.items()
        return (single_task_planner(name, split.lengths, t.batch_size, t.length_grouping),
                cfg.epochs_for(name, adapting), {})
    p = cfg.pretrain
    if p.task_rank and (t.method != "ptv2" or cfg.prompt.reparam):
        raise ConfigError(f"pretrain.task_rank = {p.task_rank} needs train.method ptv2 without prompt.reparam "
                          f"(got {t.method}, reparam {cfg.prompt.reparam}); set pretrain.task_rank: 0")
    sizes = {name: len(s.feats) for name, s in train_s.items()}
    rates = mixture_rates(sizes, p.strategy, p.cap, p.temperature, p.weights)
    capped = sum(min(n, p.cap) if p.cap else n for n in sizes.values())
    n_batches = p.batches_per_epoch or max(1, capped // t.batch_size)
    log.info("mixture %s: rates %s, %d batches/epoch", list(sizes), {k: round(r, 3) for k, r in rates.items()},
             n_batches)
    for name, r in rates.items():
        if r * n_batches * p.epochs < 1:  # e.g. a low temperature: the largest task takes every batch
            log.warning("mixture: task %s is drawn for about %.2g of %d batches in %d epochs (rate %.2g): the prompt "
                        "will hardly learn it; raise pretrain.temperature or pretrain.weights.%s", name,
                        r * n_batches * p.epochs, n_batches * p.epochs, p.epochs, r, name)
    planner = mixture_planner({name: s.lengths for name, s in train_s.items()}, t.batch_size, rates, n_batches,
                              t.length_grouping, mixed=p.batching == "mixed")
    desc = {"tasks": list(sizes), "sizes": sizes, "rates": rates, "strategy": p.strategy, "cap": p.cap,
            "temperature": p.temperature, "weights": p.weights, "batching": p.batching, "task_rank": p.task_rank}
    return planner, p.epochs, {"mixture": desc}


def pretrain(cfg: Config, out_dir: str | Path | None = None, tasks: list[str] | None = None,
             on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainRun:
    """Shared deep prompt + one head per task on the ``pretrain.tasks`` mixture (train splits only)."""
    return train(cfg, list(tasks or cfg.pretrain.tasks), out_dir or cfg.pretrain.out_dir, mixture=True, on_log=on_log)


def adapt(cfg: Config, task: str, pretrained: str | Path | None = None, out_dir: str | Path | None = None,
          on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainRun:
    """Tune ``task`` on its own data, starting from the pretrained prompt (and head if it has one)."""
    if pretrained is None and not (Path(cfg.pretrain.out_dir) / "model").exists():
        raise ArtifactError(f"no pretrained prompt at {str(Path(cfg.pretrain.out_dir) / 'model')!r} "
                            f"(pretrain.out_dir): run 'ptv2 pretrain' first, or pass --from <model folder>")
    pretrained = Path(pretrained or Path(cfg.pretrain.out_dir) / "model")
    return train(cfg, [task], out_dir or Path(cfg.adapt.out_dir) / task, init_from=pretrained, on_log=on_log)


def rss_mb(field: str = "VmRSS") -> float | None:
    """This process's resident memory (``VmHWM``: its peak so far) in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
