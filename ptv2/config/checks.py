"""Config value validators that need a parser (cron, timezone) or read several sections (the pipeline's output
folders); the value rule is ``ptv2.errors.check_value``."""
from __future__ import annotations

import posixpath

from ptv2.errors import check_value


def _valid_cron(expr: str) -> bool:
    """Five standard cron fields, each valid (``cronsim``, the parser Prefect's own scheduler stack ships
    with), so a bad string fails at load time; no Prefect import in the config layer. Prefect's "R" / "H"
    random and hashed fields are refused as cronsim refuses them."""
    from datetime import datetime

    from cronsim import CronSim, CronSimError

    if len(expr.split()) != 5:
        return False
    try:
        CronSim(expr, datetime(2000, 1, 1))
    except CronSimError:
        return False
    return True


def _valid_timezone(name: str) -> bool:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def check_output_folders(folders: dict[str, str]) -> None:
    """The pipeline's output folders ({key: path}) must be apart: export.frozen_dir = export.out_dir passed DVC, the
    trained bundle replaced the frozen one and was registered as "the frozen baseline" too; nested ones
    (pretrain.out_dir = adapt.out_dir) failed in DVC's words, naming `dvc remove` as the fix."""
    seen: dict[str, str] = {}
    for key, path in folders.items():
        norm = posixpath.normpath(path.replace("\\", "/"))
        check_value(norm not in ("", "."), key, path, "a folder of its own under the project, such as 'outputs/x'")
        for other, onorm in seen.items():
            inside = f"{norm}/".startswith(f"{onorm}/") or f"{onorm}/".startswith(f"{norm}/")  # equal or nested
            check_value(not inside, key, path, f"a folder apart from {other} ({folders[other]!r}): each of the "
                                               f"pipeline's outputs is a folder of its own")
        seen[key] = norm
