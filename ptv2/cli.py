"""``ptv2 <command>``: the same functions the DVC stages and flows call.

Every command reads params.yaml (``--params``) with ``--set section.key=value`` overrides.
A user error (bad config, missing file, unknown label, ...) prints one clear line, exit code 2.
"""
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

from ptv2 import __version__
from ptv2.config import SPLITS
from ptv2.config.schema import check_seed
from ptv2.errors import USER_ERROR_EXIT, ConfigError, Ptv2Error, as_user_error, user_line

for _k, _v in {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)


def _config(args: argparse.Namespace):
    """The command's config, loaded once (``main`` loads it before any command imports torch: a bad key is
    reported in well under a second)."""
    if getattr(args, "cfg", None) is None:
        from ptv2.config import comparison_config, load_config

        args.cfg = (comparison_config if args.command == "compare" else load_config)(args.params, args.set)
    return args.cfg


def _summary(run) -> dict:
    r = run.record
    return {"tasks": r["tasks"], "model": str(run.model_dir), "metrics": r["metrics"], "best_epoch": r["best_epoch"],
            "trainable_pct": round(100 * r["trainable_params"] / r["total_params"], 3)}


def _report(run) -> None:
    if run.main:  # under torchrun only rank 0 holds the results
        print(json.dumps(_summary(run), indent=2))


def cmd_train(args: argparse.Namespace) -> int:
    from ptv2.training.driver import train

    cfg = _config(args)
    task = args.task or cfg.run.task
    out = Path(args.out or Path(cfg.run.out_dir) / task / cfg.train.method)
    _report(train(cfg, [task], out))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from ptv2.model.spec import FROZEN
    from ptv2.training.driver import train

    cfg = _config(args)
    task = args.task or cfg.run.task
    out = Path(args.out or Path(cfg.run.out_dir) / task / FROZEN)
    _report(train(cfg, [task], out, frozen=True))
    return 0


@contextlib.contextmanager
def _local(args: argparse.Namespace) -> Iterator[tuple[str, Any, bool | None]]:
    """(path, serving settings, int8) of ``--model``: a folder as given, with params.yaml's serving section
    when there is one, fp32 unless --int8; a registered ``models:/`` URI downloaded from the project's
    registry into a temporary folder (gone after the command), run as it is served: with the serving
    settings it was registered with, their encoder unless --int8."""
    if not re.match(r"[a-z][a-z0-9+.-]+:/", args.model):  # a URI (models:/, runs:/ ...) goes to the registry
        yield _task_bundle(args.model, args.task), (_config(args).serving if Path(args.params).is_file() else None), \
            args.int8
        return
    import tempfile

    from ptv2.tracking.registry import fetch_bundle

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        _config(args)  # the registry is the project's: its params.yaml must be there (not a new empty store here)
    with tempfile.TemporaryDirectory(prefix="ptv2-model-") as tmp:
        path, serving = fetch_bundle(Path(args.params).resolve().parent, args.model, tmp)
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

    cfg = _config(args)
    if args.split == "test":
        logging.getLogger("ptv2").warning("evaluating on the labelled TEST split: report it, never select on it")
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
    from ptv2.cli_input import read_inputs
    from ptv2.serving.bundle import Bundle
    from ptv2.serving.manifest import is_bundle

    if is_bundle(model):  # an ONNX bundle: onnxruntime only, no torch
        # a file of texts is not one HTTP request: no request-size limits, answers printed chunk by chunk
        bundle = Bundle.from_serving(model, serving, int8=int8, bounded=False)
        task = _bundle_task(bundle, args.task)
        if bundle.specs[task]["type"] == "multiple_choice" and len(args.choice or []) < 2:
            raise Ptv2Error(f"task {task!r} is multiple choice: pass --choice for each choice (at least 2)")
        texts, pairs, names = read_inputs(args.text, args.text_pair).rows(task, bool(bundle.specs[task]["text_b"]))
        extra = {"choices": args.choice} if args.choice else {}  # multiple choice: the same choices for every text
        requests = [{"task": task, "text": t, "text_pair": p, **extra}
                    for t, p in zip(texts, pairs or [None] * len(texts))]
        bundle.check(requests, names)  # every row first: an error names its line, not its place in a chunk
        from ptv2.progress import progress_bar

        chunks = list(range(0, len(requests), PREDICT_CHUNK))
        # answers printed to a terminal show the progress themselves (and a bar would be torn by them)
        label = "" if sys.stdout.isatty() else f"labelling {len(requests)} texts"
        for i in progress_bar(chunks, label, "chunk"):
            for row in bundle.predict(requests[i:i + PREDICT_CHUNK]):
                print(json.dumps(row))
        return 0
    if args.choice or args.int8:  # a model folder runs torch fp32: neither flag could apply
        raise _bundle_only("--choice" if args.choice else "--int8", model)
    from ptv2.training.artifacts import read_spec
    from ptv2.training.inference import model_task, predict_texts

    spec = read_spec(model)  # the model is checked before stdin is read: no wait for texts it cannot label
    task = model_task(spec, args.task)
    texts, pairs, _ = read_inputs(args.text, args.text_pair).rows(task, bool(spec.tasks[task].text_b))
    for row in predict_texts(model, texts, pairs, task, batch_size=_config(args).train.eval_batch_size):
        print(json.dumps(row))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ptv2.export.deploy import export_and_check
    from ptv2.training.artifacts import read_spec

    cfg = _config(args)
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


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ptv2.training.driver import pretrain

    cfg = _config(args)
    _report(pretrain(cfg, args.out, _names("--tasks", args.tasks, []) or None))
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from ptv2.training.driver import adapt

    cfg = _config(args)
    _report(adapt(cfg, args.task, getattr(args, "from"), args.out))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ptv2.experiments.compare import compare

    cfg = _config(args)
    c = cfg.compare
    compare(cfg, _names("--tasks", args.tasks, c.tasks), _names("--methods", args.methods, c.methods),
            _seeds(args.seeds, c.seeds), Path(args.out or c.out), Path(args.work or c.work),
            one_seed=tuple(_names("--one-seed", args.one_seed, c.one_seed)), track=not args.no_track)
    return 0


