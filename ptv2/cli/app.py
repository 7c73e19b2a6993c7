"""The ``ptv2`` command line: its parser and ``main`` (one line and exit 2 for a user error)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ptv2 import __version__
from ptv2.cli.common import config_of
from ptv2.cli.registry import cmd_registry, cmd_serve
from ptv2.cli.train import cmd_adapt, cmd_baseline, cmd_compare, cmd_pretrain, cmd_train, cmd_transfer
from ptv2.cli.use import cmd_evaluate, cmd_export, cmd_predict
from ptv2.config import SPLITS
from ptv2.errors import USER_ERROR_EXIT, ConfigError, Ptv2Error, as_user_error, user_line
from ptv2.procenv import (check_compile_cache, discard_stdout, reopen_closed_stderr, sigterm_as_interrupt,
                          stdout_written)


TASK_HELP = "a task of params.yaml tasks: (default: run.task)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptv2", description="P-Tuning v2 deep prompts on frozen encoders")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"ptv2 {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")  # `ptv2 X -h` said none
        sp.add_argument("--params", default="params.yaml", help="config file (default: params.yaml)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=3")
        sp.set_defaults(fn=fn)
        return sp

    t = add("train", cmd_train, "train one task (method from train.method)")
    t.add_argument("--task", help=TASK_HELP)
    t.add_argument("--out", help="model folder (default: run.out_dir/TASK/METHOD)")
    b = add("baseline", cmd_baseline, "the frozen-backbone baseline of a task: no prompt, head fitted on its features")
    b.add_argument("--task", help=TASK_HELP)
    b.add_argument("--out", help="model folder (default: run.out_dir/TASK/frozen)")
    e = add("evaluate", cmd_evaluate, "evaluate a saved model on a task split")
    e.add_argument("--model", required=True, help="model folder, exported bundle, or registered models:/NAME@ALIAS "
                   "(or /VERSION, /latest) of the project's registry")
    e.add_argument("--task", help="task to score (default: the model's only task)")
    e.add_argument("--split", default="dev", choices=SPLITS, help="(default: dev)")
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
    pt.add_argument("--tasks", help="comma-separated mixture (default: pretrain.tasks)")
    pt.add_argument("--out", help="model folder (default: pretrain.out_dir)")
    ad = add("adapt", cmd_adapt, "tune one task starting from a pretrained prompt")
    ad.add_argument("--task", required=True, help="a task of params.yaml tasks:")
    ad.add_argument("--from", help="pretrained model folder (default: pretrain.out_dir/model)")
    ad.add_argument("--out", help="model folder (default: adapt.out_dir/TASK)")
    c = add("compare", cmd_compare, "train methods x tasks x seeds; one results table (defaults: params.yaml compare)")
    c.add_argument("--tasks", help="comma-separated (default: compare.tasks)")
    c.add_argument("--methods", help="comma-separated train.method values (default: compare.methods)")
    c.add_argument("--seeds", help="comma-separated (default: compare.seeds)")
    c.add_argument("--one-seed", help="tasks run with the first seed only (large ones)")
    c.add_argument("--out", help="results table (default: compare.out)")
    c.add_argument("--work", help="runs' folder, reused across calls (default: compare.work)")
    c.add_argument("--no-track", action="store_true", help="do not log the comparison to MLflow")
    tr = add("transfer", cmd_transfer, "multi-task table: (a) single-task, (b) adapted, (c) no adaptation, (d) held out")
    tr.add_argument("--tasks", required=True, help="comma-separated: the mixture and the tasks scored")
    tr.add_argument("--held-out", help="tasks of --tasks to run (d) for: adapted from a mixture pretrained without "
                    "them (default: rte and cb, those of them in --tasks)")
    tr.add_argument("--seeds", default="1,2,3", help="comma-separated (default: %(default)s)")
    tr.add_argument("--out", default="reports/multitask.md", help="results table (default: %(default)s)")
    tr.add_argument("--work", default="outputs/transfer",
                    help="runs' folder, reused across calls (default: %(default)s)")
    add("registry", cmd_registry, "list the registered model versions with the promotion gate's evidence")
    sv = add("serve", cmd_serve, "serve a registered model over HTTP (mlflow models serve), checked first")
    sv.add_argument("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or /latest (default: the multi-task "
                                    "model's @champion)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    sv.add_argument("--port", type=int, default=5000, help="(default: %(default)s)")
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


def _inside_an_artifact(args: argparse.Namespace) -> ConfigError | None:
    """An output path (``--out``, ``--work``) inside a model folder or a bundle: what ptv2 wrote there made the
    artifact fail its own check ("files [...] are not what a model folder holds"), so it could no longer load."""
    for key in ("out", "work"):
        value = getattr(args, key, None)
        if not isinstance(value, str):
            continue
        path = Path(value).resolve()
        # a run folder (train's --out) or a work folder holds new files itself; export's --out replaces a bundle
        around = [*([] if args.command == "export" and key == "out" else [path]), *path.parents]
        home, what = next(((p, w) for p in around if (w := _artifact(p))), (None, None))
        if home is not None:
            where = f"is {what}" if home == path else f"is inside {what} ({home})"
            return ConfigError(f"--{key} {value!r} {where}: files written there break its manifest check; pick a "
                               f"path outside it")
    return None


def _artifact(path: Path) -> str | None:
    """What ptv2 artifact ``path`` is ("a model folder", "a bundle"), or None; a path the system cannot look at
    (a name over 255 bytes) is none, and the command's own check names it."""
    from ptv2.serving.manifest import is_bundle
    from ptv2.training.artifacts import is_model_dir

    try:
        return "a model folder" if is_model_dir(path) else "a bundle" if is_bundle(path) else None
    except OSError:
        return None


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports POLLERR on its write end)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no real file behind stdout (a test's capture)
        return False


# the commands that train (their runs checkpoint each epoch); predict, evaluate, export... have nothing to resume
TRAINING = frozenset({"train", "baseline", "pretrain", "adapt", "compare", "transfer"})
RESUME = "; finished epochs are checkpointed, rerun the same command to resume"


def main(argv: list[str] | None = None) -> int:
    reopen_closed_stderr()
    args = parser().parse_args(argv)
    if (empty := _empty_option(args)) is not None:
        print(user_line(empty), file=sys.stderr)
        return USER_ERROR_EXIT
    _expand_home(args)
    if (inside := _inside_an_artifact(args)) is not None:
        print(user_line(inside), file=sys.stderr)
        return USER_ERROR_EXIT
    if sys.stdout is None and args.command in ("predict", "evaluate", "registry"):  # started with stdout closed
        # (`>&-`): print() drops everything silently, and the command's answers are all it gives
        print(user_line(Ptv2Error(f"stdout is closed, so `ptv2 {args.command}`'s answers would be lost: run it "
                                  f"with stdout open (e.g. > answers.jsonl)")), file=sys.stderr)
        return USER_ERROR_EXIT
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with sigterm_as_interrupt(), stdout_written():  # docker stop, Slurm, `timeout`: as Ctrl-C
            check_compile_cache()
            if args.command != "predict":  # predict reads params.yaml only for a bundle, and only if it is there
                config_of(args)
            return args.fn(args)
    except KeyboardInterrupt:
        print(f"ptv2: interrupted{RESUME if args.command in TRAINING else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_gone():  # a socket's EPIPE (a tracking server's) is not the reader leaving: a bug stays one
            raise
        # the reader left (`ptv2 predict … | head`): stop quietly, as Unix tools do (SIGPIPE's 128 + 13); stdout now
        # goes nowhere, so the interpreter's last flush does not fail again ("Exception ignored … BrokenPipeError")
        discard_stdout()
        return 141
    except Exception as e:  # noqa: BLE001 - a user error is one line; anything else is re-raised as it was
        err = as_user_error(e)
        if err is None:
            raise
        print(user_line(err), file=sys.stderr)
        return USER_ERROR_EXIT
