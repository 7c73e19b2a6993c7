"""``ptv2 <command>``: the same functions the DVC stages and flows call, for people.

Every command reads params.yaml (``--params``) with ``--set section.key=value`` overrides. A user error (bad
config, missing file, unknown label, ...) prints one clear line, exit code 2. ``app``: the parser and ``main``;
``common``: the command's config; ``train``: the training commands; ``use``: evaluate, predict, export;
``inputs``: what `ptv2 predict` reads; ``registry``: `ptv2 registry` and `ptv2 serve`.
"""
from ptv2.procenv import set_quiet_defaults

set_quiet_defaults()

from ptv2.cli.app import main, parser  # noqa: E402 - the defaults above come first

__all__ = ["main", "parser"]
