"""One training loop for every method and for single- or multi-task training.

``fit`` takes encoded splits per task and a *planner* that lists an epoch's batches as
(task, row indices): single-task runs plan length-grouped batches of one task, multi-task runs
plan a sampled mixture (ptv2.data.mixture). Only parameters with ``requires_grad`` reach AdamW (a regression
head's on its labels' scale: ptv2.training.units).
Each epoch ends with an evaluation on the carved ``val`` split, the best model is saved, and a
checkpoint lets a killed run resume to the same result.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ptv2.config import TrainConfig
from ptv2.data.collate import Collator, length_grouped_batches
from ptv2.data.mixture import Plan
from ptv2.errors import ConfigError
from ptv2.evidence import paired_permutation, scale_free, too_few
from ptv2.host import affinity_cpus, quota_threads
from ptv2.model.prompted import PromptedModel
from ptv2.training.artifacts import save_adapter
from ptv2.training.checkpoint import resume, save_checkpoint
from ptv2.training.evaluate import labelled, predictions
from ptv2.training.metrics import compute, scorer
from ptv2.training.fingerprint import learning_rate
from ptv2.training.probe import fit_heads
from ptv2.training.splits import Split
from ptv2.training.units import label_sd, param_groups
from ptv2.training.speed import autocast, bf16_attention, bf16_speedup, compiled, use_bf16

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_score: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    main: bool = True  # this process writes (rank 0 of a data-parallel group, or the only one)
    precision: str = "fp32"  # what the training forwards ran in


def single_task_planner(task: str, lengths: list[int], batch_size: int, group: bool) -> Callable[[torch.Generator], Plan]:
    def plan(g: torch.Generator) -> Plan:
        return [[(task, b)] for b in length_grouped_batches(lengths, batch_size, g, group)]

    return plan


def make_device(cfg: TrainConfig, multi_task: bool = False):
    """An ``accelerate`` Accelerator: GPU when there is one, CPU otherwise (autocast: ``speed.autocast``); under ``torchrun`` / ``accelerate launch`` one process
    of a data-parallel group (gloo on CPU, NCCL on GPU). With several tasks, the heads of tasks absent from a
    batch get no gradient: DDP must look for them."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    # the rendezvous waits for every rank without a word (up to 30 min where a peer never comes)
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):
        log.info("rank %s of %s: joining the group at %s:%s (waits for the other ranks)", os.environ.get("RANK", "?"),
                 os.environ["WORLD_SIZE"], os.environ.get("MASTER_ADDR", "?"), os.environ.get("MASTER_PORT", "?"))
    return Accelerator(cpu=cpu, mixed_precision="no",
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=multi_task)])


def check_device(cfg: TrainConfig, local: int | None = None) -> None:
    """``device: cuda`` on a machine without CUDA is a config error, not a quiet CPU run; so are more
    data-parallel processes on a node (``local``; default: torchrun's LOCAL_WORLD_SIZE) than it has GPUs (NCCL
    gives each process a GPU of its own) or, on CPU, cores (64 on these 2 cores: 64 model copies, past the memory;
    two are always allowed)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but this machine has no CUDA GPU (torch.cuda.is_available() "
                          "is False); set train.device: auto (GPU when present) or cpu")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if local is None else local
    if cfg.device != "cpu" and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if local > gpus:
            raise ConfigError(f"{local} processes on this node but {gpus} CUDA GPU(s) for train.device = "
                              f"'{cfg.device}': start at most one per GPU (torchrun --nproc_per_node={gpus}), "
                              "or set train.device: cpu")
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if local > max(2, cores):  # two always: the gloo pair that tests data parallelism anywhere
        raise ConfigError(f"{local} data-parallel processes on this node but {cores} CPU core(s) to run them: set "
                          f"train.processes to at most {max(2, cores)}")


def _set_threads(num_threads: int) -> None:
    """torch's CPU threads: ``train.num_threads``; else, where torch (blind to CPU quotas: a container's --cpus, a
    Kubernetes limit) would run more than a quota pays for, the quota's whole CPUs. An OMP_NUM_THREADS above the
    CPUs this process has (a setting from another machine) is said: its threads would wait on each other."""
    if num_threads:
        torch.set_num_threads(num_threads)
        return
    omp, quota = os.environ.get("OMP_NUM_THREADS", ""), quota_threads()
    cpus = quota or affinity_cpus()
    if omp.isdigit() and int(omp) > cpus:
        log.warning("OMP_NUM_THREADS=%s runs more torch threads than the %d CPU(s) this process has: unset it, or "
                    "set train.num_threads", omp, cpus)
    elif not omp and quota and quota < torch.get_num_threads():
        log.info("torch threads %d -> %d: this process's CPU quota pays for %d CPU(s) (train.num_threads overrides)",
                 torch.get_num_threads(), quota, quota)
        torch.set_num_threads(quota)


def shard(idx: list[int], rank: int, world: int) -> tuple[list[int], float]:
    """This rank's rows of a planned batch part and the weight of its loss. Rows are dealt round-robin,
    so N processes see the same global batch as one; a rank left without rows runs the first row with
    weight 0 (every rank must run the same forward/backward sequence for DDP's all-reduce)."""
    mine = idx[rank::world]
    return (mine, float(len(mine))) if mine else (idx[:1], 0.0)


def _schedule(opt: torch.optim.Optimizer, total: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total * warmup_ratio))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))


