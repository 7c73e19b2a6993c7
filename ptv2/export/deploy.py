"""Export adapted models to one bundle and run the deployment checks (parity, int8 agreement)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ptv2.config import Config
from ptv2.errors import ArtifactError
from ptv2.export.checks import bundle_predictions, gold
from ptv2.export.compose import bundle_for, is_export
from ptv2.training.metrics import scorer
from ptv2.export.onnx_export import parity, write_bundle
from ptv2.files import atomic_dir, check_replaceable, write_json
from ptv2.model.backbone import load_backbone, same_backbone
from ptv2.model.prompted import PromptedModel
from ptv2.serving.bundle import Bundle
from ptv2.serving.manifest import write_manifest
from ptv2.evidence import agreement, paired_permutation, scale_free
from ptv2.training.artifacts import read_spec
from ptv2.training.build import load_model
from ptv2.data.tasks import load_task_data

log = logging.getLogger(__name__)


def export_and_check(cfg: Config, model_dirs: dict[str, Path], out: str | Path,
                     checks_dir: str | Path | None = None, encoder_from: str | Path | None = None) -> dict[str, Any]:
    """Bundle every task's model; per task: parity (fp32), dev metric fp32 vs int8, gate verdicts.
    Deep-prompt tasks share one bundle at ``out``; merged-adapter or fine-tuned tasks carry their own
    encoder weights and get one bundle each, at ``out/<task>`` (see ``bundle_for``). Each task's dev
    predictions go to ``checks_dir`` (default ``export.checks_dir``). ``encoder_from``: a deep-prompt bundle
    this export wrote from the same ``backbone.name``, whose encoder graphs a deep-prompt bundle copies."""
    checks_dir = Path(checks_dir or cfg.export.checks_dir)
    for task in model_dirs:
        cfg.task(task)  # the dev checks need the task's data: an unknown task fails now, not after the export
    check_replaceable(Path(out), is_export, "an export (a bundle, or one per task)")  # before the backbone loads
    specs = {task: read_spec(d) for task, d in model_dirs.items()}
    for task, spec in specs.items():  # a prompt on another backbone of the same shape loads without complaint
        if not same_backbone(spec.backbone, cfg.backbone.name):
            raise ArtifactError(f"{model_dirs[task]}: trained on backbone {spec.backbone!r}, but backbone.name is "
                                f"{cfg.backbone.name!r}; export it with --set backbone.name={spec.backbone}")
    backbone, tok = load_backbone(cfg.backbone.name)
    models: dict[str, PromptedModel] = {}
    for task, d in model_dirs.items():  # every method (prefix_tuning is saved folded, as ptv2)
        models[task] = load_model(d, backbone=backbone if specs[task].method == "ptv2" else None, tokenizer=tok)[0]
    # adapters are merged into the backbone weights for the graph; parity compares against the unmerged model
    merged = {t: m.merged() for t, m in models.items()}
    with atomic_dir(Path(out), is_export, "an export (a bundle, or one per task)") as tmp:  # checked, then swapped in
        if all(m.prompt is not None for m in models.values()):
            write_bundle(merged, tok, tmp, int8=cfg.export.int8, encoder_from=encoder_from)
        else:
            for t, m in merged.items():
                write_bundle({t: m}, tok, tmp / t, int8=cfg.export.int8)
        report = {task: _check(cfg, task, model, bundle_for(tmp, task), checks_dir, model_dirs[task])
                  for task, model in models.items()}
        if cfg.export.int8:
            record_int8_checks(tmp, {t: {"int8_agreement": float(r["int8_agreement"]),
                                         "int8_not_worse": bool(r["int8_not_worse"])} for t, r in report.items()})
    return report


def record_int8_checks(out: Path, checks: dict[str, dict[str, Any]]) -> None:
    """Write each task's int8 check results into its spec (what ``serving.int8_min_agreement`` is applied to
    when the bundle is loaded) and renew the manifests; ``out`` is the export's staging folder, not yet in use."""
    for task, found in checks.items():
        spec_file = bundle_for(out, task) / "tasks" / f"{task}.json"
        spec_file.write_text(json.dumps(json.loads(spec_file.read_text()) | found, indent=2, sort_keys=True))
    for bundle in {bundle_for(out, t) for t in checks}:
        write_manifest(bundle)


def _check(cfg: Config, task: str, model: PromptedModel, bundle_dir: Path, checks_dir: Path,
           source: Path) -> dict[str, Any]:
    """One task's checks on its bundle: parity against the PyTorch model (from the folder ``source``, named in the
    log line: the export stage checks a trained and a frozen model of each task); dev predictions of fp32 and int8,
    their agreement and a paired test (is int8 significantly worse?). The fp32 predictions and gold labels
    go to ``checks_dir/<task>.json`` for the promotion gate."""
    e, t = cfg.export, cfg.tracking
    fp32 = Bundle(bundle_dir)
    par = parity(model, task, fp32, tuple(e.parity_batch_sizes), tuple(x or None for x in e.parity_lengths))
    td = load_task_data(cfg, task)
    metric, g = td.spec.metrics[0], gold(td)
    score = scorer(metric)
    p32 = bundle_predictions(fp32, td)
    row = {"metric": metric, "parity_max_abs_diff": par["max_abs_diff"],
           "parity_ok": par["max_abs_diff"] <= e.parity_tol, "dev_fp32": score(p32, g), "dev_examples": len(g)}
    if e.int8:
        # int8 as it is served: near-ties of classification rows answered in fp32 (serving.int8_fallback_margin)
        p8 = bundle_predictions(Bundle(bundle_dir, int8=True, fallback_margin=cfg.serving.int8_fallback_margin), td)
        agree = agreement(p32, p8, e.int8_regression_tol)
        _, p_worse = paired_permutation(score, g, p32, p8, 0.0, samples=t.permutation_samples,  # "fp32 beats int8"?
                                        standardize=scale_free(metric))
        row.update(dev_int8=score(p8, g), int8_agreement=agree, int8_p_worse=p_worse,
                   int8_not_worse=p_worse >= t.promote_alpha)  # recorded in the bundle: serving.int8_min_agreement decides
    write_json(checks_dir / f"{task}.json", {"task": task, "metric": metric, "gold": g, "fp32": p32})
    log.info("%s (%s): parity %.2e, dev %s fp32 %.2f%s", task, source, par["max_abs_diff"], metric, row["dev_fp32"],
             f", int8 {row['dev_int8']:.2f} (agreement {row['int8_agreement']:.3f}, not worse: {row['int8_not_worse']})"
             if "dev_int8" in row else "")
    return row
