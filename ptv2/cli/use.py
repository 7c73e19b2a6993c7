"""The commands that run a trained model: ``evaluate`` and ``predict`` (a model folder, an exported bundle or a
registered ``models:/`` URI) and ``export`` (saved models to an ONNX bundle, checked)."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator

from ptv2.cli.common import config_of
from ptv2.config import params_folder
from ptv2.errors import Ptv2Error


@contextlib.contextmanager
def _local(args: argparse.Namespace) -> Iterator[tuple[str, Any, bool | None]]:
    """(path, serving settings, int8) of ``--model``: a folder as given, with params.yaml's serving section
    when there is one, fp32 unless --int8; a registered ``models:/`` URI downloaded from the project's
    registry into a temporary folder (gone after the command), run as it is served: with the serving
    settings it was registered with, their encoder unless --int8."""
    if not re.match(r"[a-z][a-z0-9+.-]+:/", args.model):  # a URI (models:/, runs:/ ...) goes to the registry
        yield _task_bundle(args.model, args.task), (config_of(args).serving if Path(args.params).is_file() else None), \
            args.int8
        return
    import tempfile

    from ptv2.tracking.registry import fetch_bundle

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        config_of(args)  # the registry is the project's: its params.yaml must be there (not a new empty store here)
    with tempfile.TemporaryDirectory(prefix="ptv2-model-") as tmp:
        path, serving = fetch_bundle(params_folder(args.params), args.model, tmp)
        yield str(path), serving, args.int8 or None


def _task_bundle(model: str, task: str | None) -> str:
    """``model``, or in an export of one bundle per task (LoRA / fine-tuned models: ``out/<task>``) the
    bundle serving ``task`` (the only one when --task is not given)."""
    from ptv2.serving.manifest import is_bundle

    path = Path(model)
    if not path.is_dir() or is_bundle(path) or (path / "manifest.json").exists():
        return model
    tasks = sorted(p.name for p in path.iterdir() if p.is_dir() and is_bundle(p))
    if not tasks or task in tasks or (task is None and len(tasks) == 1):
        return str(path / (task or tasks[0])) if tasks else model
    raise Ptv2Error(f"{model} holds one bundle per task ({', '.join(tasks)}): "
                    + ("pass --task" if task is None else f"none serves task {task!r}"))


def cmd_evaluate(args: argparse.Namespace) -> int:
    with _local(args) as (model, serving, int8):
        return _evaluate(args, model, serving, int8)


def _evaluate(args: argparse.Namespace, model: str, serving: Any, int8: bool | None) -> int:
    from ptv2.serving.manifest import is_bundle

    cfg = config_of(args)
    if is_bundle(model):  # the exported artifact, scored through onnxruntime as it serves
        from ptv2.data.tasks import load_task_data
        from ptv2.export.checks import evaluate_bundle
        from ptv2.serving.bundle import Bundle

        bundle = Bundle.from_serving(model, serving, int8=int8, bounded=False)
        scores = evaluate_bundle(bundle, load_task_data(cfg, _bundle_task(bundle, args.task)), args.split)
    elif args.int8:
        raise _bundle_only("--int8", args.model)
    else:
        from ptv2.training.inference import evaluate_saved

        scores = evaluate_saved(cfg, model, args.task, args.split)
    if args.split == "test":  # said with the scores (a task without a test split: its one line, no warning)
        logging.getLogger("ptv2").warning("scored on the labelled TEST split: report it, never select on it")
    print(json.dumps(scores, indent=2))
    return 0


def _bundle_task(bundle, task: str | None) -> str:
    """The task a bundle command is about: --task, or the bundle's only one."""
    if task is None and len(bundle.tasks) != 1:
        raise Ptv2Error(f"this bundle serves {sorted(bundle.tasks)}: pass --task")
    if task is not None and task not in bundle.tasks:
        raise Ptv2Error(f"unknown task {task!r}; this bundle serves {sorted(bundle.tasks)}")
    return task or next(iter(bundle.tasks))


def _bundle_only(flag: str, model: str) -> Ptv2Error:
    return Ptv2Error(f"{flag} needs an exported bundle (ptv2 export); {model} is a model folder")


PREDICT_CHUNK = 512  # rows per bundle call of `ptv2 predict`: bounds its memory on a long file of texts


def cmd_predict(args: argparse.Namespace) -> int:
    with _local(args) as (model, serving, int8):
        return _predict(args, model, serving, int8)


def _predict(args: argparse.Namespace, model: str, serving: Any, int8: bool | None) -> int:
    from ptv2.cli.inputs import read_inputs
    from ptv2.serving.bundle import Bundle
    from ptv2.serving.manifest import is_bundle

    if is_bundle(model):  # an ONNX bundle: onnxruntime only, no torch
        # a file of texts is not one HTTP request: no request-size limits, answers printed chunk by chunk
        bundle = Bundle.from_serving(model, serving, int8=int8, bounded=False)
        task = _bundle_task(bundle, args.task)
        if bundle.specs[task]["type"] == "multiple_choice" and len(args.choice or []) < 2:
            raise Ptv2Error(f"task {task!r} is multiple choice: pass --choice for each choice (at least 2)")
        inputs = read_inputs(args.text, args.text_pair)
        texts, pairs, names = inputs.rows(task, bool(bundle.specs[task]["text_b"]))
        extra = {"choices": args.choice} if args.choice else {}  # multiple choice: the same choices for every text
        requests = [{"task": task, "text": t, "text_pair": p, **extra}
                    for t, p in zip(texts, pairs or [None] * len(texts))]
        bundle.check(requests, names)  # every row first: an error names its line, not its place in a chunk
        from ptv2.progress import progress_bar

        chunks = list(range(0, len(requests), PREDICT_CHUNK))
        # answers printed to a terminal show the progress themselves (and a bar would be torn by them)
        label = "" if sys.stdout.isatty() else f"labelling {len(requests)} texts"
        for i in progress_bar(chunks, label, "chunk"):
            for row in inputs.tag(bundle.predict(requests[i:i + PREDICT_CHUNK]), i):
                print(json.dumps(row))
        return 0
    if args.choice or args.int8:  # a model folder runs torch fp32: neither flag could apply
        raise _bundle_only("--choice" if args.choice else "--int8", model)
    from ptv2.training.artifacts import read_spec
    from ptv2.training.inference import model_task, predict_texts

    spec = read_spec(model)  # the model is checked before stdin is read: no wait for texts it cannot label
    task = model_task(spec, args.task)
    inputs = read_inputs(args.text, args.text_pair)
    texts, pairs, _ = inputs.rows(task, bool(spec.tasks[task].text_b))
    for row in inputs.tag(predict_texts(model, texts, pairs, task, batch_size=config_of(args).train.eval_batch_size)):
        print(json.dumps(row))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ptv2.export.deploy import export_and_check
    from ptv2.training.artifacts import read_spec

    cfg = config_of(args)
    dirs: dict[str, Path] = {}
    for d in args.model:
        for t in read_spec(d).tasks:
            if t in dirs:  # the later one replaced the earlier, silently (session 24)
                raise Ptv2Error(f"task {t!r} is in two models ({dirs[t]} and {d}): a bundle serves one model per "
                                f"task; pass one of them")
            dirs[t] = Path(d)
    report = export_and_check(cfg, dirs, args.out or cfg.export.out_dir)
    print(json.dumps(report, indent=2))
    return 0
