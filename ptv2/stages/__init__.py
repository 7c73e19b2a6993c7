"""One thin module per DVC stage (``python -m ptv2.stages.<name>``): parse, call the library, write outputs."""

import sys

_default_hook = sys.excepthook


def _interrupted(kind, value, tb) -> None:  # noqa: ANN001 - sys.excepthook's signature
    """Ctrl-C in `dvc repro` reaches every stage process: one line instead of the traceback of wherever it was
    (an import, an epoch). The process still fails (by SIGINT, or exit 1), so DVC stops at that stage."""
    from ptv2.procenv import missing_package

    missing = missing_package(value)
    if missing:  # DVC ran this stage with a Python outside the venv: "ModuleNotFoundError: No module named ..."
        print(missing, file=sys.stderr)
        return
    if issubclass(kind, KeyboardInterrupt):
        print("ptv2: stage interrupted (Ctrl-C or SIGTERM); rerun `dvc repro` to go on: finished stages are kept and a "
              "stopped training resumes from its checkpoint", file=sys.stderr)
        return
    _default_hook(kind, value, tb)


sys.excepthook = _interrupted


def _check_compile_cache() -> None:
    """Before a stage module imports torch (at its top): a TORCHINDUCTOR_CACHE_DIR torch cannot create is one line."""
    from ptv2.errors import Ptv2Error, user_line
    from ptv2.procenv import check_compile_cache

    try:
        check_compile_cache()
    except Ptv2Error as e:
        print(user_line(e), file=sys.stderr)
        raise SystemExit(2) from None


_check_compile_cache()
