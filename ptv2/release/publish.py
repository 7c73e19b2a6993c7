"""The registered multi-task model (what the `publish` stage runs): one bundle serving every task's
champion from one encoder, registered as ``tracking.multitask_model`` and rebuilt only when some task's
champion changed. Each task keeps its own registered model; this one records, per task, the champion
version and run it was built from. Before it is registered, each task's answers from the combined bundle
are checked against its champion's own bundle on the task's dev set."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from ptv2.config import Config
from ptv2.data.tasks import load_task_data
from ptv2.export.checks import bundle_predictions, form_change
from ptv2.export.compose import combine_bundles, has_prompt
from ptv2.serving.bundle import Bundle
from ptv2.serving.requests import serving_settings
from ptv2.tracking import packaging, registry, store
from ptv2.evidence import agreement

log = logging.getLogger(__name__)


def champions(cfg: Config, root: Path) -> dict[str, dict[str, str]]:
    """task -> {"version", metric tags, "candidate": trained | frozen} of each adapted task's champion (tasks
    without one left out)."""
    out = {}
    for task in cfg.adapt.tasks:
        found = registry.alias_version(root, cfg.tracking.task_model(task), "champion")
        if found:
            version, tags = found
            if tags.get("gate.promoted") != "true":  # @champion moved by hand (MLflow's UI, a client): served as asked
                log.warning("%s v%s holds @champion but its gate did not promote it (%s): it is served as the "
                            "task's champion all the same", cfg.tracking.task_model(task), version,
                            tags.get("gate.reason", "no gate decision recorded"))
            out[task] = {"version": version, "metric": tags.get("gate.metric", ""),
                         "value": tags.get("gate.challenger_metric", ""), "candidate": tags.get("candidate", ""),
                         "key": registry.version_key(root, cfg.tracking.task_model(task), version)}
    return out


def _verify(cfg: Config, task: str, combined: Bundle, own: Bundle) -> float:
    """Share of the task's dev examples on which the combined bundle answers as the champion's own does."""
    td = load_task_data(cfg, task)
    return agreement(bundle_predictions(own, td), bundle_predictions(combined, td), cfg.export.parity_tol)


def _misfits(cfg: Config, parts: dict[str, Path], differ: list[str], tmp: Path) -> dict[str, str]:
    """task -> why, for the tasks of ``differ`` whose prompt or head does not fit the shared encoder (their
    champion was trained on a backbone of another shape: another ``backbone.name``)."""
    from ptv2.serving.manifest import BundleError

    anchor = next(t for t in parts if t not in differ)  # a task whose bundle holds the shared encoder
    out = {}
    for task in differ:
        pair, _ = combine_bundles({anchor: parts[anchor], task: parts[task]}, tmp / f"fit-{task}")  # tie: anchor's
        try:
            Bundle.from_serving(pair, cfg.serving, bounded=False)
        except BundleError:
            out[task] = ("its champion was trained on a backbone of another shape (its prompt or head does not fit "
                         "the shared encoder): served by its own registered model")
    return out


def publish(cfg: Config, root: Path) -> dict[str, Any]:
    """Build, check and register the multi-task model when the set of champions changed; else a no-op.
    ``dropped``: the tasks the replaced version served that are no longer in ``adapt.tasks``; ``candidates``:
    what each task served is (trained, or the frozen baseline), for the report."""
    name = cfg.tracking.multitask_model
    with registry.gate_lock(root):  # champions read and the alias moved with no other gate in between
        current = registry.alias_version(root, name, "champion")
        out = _publish(cfg, root, current)
    dropped = sorted(set(_served(current) if out["published"] else {}) - set(cfg.adapt.tasks))
    if dropped:  # its clients get 4xx from now on: say so
        log.warning("%s v%s no longer serves %s (not in adapt.tasks); still served by %s", name, out["version"],
                    ", ".join(dropped), ", ".join(f"{cfg.tracking.task_model(t)}@champion" for t in dropped))
    kinds = {t: c["candidate"] for t, c in champions(cfg, root).items() if out["tasks"].get(t) == c["version"]}
    return out | {"dropped": dropped, "candidates": kinds}


def _served(current: tuple[str, dict[str, str]] | None) -> dict[str, str]:
    """task -> champion version the multi-task model's ``current`` version (version, tags) serves."""
    return registry.json_tag(current[1], "tasks") if current else {}