def _names(flag: str, value: str | None, default: list) -> list[str]:
    """A comma-separated option, each name once, or the params.yaml default when it is not given."""
    if value is None:
        return [str(x) for x in default]
    names = [x.strip() for x in value.split(",") if x.strip()]
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise ConfigError(f"{flag} {value!r} names {twice[0]!r} twice: list each once")
    return names


def _seeds(value: str | None, default: list) -> list[int]:
    """--seeds as integers: one line naming the value otherwise."""
    names = _names("--seeds", value, default)
    if not names or not all(x.lstrip("-").isdigit() for x in names):
        raise ConfigError(f"--seeds {value!r} is not a comma-separated list of integers; e.g. --seeds 1,2,3")
    if len({int(x) for x in names}) != len(names):  # 1,01
        raise ConfigError(f"--seeds {value!r} names a seed twice: list each once")
    for x in names:  # before any run starts (a negative seed failed at its run, after the runs before it)
        check_seed("--seeds", int(x))
    return [int(x) for x in names]


DEFAULT_HELD_OUT = ("rte", "cb")  # transfer's (d) by default: the NLI pair, where a mixture could help most


def cmd_transfer(args: argparse.Namespace) -> int:
    from ptv2.experiments.transfer import transfer

    cfg = _config(args)
    tasks = _names("--tasks", args.tasks, [])
    held_out = (_names("--held-out", args.held_out, []) if args.held_out is not None
                else [t for t in DEFAULT_HELD_OUT if t in tasks])
    transfer(cfg, tasks, held_out, _seeds(args.seeds, []), Path(args.out), Path(args.work))
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    """The registered versions with the gate's evidence (scores, baseline, p-values, decision)."""
    from ptv2.cli_registry import registry_table

    print(registry_table(_config(args), Path(args.params).resolve().parent))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """MLflow's scoring server on a registered model, checked first (this process becomes the server)."""
    from ptv2.cli_registry import serve

    serve(_config(args), Path(args.params).resolve().parent, args.model, args.host, args.port, args.env_manager)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptv2", description="P-Tuning v2 deep prompts on frozen encoders")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"ptv2 {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--params", default="params.yaml", help="config file (default: params.yaml)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=3")
        sp.set_defaults(fn=fn)
        return sp

    t = add("train", cmd_train, "train one task (method from train.method)")
    t.add_argument("--task"); t.add_argument("--out")
    b = add("baseline", cmd_baseline, "the frozen-backbone baseline of a task: no prompt, head fitted on its features")
    b.add_argument("--task"); b.add_argument("--out")
    e = add("evaluate", cmd_evaluate, "evaluate a saved model on a task split")
    e.add_argument("--model", required=True, help="model folder, exported bundle, or registered models:/NAME@ALIAS "
                   "(or /VERSION, /latest) of the project's registry"); e.add_argument("--task")
    e.add_argument("--split", default="dev", choices=SPLITS)
    e.add_argument("--int8", action="store_true",
                   help="bundle only: score the int8 encoder (a registered model: as it is served unless set)")
    pr = add("predict", cmd_predict, "label texts with a saved model (texts from --text or stdin)")
    pr.add_argument("--model", required=True, help="model folder, exported bundle, or registered models:/NAME@ALIAS "
                    "(or /VERSION, /latest) of the project's registry")
    pr.add_argument("--task", help="task to answer (default: the model's only task)")
    pr.add_argument("--text", action="append", help="a text to label (repeat); none: one per line on stdin, "
                                                      "'text<TAB>text_pair' for a pair task")
    pr.add_argument("--text-pair", action="append", help="a pair task's second text, one per --text")
    pr.add_argument("--choice", action="append", help="bundle, multiple-choice task: one per choice (repeat)")
    pr.add_argument("--int8", action="store_true",
                    help="bundle only: use the int8 encoder (a registered model: as it is served unless set)")
    ex = add("export", cmd_export, "ONNX bundle (fp32 + int8) of saved models, with parity and dev checks")
    ex.add_argument("--model", action="append", required=True, help="model folder (repeat for more tasks)")
    ex.add_argument("--out", help="bundle folder (default: export.out_dir)")
    pt = add("pretrain", cmd_pretrain, "multi-task prompt pretraining on the pretrain.tasks mixture")
    pt.add_argument("--tasks", help="comma-separated mixture (default: pretrain.tasks)"); pt.add_argument("--out")
    ad = add("adapt", cmd_adapt, "tune one task starting from a pretrained prompt")
    ad.add_argument("--task", required=True); ad.add_argument("--from", help="pretrained model folder")
    ad.add_argument("--out")
    c = add("compare", cmd_compare, "train methods x tasks x seeds; one results table (defaults: params.yaml compare)")
    c.add_argument("--tasks"); c.add_argument("--methods"); c.add_argument("--seeds")
    c.add_argument("--one-seed", help="tasks run with the first seed only (large ones)")
    c.add_argument("--out"); c.add_argument("--work")
    c.add_argument("--no-track", action="store_true", help="do not log the comparison to MLflow")
    tr = add("transfer", cmd_transfer, "multi-task table: (a) single-task, (b) adapted, (c) no adaptation, (d) held out")
    tr.add_argument("--tasks", required=True)
    tr.add_argument("--held-out", help="tasks of --tasks to run (d) for: adapted from a mixture pretrained without "
                    "them (default: rte and cb, those of them in --tasks)")
    tr.add_argument("--seeds", default="1,2,3"); tr.add_argument("--out", default="reports/multitask.md")
    tr.add_argument("--work", default="outputs/transfer")
    add("registry", cmd_registry, "list the registered model versions with the promotion gate's evidence")
    sv = add("serve", cmd_serve, "serve a registered model over HTTP (mlflow models serve), checked first")
    sv.add_argument("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or /latest (default: the multi-task "
                                    "model's @champion)")
    sv.add_argument("--host", default="127.0.0.1"); sv.add_argument("--port", type=int, default=5000)
    sv.add_argument("--env-manager", default="local", choices=["local", "virtualenv", "uv", "conda"],
                    help="local: this environment; the others build one from the model's requirements")
    return p


TEXT_OPTIONS = ("text", "text_pair", "choice")  # what a model reads: an empty text is the user's to send


def _empty_option(args: argparse.Namespace) -> ConfigError | None:
    """An option given as an empty string (``--task "$TASK"`` with TASK unset) would silently mean its default:
    the default task trained, outputs in the default folder."""
    for key, value in vars(args).items():
        if key in TEXT_OPTIONS:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and not v.strip():
                return ConfigError(f"--{key.replace('_', '-')} {v!r} is empty: give it a value, or leave the option "
                                   f"out for its default")
    return None


PATH_OPTIONS = ("params", "out", "work", "from", "model")


def _expand_home(args: argparse.Namespace) -> None:
    """``~`` in a path option, as a shell leaves it when quoted ("--out '~/runs'"), is the home folder: it made a
    folder named "~" in the working directory."""
    for key in PATH_OPTIONS:
        value = getattr(args, key, None)
        if isinstance(value, list):
            setattr(args, key, [os.path.expanduser(v) if v.startswith("~") else v for v in value])
        elif isinstance(value, str) and value.startswith("~"):
            setattr(args, key, os.path.expanduser(value))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if (empty := _empty_option(args)) is not None:
        print(user_line(empty), file=sys.stderr)
        return USER_ERROR_EXIT
    _expand_home(args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command != "predict":  # predict reads params.yaml only for a bundle, and only if it is there
            _config(args)
        return args.fn(args)
    except KeyboardInterrupt:
        print("ptv2: interrupted; finished epochs are checkpointed, rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a user error is one line; anything else is re-raised as it was
        err = as_user_error(e)
        if err is None:
            raise
        print(user_line(err), file=sys.stderr)
        return USER_ERROR_EXIT
