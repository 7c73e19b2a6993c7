"""Config value validators that need a parser (cron, timezone); the value rule is ``ptv2.errors.check_value``."""
from __future__ import annotations


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
