"""``ptv2 registry`` and ``ptv2 serve``: the registered versions with the gate's evidence, and MLflow's scoring
server on one of them, each checked before it starts (a missing model, alias or port is one line)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from ptv2.cli.common import config_of
from ptv2.config import Config, params_folder
from ptv2.errors import ConfigError


def registry_table(cfg: Config, root: Path) -> str:
    """The project's registered versions with the gate's evidence (scores, baseline, p-values, decision), as a
    markdown table; or where the registry looked and what fills it."""
    from ptv2.experiments.tables import markdown
    from ptv2.model.spec import FROZEN
    from ptv2.tracking.registry import json_tag, list_versions

    rows = []
    tr = cfg.tracking
    found = list_versions(root, tr.registry_prefix)
    if not tr.multitask_model.startswith(tr.registry_prefix):
        found += [v for v in list_versions(root, tr.multitask_model) if v["name"] == tr.multitask_model]
    for v in found:
        t = v["tags"]
        # no gate tags: registered, then its promote stage stopped (killed, failed) before the gate decided
        reason = t.get("gate.reason", "not gated: its promote stage stopped before deciding; `dvc repro` reruns it")
        if "tasks" in t:  # the multi-task model: what it serves, and what it left out
            served = ", ".join(f"{k} v{n}" + (" (fp32)" if t.get(f"task.{k}.served") == "fp32" else "")
                               for k, n in sorted(json_tag(t, "tasks").items()))
            left = json_tag(t, "excluded")
            reason = f"serves {served}" + (f"; left out: {', '.join(sorted(left))}" if left else "")
        agree = t.get("int8_agreement", "")
        # which versions are the frozen baseline itself (gated against the trivial one): the table did not say
        kind = {FROZEN: "frozen baseline"}.get(t.get("candidate", ""), t.get("candidate", ""))
        rows.append([v["name"], v["version"], ",".join(v["aliases"]) or "-", kind, t.get("gate.metric", ""),
                     t.get("gate.challenger_metric", ""), t.get("gate.baseline_metric", ""),
                     t.get("gate.p_vs_baseline", ""), t.get("gate.champion_metric", ""),
                     t.get("gate.p_vs_champion", ""),
                     _agreement(agree) + (", served fp32" if t.get("served") == "fp32" else "") if agree else "",
                     t.get("gate.promoted", ""), reason])
    if not rows:
        from ptv2.tracking.registry import REGISTER_HINT
        from ptv2.tracking.store import tracking_uri

        return f"no registered model in {tracking_uri(root)}: {REGISTER_HINT}"
    headers = ["model", "version", "aliases", "candidate", "metric", "score", "baseline", "p vs baseline",
               "champion before", "p vs champion", "int8 agreement", "promoted", "reason"]
    # a column no version fills (no champion before any gate) only widens a table already ~250 characters wide
    keep = [i for i in range(len(headers)) if any(r[i] for r in rows)]
    return markdown([headers[i] for i in keep], [[r[i] for i in keep] for r in rows])


def _agreement(tag: str) -> str:
    """The int8 agreement tag as the table shows it; as written where it is not a number (edited by hand)."""
    try:
        return f"{float(tag):.3f}"
    except ValueError:
        return tag


def check_port(host: str, port: int) -> None:
    """The server's address must be free and bindable now (uvicorn's own failure reaches the user as a
    traceback from MLflow); the probe socket is closed before the server binds."""
    import socket

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port: pick one in 1-65535")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
            s.bind((host, port))
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror or e}): pick another --port or --host") \
            from None


def serve(cfg: Config, root: Path, model: str | None, host: str, port: int, env_manager: str) -> NoReturn:
    """MLflow's scoring server on a registered ``model`` (default: the multi-task model's champion), once the
    registry shows it is there (MLflow's own answer to a missing model or alias is a traceback after ~15 s);
    this process becomes the server."""
    from ptv2.tracking.registry import check_model_files, resolve_model
    from ptv2.tracking.scoring import check_env_manager, serve_command

    uri = model or f"models:/{cfg.tracking.multitask_model}@champion"
    check_port(host, port)
    check_env_manager(env_manager)
    name, version = resolve_model(root, uri)
    files = check_model_files(root, uri, name, version)
    argv, env = serve_command(root, files, host, port, env_manager)
    logging.getLogger("ptv2").info("serving %s (%s v%s) on http://%s:%d/invocations", uri, name, version, host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # this process becomes the server: signals reach it, no orphan


def cmd_registry(args: argparse.Namespace) -> int:
    """The registered versions with the gate's evidence (scores, baseline, p-values, decision)."""
    print(registry_table(config_of(args), params_folder(args.params)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """MLflow's scoring server on a registered model, checked first (this process becomes the server)."""
    serve(config_of(args), params_folder(args.params), args.model, args.host, args.port, args.env_manager)
