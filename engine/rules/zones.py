"""IANA time zones for rule files: looked up once, and a bad name is a RuleError."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.rules.loading import RuleError


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zone(name: str, file: str | Path = "<rules>", key: str = "timezone") -> ZoneInfo:
    """The zone called ``name`` (cached: rosters convert a time at every rung that fires)."""
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(file, key, "an IANA time zone name such as Asia/Shanghai") from None