def score_of(metrics_by_task: dict[str, dict[str, float]], main: dict[str, str]) -> float:
    """Selection score: mean over tasks of each task's first metric."""
    return sum(metrics_by_task[t][main[t]] for t in metrics_by_task) / len(metrics_by_task)


def fit(model: PromptedModel, train: dict[str, Split], val: dict[str, Split], planner: Callable[[torch.Generator], Plan],
        cfg: TrainConfig, seed: int, pad_id: int, out_dir: str | Path, epochs: int, fingerprint: str,
        on_log: Callable[[dict[str, Any]], None] | None = None, fit_tasks: list[str] | None = None,
        fit_rows: int = 0) -> TrainResult:
    """Train ``epochs``; the best model (by ``val``) goes to ``out_dir/model`` with ``model.spec``;
    ``out_dir/checkpoint`` resumes a killed run when its ``fingerprint`` (the run's key) is the same.
    ``fit_tasks`` (with ``cfg.head_init`` fit): heads fitted on the step-0 features first; that model is
    epoch 0 of the history and the one to beat (``epochs`` 0: it is the result, the frozen baseline);
    ``fit_rows`` > 0: on at most that many train rows per task."""
    out_dir = Path(out_dir)
    _set_threads(cfg.num_threads)
    acc = make_device(cfg, multi_task=len(train) > 1)
    sd = label_sd(model, train)
    opt = torch.optim.AdamW(param_groups(model, sd, learning_rate(cfg), cfg.weight_decay))
    steps_per_epoch = math.ceil(len(planner(torch.Generator().manual_seed(seed))) / cfg.grad_accum)
    sched = _schedule(opt, steps_per_epoch * epochs, cfg.warmup_ratio)
    model, opt = acc.prepare(model, opt)
    core = acc.unwrap_model(model)  # attributes and state dict names live on the unwrapped module (DDP wraps it)
    _log_processes(acc, cfg.batch_size)
    state = resume(out_dir / "checkpoint", core, opt, sched, fingerprint)
    collators = {t: Collator(pad_id, core.task_types[t]) for t in train}
    bf16 = _precision(cfg, acc, core, on_log) if epochs > state["epoch"] and not state.get("stopped") else False
    main = {t: s.metrics[0] for t, s in val.items()}
    t0 = time.perf_counter() - state["seconds"]
    if cfg.head_init == "fit" and fit_tasks is not None and not state["history"]:
        _step0(core, train, val, fit_tasks, cfg, pad_id, acc, out_dir, state, main, fingerprint, opt, sched, on_log,
               fit_rows, seed)
    if len(val) == 1 and epochs > 0 and (why := too_few(len(next(iter(val.values())).feats), cfg.select_alpha)):
        log.warning("val has %s, so step 0 stays the model whatever the training does: give it more rows "
                    "(train.val_fraction, train.val_max, or the task's files.val), or set train.select_alpha: 1", why)
    # an early-stopped run is finished: rerunning it must not train another epoch
    for epoch in range(epochs + 1 if state.get("stopped") else state["epoch"] + 1, epochs + 1):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        torch.manual_seed(seed * 1000 + epoch)  # dropout: same stream after a resume
        with compiled(core.backbone, cfg.compile), bf16_attention(core.backbone, acc.device, bf16):
            loss = _run_epoch(model, opt, sched, acc, planner(g), train, collators, cfg, epoch, epochs, on_log, bf16,
                              {t: s * s for t, s in sd.items()})
        val_metrics, preds = _validate(core, val, pad_id, cfg.eval_batch_size, acc.device)
        score = score_of(val_metrics, main)
        p = _p_vs_step0(state, preds, val, cfg) if len(val) == 1 else None
        diverged = not math.isfinite(loss)  # NaN weights: CoSENT at scale 1e300 read val pearson 100.00 (session 34)
        row = {"epoch": epoch, "train_loss": None if diverged else loss, "val_score": score, "val": val_metrics,
               "p_vs_step0": p, **({"diverged": True} if diverged else {})}
        state["history"].append(row)
        log.info("epoch %d/%d  loss %.4f  val %.2f%s", epoch, epochs, loss, score,
                 "" if p is None else f"  (p = {p:.3f} vs step 0)")
        if on_log:
            on_log(row)
        improved = after_epoch(state, epoch, score, p, cfg.select_alpha, cfg.patience, diverged)  # same on every rank
        state["seconds"] = time.perf_counter() - t0
        if acc.is_main_process:  # one writer; the others wait so a resume always finds a whole checkpoint
            if improved:
                save_adapter(out_dir / "model", core.trainable_state(), core.spec.folded())
            save_checkpoint(out_dir / "checkpoint", core, opt, sched, state, fingerprint)
        acc.wait_for_everyone()
        if diverged:
            log.warning("epoch %d: training diverged (loss %s); stopped, the model kept is epoch %d. Lower the "
                        "learning rate (train.lr) or the loss's scale", epoch, loss, state["best_epoch"])
            break
        if state["stopped"]:
            log.info("early stop: no new best val score for %d epochs", cfg.patience)
            break
    return TrainResult(state["best_score"], state["best_epoch"], state["epoch"], state["history"], state["seconds"],
                       acc.is_main_process, "bf16" if bf16 else "fp32")


