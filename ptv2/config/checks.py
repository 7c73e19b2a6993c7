"""The checks the config's dataclasses run at load time: one ConfigError naming the key and what is allowed."""
from __future__ import annotations

from typing import Any

from ptv2.errors import ConfigError, check_value


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


_check = check_value  # the one rule for a value error, shared with the prompt settings (ptv2.prompt)
