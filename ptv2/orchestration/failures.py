"""Failures of the pipeline as a user meets them: which are the user's to fix (``fails_again``: never retried),
which a user understands without a traceback (``explained``), a DVC file DVC cannot read (``damaged_file``), and
``entry_point``: the one way ``scripts/run.sh`` and ``python flows/run.py`` end, in one line."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable

from ptv2.errors import USER_ERROR_EXIT, Ptv2Error, exit_note


class StageFailed(RuntimeError):
    """A stage that failed other than by a user error: its own output (on the console, or its log on a worker)
    says why; the first line of the message names the stage(s) and where that output is."""


def explained(e: BaseException) -> bool:
    """Whether a user sees why ``e`` happened without a traceback: a user error (``fails_again``), or a stage
    that failed (its own output shows why; the traceback would only be the orchestrator's)."""
    from dvc.exceptions import DvcException

    return fails_again(e) or isinstance(e, (StageFailed, DvcException))


def entry_point(call: Callable[[], Any]) -> int:
    """Run ``call`` (a reproduce, a Prefect flow) as a command's body: 0 when it finishes; a user error its one
    line (exit 2); a stage that failed, one line after the stage's own output (exit 1); Ctrl-C, 130. Never a
    traceback (a flow with a stage that exited 2 ended in DVC's ReproductionError traceback)."""
    from dvc.exceptions import DvcException

    from ptv2.errors import exit_2_on_user_error

    with exit_2_on_user_error():
        try:
            call()
        except DvcException as e:
            cause = f" ({e.__cause__})" if e.__cause__ else ""
            code = re.search(r"exited with (-?\d+)\)?$", cause)
            cause += exit_note(int(code.group(1))) if code else ""
            print(f"ptv2: error: dvc repro: {e}{cause}; its output is above. Fix it and rerun: finished stages are "
                  f"kept", file=sys.stderr)
            return 1
        except StageFailed as e:
            print(f"ptv2: error: {str(e).splitlines()[0]}. Fix it and rerun: finished stages are kept",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("ptv2: interrupted; finished stages are kept (a stopped training resumes from its checkpoint): "
                  "rerun the same command to go on", file=sys.stderr)
            return 130
    return 0


def fails_again(e: BaseException) -> bool:
    """Whether ``e`` is a user error, which a retry meets again: a Ptv2Error raised here or by a stage on a
    worker (``run_stage``), or a stage that DVC ran in-process and that exited 2 (DVC keeps only the message)."""
    from dvc.stage.exceptions import StageCmdFailedError

    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, Ptv2Error):
            return True
        if isinstance(seen, StageCmdFailedError) and str(seen).endswith(f"exited with {USER_ERROR_EXIT}"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def damaged_file(e: Exception) -> str | None:
    """One line naming a DVC file that cannot be read (``dvc.yaml``, ``dvc.lock``: not YAML, not UTF-8, not
    DVC's schema) and its fix (``dvc_graph`` raises it as a ConfigError); None for any other DVC error. DVC's own
    message spans lines (the YAML parser's context), which ended in "its output is above" with none above."""
    from dvc.utils.serialize import ParseError
    from dvc.utils.strictyaml import YAMLValidationError

    if not isinstance(e, (ParseError, YAMLValidationError)):
        return None
    path = str(getattr(e, "path", "") or "a DVC file")
    parser = e.__cause__  # the YAML parser's error: where and what
    mark = getattr(parser, "problem_mark", None)
    if mark is not None:
        why = f"line {mark.line + 1}, column {mark.column + 1}: {getattr(parser, 'problem', None) or 'not YAML'}"
    else:  # not UTF-8, or not DVC's schema: DVC's first line says what
        why = (str(getattr(e, "exc", None) or parser or e).strip().splitlines() or [type(e).__name__])[0]
    name = Path(path).name
    fix = ("restore it, or remove it: dvc repro then runs every stage again (finished training runs are reused, "
           "champions stay)"
           if name == "dvc.lock" else f"restore it (git checkout -- {name}) or fix what is named")
    return f"{path} cannot be read ({why}): {fix}"
