"""Campaign policy from ``rules/campaigns.toml``: caps, quiet hours, pacing, expiry.

Decoded strictly (unknown keys are errors) and then checked beyond types, so a bad file stops
the engine at start-up with a :class:`RuleError` naming the file, the key and what was expected.
The runtime :class:`CampaignPolicy` holds seconds and minutes, ready for arithmetic.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec

from engine.rules.loading import RuleError, default_rules_dir, load_toml

__all__ = ["CampaignPolicy", "QuietHours", "load_campaign_policy"]

CATEGORY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
_HHMM = re.compile(r"(?P<h>[01][0-9]|2[0-3]):(?P<m>[0-5][0-9])")
DAY_S = 86400.0


# --- file format -----------------------------------------------------------------------------


class CapsSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    window_days: float
    routine_per_window: int
    category: dict[str, int] = {}


class QuietSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    start: str
    end: str
    utc_offset_hours: float


class PacingSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    officer_per_minute: float
    officer_burst: int
    sms_per_second: float
    sms_burst: int


class ExpirySpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    routine_hours: float
    urgent_hours: float
    dedupe_days: float


class CampaignsFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    categories: list[str]
    caps: CapsSpec
    quiet_hours: QuietSpec
    pacing: PacingSpec
    expiry: ExpirySpec


# --- runtime ---------------------------------------------------------------------------------


class QuietHours(msgspec.Struct, frozen=True):
    """Local quiet hours as minutes after midnight; ``start == end`` means none."""

    start_min: int = 21 * 60 + 30
    end_min: int = 7 * 60 + 30
    utc_offset_hours: float = 8.0

    def remaining(self, wall: datetime) -> float:
        """Seconds until quiet hours end if ``wall`` (aware) is inside them, else 0."""
        if self.start_min == self.end_min:
            return 0.0
        local = wall.astimezone(timezone(timedelta(hours=self.utc_offset_hours)))
        s = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        start, end = self.start_min * 60, self.end_min * 60
        inside = (start <= s < end) if start < end else (s >= start or s < end)
        return ((end - s) % DAY_S) if inside else 0.0


class CampaignPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Everything planning and dispatch need, in seconds. Defaults equal the shipped file."""

    categories: tuple[str, ...] = ("antifraud", "antidrug", "traffic", "safety", "general")
    cap_window_s: float = 7 * DAY_S
    routine_cap: int = 3
    category_caps: dict[str, int] = msgspec.field(
        default_factory=lambda: {"antifraud": 2, "antidrug": 1, "traffic": 1}
    )
    quiet: QuietHours = QuietHours()
    officer_rate: float = 20 / 60  # sends per second
    officer_burst: int = 10
    sms_rate: float = 50.0
    sms_burst: int = 200
    routine_expiry_s: float = 72 * 3600.0
    urgent_expiry_s: float = 12 * 3600.0
    dedupe_s: float = 30 * DAY_S


def _positive(file: Path, key: str, value: float, what: str = "a number > 0") -> None:
    if not (value > 0 and math.isfinite(value)):
        raise RuleError(file, key, f"{what}, got {value!r}")


def _hhmm(file: Path, key: str, text: str) -> int:
    m = _HHMM.fullmatch(text)
    if m is None:
        raise RuleError(file, key, f'a 24-hour local time "HH:MM" such as "21:30", got {text!r}')
    return int(m["h"]) * 60 + int(m["m"])


def _build(spec: CampaignsFile, file: Path) -> CampaignPolicy:
    if spec.version != 1:
        raise RuleError(
            file, "version", f"1 (the only format this engine reads), got {spec.version}"
        )
    if not spec.categories:
        raise RuleError(file, "categories", "at least one category")
    seen: set[str] = set()
    for i, c in enumerate(spec.categories):
        if not CATEGORY_PATTERN.fullmatch(c):
            raise RuleError(
                file, f"categories[{i}]", f"a key matching ^[a-z][a-z0-9_]{{0,31}}$, got {c!r}"
            )
        if c in seen:
            raise RuleError(file, f"categories[{i}]", f"a category listed once, but {c!r} repeats")
        seen.add(c)
    caps = spec.caps
    _positive(file, "caps.window_days", caps.window_days)
    if caps.routine_per_window < 1:
        raise RuleError(
            file, "caps.routine_per_window", f"an integer >= 1, got {caps.routine_per_window}"
        )
    for cat, n in caps.category.items():
        key = f"caps.category.{cat}"
        if cat not in seen:
            raise RuleError(
                file, key, f"one of the listed categories ({', '.join(spec.categories)})"
            )
        if not 1 <= n <= caps.routine_per_window:
            raise RuleError(
                file,
                key,
                f"an integer from 1 to routine_per_window ({caps.routine_per_window}), got {n}",
            )
    q = spec.quiet_hours
    quiet = QuietHours(
        _hhmm(file, "quiet_hours.start", q.start),
        _hhmm(file, "quiet_hours.end", q.end),
        q.utc_offset_hours,
    )
    if not -12 <= q.utc_offset_hours <= 14:
        raise RuleError(
            file, "quiet_hours.utc_offset_hours", f"hours from -12 to 14, got {q.utc_offset_hours}"
        )
    p = spec.pacing
    _positive(file, "pacing.officer_per_minute", p.officer_per_minute)
    _positive(file, "pacing.sms_per_second", p.sms_per_second)
    for key, burst in (
        ("pacing.officer_burst", p.officer_burst),
        ("pacing.sms_burst", p.sms_burst),
    ):
        if burst < 1:
            raise RuleError(file, key, f"an integer >= 1, got {burst}")
    e = spec.expiry
    _positive(file, "expiry.routine_hours", e.routine_hours)
    _positive(file, "expiry.urgent_hours", e.urgent_hours)
    _positive(file, "expiry.dedupe_days", e.dedupe_days)
    return CampaignPolicy(
        categories=tuple(spec.categories),
        cap_window_s=caps.window_days * DAY_S,
        routine_cap=caps.routine_per_window,
        category_caps=dict(caps.category),
        quiet=quiet,
        officer_rate=p.officer_per_minute / 60.0,
        officer_burst=p.officer_burst,
        sms_rate=p.sms_per_second,
        sms_burst=p.sms_burst,
        routine_expiry_s=e.routine_hours * 3600.0,
        urgent_expiry_s=e.urgent_hours * 3600.0,
        dedupe_s=e.dedupe_days * DAY_S,
    )


def load_campaign_policy(path: str | Path | None = None) -> CampaignPolicy:
    """Load and validate a campaigns file (default: the shipped ``rules/campaigns.toml``)."""
    file = Path(path) if path is not None else default_rules_dir() / "campaigns.toml"
    return _build(load_toml(file, CampaignsFile), file)
