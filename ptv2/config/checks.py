"""The checks the config's dataclasses run at load time: one ConfigError naming the key and what is allowed."""
from __future__ import annotations

from typing import Any

from ptv2.errors import ConfigError


def _valid_cron(expr: str) -> bool:
    """Prefect's own cron validation (the parser its schedules use), so a bad string fails at load time."""
    from prefect._internal.schemas.validators import validate_cron_string

    try:
        validate_cron_string(expr)
    except ValueError:
        return False
    return len(expr.split()) == 5


def _valid_timezone(name: str) -> bool:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: expected {allowed}")
