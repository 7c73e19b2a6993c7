"""One task's promotion (what the `promote@<task>` stage runs): log its ONNX bundle as an MLflow pyfunc
model, register it, and gate it on evidence: its per-example dev predictions (from the export checks)
against the trivial baseline, the frozen backbone's (its own features with a fitted head, exported as a
P = 0 bundle), and the champion's bundle re-run on the same examples.

Never serve worse than the baseline: when the trained challenger is refused, the frozen baseline is itself
a candidate (registered with tag ``candidate: frozen``), gated against the trivial baseline and the champion;
so a task with no trained model worth serving is served by what the backbone already knows.
"""
from __future__ import annotations

import functools
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

from ptv2.config import Config
from ptv2.data.tasks import TaskData, load_task_data
from ptv2.errors import ArtifactError
from ptv2.export.checks import bundle_predictions, form_change, train_labels_for_baseline
from ptv2.training import RUN_ID
from ptv2.training.metrics import scorer
from ptv2.export.compose import bundle_for, subset_bundle
from ptv2.model.spec import FROZEN
from ptv2.serving.bundle import Bundle, int8_serves
from ptv2.tracking import packaging, registry, store
from ptv2.evidence import baseline
from ptv2.release.gate import ChampionUnfit, Decision, GateData, register_and_gate
from ptv2.training.artifacts import read_spec

log = logging.getLogger(__name__)


def served_in(cfg: Config, checks: dict[str, Any]) -> str:
    """Which encoder the registered model serves the task with: "int8" or "fp32" (``serving.int8`` and
    ``serving.int8_min_agreement`` applied to the export's int8 checks)."""
    return "int8" if cfg.serving.int8 and int8_serves(checks, cfg.serving.int8_min_agreement) else "fp32"