def _publish(cfg: Config, root: Path, current: tuple[str, dict[str, str]] | None) -> dict[str, Any]:
    """``publish`` given the multi-task model's ``current`` champion (version, tags), if any."""
    champs = champions(cfg, root)
    wanted = {t: c["key"] for t, c in champs.items()}  # a version number alone may name another model by now
    serving = json.dumps(serving_settings(cfg.serving), sort_keys=True)
    if current and registry.json_tag(current[1], "champion_keys") == wanted and current[1].get("serving") == serving:
        return {"published": False, "version": current[0], "tasks": _served(current),
                "reason": "champions and serving config unchanged"}
    if not champs:  # an earlier multi-task model (tasks since taken out of adapt.tasks) keeps serving
        if not current:
            return {"published": False, "version": None, "tasks": {}, "reason": "no task has a champion yet"}
        served = _served(current)
        return {"published": False, "version": current[0], "tasks": served,
                "reason": f"no task of adapt.tasks has a champion yet: v{current[0]} keeps serving "
                          f"{', '.join(sorted(served))}"}
    with tempfile.TemporaryDirectory() as tmp:
        parts, excluded = {}, {}
        for task, c in champs.items():
            path = registry.download_bundle(root, cfg.tracking.task_model(task), c["version"], Path(tmp) / task)
            if has_prompt(path, task):
                parts[task] = path
            else:
                excluded[task] = "its model carries its own encoder (served by its own registered model)"
        if not parts:
            return {"published": False, "version": None, "tasks": {}, "excluded": excluded,
                    "reason": "no champion is a deep-prompt model that can share an encoder"}
        bundle, differ = combine_bundles(parts, Path(tmp) / "all")
        misfits = _misfits(cfg, parts, differ, Path(tmp))
        if misfits:  # a champion on a backbone of another shape: the combined bundle would not even load
            excluded |= misfits
            for task in misfits:
                parts.pop(task)
            bundle, differ = combine_bundles(parts, Path(tmp) / "all-fit")
        combined = Bundle.from_serving(bundle, cfg.serving, bounded=False)  # checked over whole dev sets
        for task in differ:  # exported with other encoder bytes: its answers must not change
            own = Bundle.from_serving(parts[task], cfg.serving, bounded=False)
            if change := form_change(own.specs[task], cfg.task(task)):  # today's dev rows are not its requests
                excluded[task] = (f"its champion {change}: its answers with the shared encoder cannot be checked "
                                  f"(served by its own registered model)")
                parts.pop(task)
                continue
            agree = _verify(cfg, task, combined, own)
            if agree < 1.0:
                excluded[task] = f"answers {100 * agree:.1f}% of dev as its champion does with the shared encoder"
                parts.pop(task)
        if excluded.keys() & differ:
            bundle, _ = combine_bundles(parts, Path(tmp) / "all-kept")
        used = {t: champs[t] | {"served": "int8" if combined.int8 and combined.tasks[t].int8 else "fp32"} for t in parts}
        return _register(cfg, root, bundle, champs, used, excluded)


def _register(cfg: Config, root: Path, bundle: Path, champs: dict[str, dict[str, str]],
              used: dict[str, dict[str, str]], excluded: dict[str, str]) -> dict[str, Any]:
    """Register ``bundle`` as the multi-task model's champion; ``champs`` every champion considered (the
    next publish is a no-op while they and the serving config stay), ``used`` those it serves (with the
    encoder each is served by)."""
    name = cfg.tracking.multitask_model
    tags = {"tasks": json.dumps({t: c["version"] for t, c in used.items()}, sort_keys=True),
            "champions": json.dumps({t: c["version"] for t, c in champs.items()}, sort_keys=True),
            "champion_keys": json.dumps({t: c["key"] for t, c in champs.items()}, sort_keys=True),
            "serving": json.dumps(serving_settings(cfg.serving), sort_keys=True),
            "excluded": json.dumps(excluded, sort_keys=True)}
    for t, c in used.items():
        tags |= {f"task.{t}.model": cfg.tracking.task_model(t), f"task.{t}.version": c["version"],
                 f"task.{t}.{c['metric'] or 'metric'}": c["value"], f"task.{t}.served": c["served"]}
    with store.start_run(root, cfg.tracking.experiment, "publish", {"tasks": sorted(used)},
                         store.lineage_tags(root, "publish")) as run:
        run_id = run.id
    uri = packaging.log_bundle_model(root, run_id, bundle, serving=cfg.serving)
    version = registry.register_version(root, name, run_id, uri, tags)
    registry.set_alias(root, name, "champion", version)
    log.info("%s v%s: serves %s%s; a server started from %s@champion answers with the version it found at "
             "start until it is restarted", name, version, ", ".join(f"{t} v{c['version']}" for t, c in used.items()),
             f" (left out: {excluded})" if excluded else "", name)
    return {"published": True, "version": version, "tasks": {t: c["version"] for t, c in used.items()},
            "excluded": excluded, "reason": "a champion or the serving config changed"}