def _precision(cfg: TrainConfig, acc: Any, core: PromptedModel, on_log) -> bool:
    """Whether this run trains under bf16 autocast: the main process decides (measuring this machine when
    ``train.precision`` is auto), every data-parallel process follows it; ``on_log`` hears the choice."""
    bf16 = acc.is_main_process and use_bf16(cfg.precision, cuda=acc.device.type == "cuda",
                                            speedup=lambda: bf16_speedup(core.backbone))
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        bf16 = broadcast_object_list([bf16], from_process=0)[0]
    if on_log:
        on_log({"precision": "bf16" if bf16 else "fp32"})
    return bf16


def _log_processes(acc: Any, batch_size: int) -> None:
    if acc.num_processes > 1 and acc.is_main_process:
        log.info("training on %d data-parallel processes (%s, %s); global batch %d, about %d rows each",
                 acc.num_processes, acc.distributed_type, acc.device, batch_size, -(-batch_size // acc.num_processes))


def _run_epoch(model, opt, sched, acc, plan: Plan, train: dict[str, Split], collators, cfg: TrainConfig,
               epoch: int, epochs: int, on_log, bf16: bool, var: dict[str, float]) -> float:
    """One epoch of ``plan``; ``var``: task -> the variance its loss is divided by (an MSE in units of its labels'
    variance, ``training.units``; 1 for the scale-free losses)."""
    model.train()
    total, n = 0.0, 0
    bar = tqdm(plan, desc=f"epoch {epoch}/{epochs}", leave=False, mininterval=1.0, dynamic_ncols=True,
               disable=not acc.is_main_process)
    core = acc.unwrap_model(model)
    rank, world = acc.process_index, acc.num_processes
    used: set[str] = set()  # tasks whose heads took part since the last optimizer step
    for i, parts in enumerate(bar):
        used |= {task for task, _ in parts}
        rows = sum(len(idx) for _, idx in parts)
        loss_value = 0.0
        for task, idx in parts:  # a mixed batch: one forward per task, gradients summed before the step
            mine, n_mine = shard(idx, rank, world)
            batch = {k: v.to(acc.device) for k, v in collators[task]([train[task].feats[j] for j in mine]).items()}
            with autocast(acc.device, bf16):
                logits = model(batch, task)
            # the row-weighted mean over the *global* batch: DDP averages gradients over ranks, hence * world
            loss = core.loss(task, logits, batch["labels"], cfg.cosent_scale) / var[task] * (n_mine / rows) * world
            acc.backward(loss / cfg.grad_accum)
            loss_value += loss.item() / world
        if (i + 1) % cfg.grad_accum == 0 or i + 1 == len(plan):
            _drop_unused_head_grads(core, used)
            used = set()
            opt.step()
            sched.step()
            if core.method == "adalora":  # AdaLoRA re-allocates ranks on its schedule
                core.backbone.base_model.update_and_allocate(sched.last_epoch)
            opt.zero_grad(set_to_none=True)
        total, n = total + loss_value, n + 1
        if i % 20 == 0:
            bar.set_postfix(loss=f"{total / n:.4f}")
            if on_log:
                on_log({"step_loss": loss_value, "epoch": epoch, "step": i})
    if world > 1:  # each rank holds its share of every batch's loss: the sum is the global loss
        total = float(acc.reduce(torch.tensor(total, device=acc.device, dtype=torch.float64), "sum"))
    return total / max(1, n)


def after_epoch(state: dict[str, Any], epoch: int, score: float, p: float | None, alpha: float,
                patience: int, diverged: bool = False) -> bool:
    """Book an epoch's val ``score`` (``p``: its paired test against step 0, None for a mixture) into
    ``state``; True when it replaces the kept model. Two questions, two rules: the model kept is the best
    epoch that beats step 0 at ``alpha``; training stops after ``patience`` epochs with no new best val score
    at all (still rising but not yet significant is still learning: SST-2's first significant epoch is the 4th).
    A ``diverged`` epoch (its training loss not finite) is never kept and ends the training."""
    improved = not diverged and score > state["best_score"] and (p is None or p <= alpha)
    if improved:
        state.update(best_score=score, best_epoch=epoch)
    top = state.get("top_score", state["best_score"])  # a checkpoint from before top_score: its best score
    state["top_score"] = max(score, top)
    state["bad_epochs"] = 0 if score > top else state["bad_epochs"] + 1
    state["epoch"] = epoch
    state["stopped"] = diverged or bool(patience and state["bad_epochs"] >= patience)
    return improved


def _step0(core: PromptedModel, train: dict[str, Split], val: dict[str, Split], tasks: list[str], cfg: TrainConfig,
           pad_id: int, acc, out_dir: Path, state: dict[str, Any], main: dict[str, str], fingerprint: str, opt, sched,
           on_log, fit_rows: int = 0, seed: int = 0) -> None:
    """LP-FT's first step: fit the heads on the untrained model's features, score val (epoch 0 of the
    history) and save it as the best model so far: training must beat it on val to replace it. ``fit_rows``
    > 0: heads fitted on a ``seed``-ed sample of at most that many train rows per task."""
    fitted, val_logits = fit_heads(core, tasks, train, val, pad_id, cfg.eval_batch_size, cfg.head_l2, acc.device,
                                   max_rows=fit_rows, seed=seed)
    val_metrics, preds = _validate(core, val, pad_id, cfg.eval_batch_size, acc.device, val_logits)
    score = score_of(val_metrics, main)
    row = {"epoch": 0, "train_loss": None, "val_score": score, "val": val_metrics, "fitted_heads": fitted}
    state["history"].append(row)
    # step0_val is kept in the checkpoint: a resume tests against the same predictions
    state.update(best_score=score, top_score=score, best_epoch=0, step0_val={t: pred for t, (pred, _) in preds.items()})
    log.info("step 0 (%s): val %.2f", f"heads {', '.join(tasks)} fitted on the untrained features" if tasks
             else "the start as given: every head copied", score)
    if on_log:
        on_log(row)
    if acc.is_main_process:
        save_adapter(out_dir / "model", core.trainable_state(), core.spec.folded())
        save_checkpoint(out_dir / "checkpoint", core, opt, sched, state, fingerprint)
    acc.wait_for_everyone()


def _validate(core: PromptedModel, val: dict[str, Split], pad_id: int, batch_size: int, device,
              known: dict[str, list[torch.Tensor]] | None = None) -> tuple[dict[str, dict[str, float]], dict[str, list[Any]]]:
    """(task -> val metrics, task -> (val predictions, gold)); ``known``: task -> val logits already
    computed by the model as it is (the fitted heads'), used instead of running val again."""
    known = known or {}
    got = {t: labelled(core.task_types[t], known[t], s.feats, s.ds, s.labels) if t in known
           else predictions(core, t, s.feats, s.ds, s.labels, pad_id, batch_size, device) for t, s in val.items()}
    return {t: compute(val[t].metrics, *got[t]) for t in val}, got


def _p_vs_step0(state: dict[str, Any], preds: dict[str, tuple[list[Any], list[Any]]], val: dict[str, Split],
                cfg: TrainConfig) -> float | None:
    """One-sided p-value of "this epoch beats step 0 on val" by the paired permutation test on the task's
    selection metric (None without a step 0). On CB's 25 val examples an epoch 3 examples up is chance
    (p ~ 0.2), and such epochs lost to the frozen baseline on dev in 3 of 3 seeds (reports/frozen_bar_seeds.md)."""
    before = state.get("step0_val")
    if not before:
        return None
    (t, s), = val.items()
    pred, gold = preds[t]
    _, p = paired_permutation(scorer(s.metrics[0]), gold, pred, before[t], samples=cfg.select_samples, seed=0,
                              standardize=scale_free(s.metrics[0]))
    return round(p, 4)


def _drop_unused_head_grads(core: PromptedModel, used: set[str]) -> None:
    """Heads of tasks absent from the step keep ``grad = None`` (AdamW then skips them, no weight decay or
    momentum step): DDP would otherwise hand them all-reduced zeros and N processes would drift from one."""
    for task, head in core.heads.items():
        if task not in used:
            for prm in head.parameters():
                prm.grad = None