def _checks(cfg: Config, task: str, kind: str, report: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(per-example dev predictions, export checks) of the task's trained ("trained") or frozen candidate;
    ``report``: the export stage's report for that kind of candidate."""
    folder = Path(cfg.export.checks_dir) / (FROZEN if kind == FROZEN else "")
    path = folder / f"{task}.json"
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the export stage did not check task {task!r}; run `dvc repro export`")
    checks = json.loads(report.read_text()).get(task, {}) if report.is_file() else {}
    return json.loads(path.read_text()), checks


def _champion_predictions(cfg: Config, root: Path, task: str, td: TaskData) -> Callable[[str], list[Any]]:
    """version -> the champion's own bundle's predictions on today's dev data (``GateData.champion_predictions``),
    each version downloaded and scored once: the trained and the frozen candidates' gates both compare with it."""
    name = cfg.tracking.task_model(task)

    @functools.cache
    def answers(version: str) -> list[Any] | str:  # its predictions, or why it cannot be compared (a form, damage)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                champion = Bundle(registry.download_bundle(root, name, version, tmp))
            except registry.UnreadableVersion as e:  # it cannot be scored: the challenger may replace it on the
                return e.why                               # baselines (damaged, files gone, registered by hand)
            was = champion.specs[task]
            if change := form_change(was, td.spec):
                return change
            gone = sorted(set(was.get("labels") or []) - set(td.labels))
            if gone:  # tasks.<task>.labels changed since it was trained
                log.warning("%s v%s answers with labels params.yaml no longer lists for %s (%s): those answers "
                            "count as wrong", name, version, task, ", ".join(gone))
            return bundle_predictions(champion, td)

    def predictions(version: str) -> list[Any]:
        got = answers(version)
        if isinstance(got, str):
            raise ChampionUnfit(got)
        return got

    return predictions


def _run_here(cfg: Config, root: Path, task: str, kind: str, run_id: str) -> str:
    """``run_id`` (the candidate's training run) when this project's store holds it; else a new run to log the
    candidate into: the store it trained into is elsewhere or gone (a clone that pulled the outputs from a
    DVC remote, a deleted mlruns.db), and MLflow refused to log into a run it does not know."""
    if store.has_run(root, run_id):
        return run_id
    tags = store.lineage_tags(root, f"promote@{task}") | {"ptv2.trained_in_run": run_id}
    with store.start_run(root, cfg.tracking.experiment, f"promote-{kind}-{task}", {}, tags) as run:
        new = run.id
    log.warning("%s: the %s run %s is not in this project's store (%s): its bundle is logged into a new run %s",
                task, "frozen baseline's" if kind == FROZEN else "training", run_id, store.tracking_uri(root), new)
    return new


def _gate(cfg: Config, root: Path, task: str, td: TaskData, kind: str, pred: dict[str, Any],
          checks: dict[str, Any], against_frozen: list[Any] | None,
          champion_predictions: Callable[[str], list[Any]]) -> Decision:
    """Log ``kind``'s bundle into its run, register it and gate it on ``pred`` / ``checks`` (``_checks``);
    ``against_frozen``: the frozen baseline's predictions a trained challenger must also beat."""
    folder = Path(cfg.adapt.baseline_dir if kind == FROZEN else cfg.adapt.out_dir) / task
    bundle_root = cfg.export.frozen_dir if kind == FROZEN else cfg.export.out_dir
    trained_in = json.loads((folder / RUN_ID).read_text())["run_id"]
    run_id = _run_here(cfg, root, task, kind, trained_in)
    name = cfg.tracking.task_model(task)
    card = _card_facts(cfg, task, td, folder, pred["metric"], checks)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = subset_bundle(bundle_for(bundle_root, task), [task], Path(tmp) / "bundle")
        uri = packaging.log_bundle_model(root, run_id, bundle, {"adapter": folder / "model"}, serving=cfg.serving,
                                         card=packaging.model_card(name, *card))

    bases = {"trivial": baseline(td.spec.type, train_labels_for_baseline(td), len(pred["gold"]))}
    if against_frozen is not None:
        bases[FROZEN] = against_frozen
    data = GateData(pred["metric"], scorer(pred["metric"]), pred["gold"], pred["fp32"], bases, champion_predictions)
    t = cfg.tracking
    d = register_and_gate(root, name, run_id, uri, data, t.promote_alpha, t.promote_margin, t.permutation_samples,
                          parity_ok=checks.get("parity_ok"),
                          tags={"int8_agreement": str(checks.get("int8_agreement", "")),
                                "served": served_in(cfg, checks), "candidate": kind, "run_id": trained_in})
    e = d.evidence
    registry.describe_version(root, name, d.version, packaging.model_card(name, *card, evidence={
        "baselines": e.baselines, "challenger": e.challenger, "champion": e.champion, "p_champion": e.p_champion,
        "promoted": d.promoted, "reason": d.reason}))
    return d


def _card_facts(cfg: Config, task: str, td: TaskData, folder: Path, metric: str,
                checks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model, data, serving) facts of the candidate's model card (``packaging.model_card``)."""
    spec = read_spec(folder / "model")
    rec = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    model = {"backbone": spec.backbone, "method": rec.get("method", spec.method), "prompt_length": spec.prompt.length,
             "pooling": spec.pooling, "normalize": spec.normalize, "max_length": spec.max_length,
             "trainable_params": rec.get("trainable_params", 0),
             "total_params": rec.get("total_params", 0), "dev": rec.get("metrics", {}).get("dev", {}).get(task, {})}
    data = {"task": task, "type": td.spec.type, "files": dict(td.spec.files), "train_rows": len(td.split("train")),
            "val_rows": len(td.split("val")) if "val" in td.splits else 0, "metric": metric,
            "pair_encoding": spec.tasks[task].pair_encoding}
    serving = {"served": served_in(cfg, checks), "int8_agreement": checks.get("int8_agreement"),
               "limits": cfg.serving.limits()}
    return model, data, serving


def _summary(d: Decision, kind: str) -> dict[str, Any]:
    e = d.evidence
    return {"candidate": kind, "version": d.version, "promoted": d.promoted, "reason": d.reason, "metric": e.metric,
            "challenger": e.challenger, "baseline": e.baseline, "baseline_name": e.strongest,
            "p_vs_baseline": e.p_baseline, "baselines": {k: {"metric": m, "p": p} for k, (m, p) in e.baselines.items()},
            "champion_before": e.champion, "p_vs_champion": e.p_champion, "test": e.test}


def promote_task(cfg: Config, root: Path, task: str, report: Path, frozen_report: Path) -> dict[str, Any]:
    """The trained challenger against the trivial and frozen baselines and the champion; if refused, the
    frozen baseline as a candidate of its own (unless the champion already is this very frozen model).
    ``report`` / ``frozen_report``: the export stage's checks of the trained and the frozen bundles."""
    td = load_task_data(cfg, task)
    frozen_pred, frozen_checks = _checks(cfg, task, FROZEN, frozen_report)
    pred, checks = _checks(cfg, task, "trained", report)
    champion = _champion_predictions(cfg, root, task, td)
    d = _gate(cfg, root, task, td, "trained", pred, checks, frozen_pred["fp32"], champion)
    out = {"task": task, **_summary(d, "trained"), "deploy_checks": checks}
    if d.promoted or _champion_is_this_frozen(cfg, root, task):
        return out
    f = _gate(cfg, root, task, td, FROZEN, frozen_pred, frozen_checks, None, champion)
    out["frozen_candidate"] = _summary(f, FROZEN)
    if f.promoted:
        out["served"] = f"the frozen baseline (v{f.version}): {f.reason}"
    return out


def _champion_is_this_frozen(cfg: Config, root: Path, task: str) -> bool:
    """Whether the task's champion is a frozen candidate logged from the current baseline run (registering
    it again would add a version and change nothing)."""
    champ = registry.alias_version(root, cfg.tracking.task_model(task), "champion")
    if champ is None or champ[1].get("candidate") != FROZEN:
        return False
    run_id = json.loads((Path(cfg.adapt.baseline_dir) / task / RUN_ID).read_text())["run_id"]
    return champ[1].get("run_id") == run_id
