"""Heads fitted on frozen features (a linear probe): the start of LP-FT and the frozen-backbone baseline.

LP-FT (Kumar et al. 2022): a random head's gradients distort the features it reads before it is any
good, so each head is first fitted, in closed form as far as L-BFGS goes, on the features the model gives
*before* training (the step-0 prompt; none at all for the frozen baseline). The L2 strength is chosen on
the ``val`` split carved from train (by the task loss), never on dev.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from ptv2.data.collate import IGNORE, Collator, eval_batches, feature_length
from ptv2.model.heads import Head, pool, task_loss
from ptv2.model.prompted import PromptedModel

log = logging.getLogger(__name__)


@torch.no_grad()
def head_inputs(model: PromptedModel, task: str, feats: list[dict[str, Any]], pad_id: int, batch_size: int,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y): what ``task``'s linear layer reads and the labels. X is (N, d) or (N, C, d) for multiple
    choice, rows in the order of ``feats``; or (N_tok, d) over the labelled tokens of a token task; y (N,)
    or (N_tok,)."""
    was_training = model.training
    model.eval()
    head: Head = model.heads[task]
    collate = Collator(pad_id, model.task_types[task])
    xs, ys, order = [], [], []
    for idx in eval_batches([feature_length(f) for f in feats], batch_size):
        order += idx
        batch = {k: v.to(device) for k, v in collate([feats[i] for i in idx]).items()}
        hidden, pooled = model.hidden(batch, task)
        if head.kind == "token":
            keep = batch["labels"] != IGNORE
            xs.append(hidden[keep].float().cpu())
            ys.append(batch["labels"][keep].cpu())
            continue
        v = pool(hidden, batch["attention_mask"], model.pooling, pooled, model.spec.normalize)
        x = head.features(v).float().cpu()
        xs.append(x.view(len(idx), -1, x.shape[-1]) if head.kind == "choice" else x)
        ys.append(batch["labels"].cpu())
    model.train(was_training)
    X, y = torch.cat(xs), torch.cat(ys)
    if head.kind == "token":
        return X, y
    back = torch.tensor(order).argsort()  # the inverse permutation: each input's row in the batches
    return X[back], y[back]


def _logits(task_type: str, X: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    y = X @ w.T + b  # (N, out) or (N, C, 1)
    return y.squeeze(-1) if task_type in ("multiple_choice", "regression") else y


def _loss(task_type: str, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lg = _logits(task_type, X, w, b)
    if task_type == "token_classification":  # (N_tok, n) over labelled tokens only
        return torch.nn.functional.cross_entropy(lg, y)
    return task_loss(task_type, lg, y)


def fit_linear(task_type: str, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
               shape: tuple[int, int], l2_grid: Sequence[float], iters: int = 200) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(weight (out, d), bias (out,), chosen L2, its val loss): minimise the task loss on ``train`` plus
    l2 * |W|^2 by L-BFGS for each strength of ``l2_grid``; keep the one with the lowest ``val`` loss. Regression
    is fitted on standardised labels (the L2 in those units) and returned in label units."""
    best: tuple[torch.Tensor, torch.Tensor, float, float] | None = None
    X, y = train
    mu, sd = 0.0, 1.0
    if task_type == "regression":  # fitted in standard units: labels near 5e8 stalled L-BFGS at their mean (pearson 0)
        mu, sd = float(y.float().mean()), float(y.float().std()) or 1.0
        y, val = (y.float() - mu) / sd, (val[0], (val[1].float() - mu) / sd)
    for l2 in l2_grid:
        w = torch.zeros(shape, requires_grad=True)
        b = torch.zeros(shape[0], requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = _loss(task_type, X, y, w, b) + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            v = float(_loss(task_type, val[0], val[1], w, b))
        if best is None or v < best[3]:
            best = (w.detach(), b.detach(), float(l2), v)
    assert best is not None
    w, b, l2, v = best
    return w * sd, b * sd + mu, l2, v * sd * sd  # back in label units


def fit_heads(model: PromptedModel, tasks: Sequence[str], train: dict[str, Any], val: dict[str, Any], pad_id: int,
              batch_size: int, l2_grid: Sequence[float], device: torch.device | str = "cpu", max_rows: int = 0,
              seed: int = 0) -> tuple[dict[str, dict[str, float]], dict[str, list[torch.Tensor]]]:
    """Fit each of ``tasks``' heads on the model's current features (``train`` / ``val``: task -> encoded
    Split) and load the weights into the head. ``max_rows`` > 0: on a seeded sample of at most that many
    train rows per task (a mixture's cap: its epochs see no more of a task). Returns task -> {"l2",
    "val_loss", "train_rows"}, and task -> the fitted head's val logits per example in input order, as
    ``predict_logits`` gives them (sequence and choice tasks: scoring val again would encode it twice)."""
    out: dict[str, dict[str, float]] = {}
    val_logits: dict[str, list[torch.Tensor]] = {}
    for t in tasks:
        head: Head = model.heads[t]
        rows = _sample(train[t].feats, max_rows, seed)
        tr = head_inputs(model, t, rows, pad_id, batch_size, device)
        va = head_inputs(model, t, val[t].feats, pad_id, batch_size, device)
        lin = head.linear
        grid = [0.0] if head.bi and head.task_type == "regression" else l2_grid  # 2 numbers: nothing to shrink
        w, b, l2, v = fit_linear(model.task_types[t], tr, va, tuple(lin.weight.shape), grid)
        if head.bi and head.task_type == "regression" and float(w.reshape(-1)[0]) == 0.0:
            w, b = torch.ones_like(w), torch.zeros_like(b)  # a flat map ranks nothing (the loss divides by |w|)
        with torch.no_grad():
            lin.weight.copy_(w.to(lin.weight.device))
            lin.bias.copy_(b.to(lin.bias.device))
        out[t] = {"l2": l2, "val_loss": round(v, 6), "train_rows": len(rows)}
        if head.kind != "token":  # a token task's X lost its sentences' shape
            val_logits[t] = list(_logits(model.task_types[t], va[0], w, b).unbind(0))
        log.info("head %s fitted on %d train rows (L2 %g, val loss %.4f)", t, len(tr[1]), l2, v)
    return out, val_logits


def _sample(feats: list[dict[str, Any]], max_rows: int, seed: int) -> list[dict[str, Any]]:
    """At most ``max_rows`` of ``feats`` (all when 0), drawn without replacement, in their order."""
    if not max_rows or len(feats) <= max_rows:
        return feats
    keep = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed))[:max_rows].sort().values
    return [feats[i] for i in keep.tolist()]
