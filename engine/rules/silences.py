"""Silences (``rules/silences.toml``): maintenance windows that route ladders around a rung.

Why they route around rather than drop: a silence says "this officer, this station, this kind
is not to be paged now" (leave, a station offline, a planned exercise), never "this warning
does not matter". When an officer-ladder rung fires, the machine asks :meth:`Silences.match`;
a silenced rung is skipped with the silence's id, author and reason in the timeline, and the
ladder goes on to the next rung. The county centre's rung of a fraud warning is never silenced
(:func:`protected`), and a silence that could reach it is refused at load.
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

import msgspec

from engine.rules.loading import RuleError, convert, load_rule_file
from engine.rules.zones import zone

FRAUD_KIND: Final = "fraud"
MAX_SILENCE_S: Final = 31 * 86400
ROLES: Final = ("grid_officer", "duty_officer", "chief", "county_centre")
MATCHERS: Final = ("officer", "role", "station", "grid", "kind")


def protected(kind: str, role: str) -> bool:
    """The county centre's rung of a fraud warning: the one rung no silence may skip, so a
    fraud warning always reaches somebody."""
    return kind == FRAUD_KIND and role == "county_centre"


class Silence(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One window: every matcher given must equal (AND); active from start, until end."""

    id: str
    author: str
    reason: str
    starts_at: float
    ends_at: float
    officer: str | None = None
    role: str | None = None
    station: str | None = None
    grid: str | None = None
    kind: str | None = None
    timezone: str = "Asia/Shanghai"

    def matches(
        self, officer: str, role: str, station: str | None, grid: str | None, kind: str
    ) -> bool:
        return (
            (self.officer is None or self.officer == officer)
            and (self.role is None or self.role == role)
            and (self.station is None or self.station == station)
            and (self.grid is None or self.grid == grid)
            and (self.kind is None or self.kind == kind)
        )

    def describe(self) -> str:
        """For timelines: which silence, whose, until when, why (the author as the file says)."""
        until = datetime.fromtimestamp(self.ends_at, zone(self.timezone))
        return f"silence {self.id} by {self.author} until {until:%Y-%m-%d %H:%M %z}: {self.reason}"


class Silences(msgspec.Struct, frozen=True):
    """Every silence of a file, in file order."""

    items: tuple[Silence, ...] = ()
    timezone: str = "Asia/Shanghai"
    source: str = "<memory>"

    def match(
        self,
        *,
        officer: str,
        role: str,
        station: str | None,
        grid: str | None,
        kind: str,
        at: float,
    ) -> Silence | None:
        """The first silence active at ``at`` that matches this rung; never for a protected
        rung (defence in depth for silences built in code)."""
        if not self.items or protected(kind, role):
            return None
        for s in self.items:
            if s.starts_at <= at < s.ends_at and s.matches(officer, role, station, grid, kind):
                return s
        return None

    def active(self, at: float) -> tuple[Silence, ...]:
        return tuple(s for s in self.items if s.starts_at <= at < s.ends_at)

    def next_change(self, after: float) -> float | None:
        """The next start or end after ``after``: when what is silenced changes next."""
        times = [t for s in self.items for t in (s.starts_at, s.ends_at) if t > after]
        return min(times, default=None)


EMPTY_SILENCES: Final = Silences()


class _Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    author: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    start: datetime
    end: datetime
    officer: str | None = None
    role: str | None = None
    station: str | None = None
    grid: str | None = None
    kind: str | None = None


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    timezone: str = "Asia/Shanghai"
    silences: list[dict[str, Any]] = []


def epoch(value: datetime | date, tz: ZoneInfo) -> float:
    """A TOML datetime as epoch seconds; one written without an offset is local to ``tz``."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.timestamp()


def load_silences(path: str | Path | None = None) -> Silences:
    """Load and validate a silences file (default: the packaged ``rules/silences.toml``)."""
    file, raw = load_rule_file(path, "silences.toml", _File)
    tz = zone(raw.timezone, file, "timezone")
    items: list[Silence] = []
    seen: set[str] = set()
    for i, body in enumerate(raw.silences):
        key = f"silences[{i}]"
        e = convert(body, _Entry, file, key)
        if e.id in seen:
            raise RuleError(file, f"{key}.id", "an id no other silence of the file has")
        seen.add(e.id)
        if not e.author.strip() or not e.reason.strip():
            field = "author" if not e.author.strip() else "reason"
            raise RuleError(file, f"{key}.{field}", "a non-blank text (who, and why)")
        start, end = epoch(e.start, tz), epoch(e.end, tz)
        if end <= start:
            raise RuleError(file, f"{key}.end", "a time after start")
        if end - start > MAX_SILENCE_S:
            raise RuleError(
                file,
                f"{key}.end",
                "an end at most 31 days after start (a silence is a window, not a policy)",
            )
        if all(getattr(e, m) is None for m in MATCHERS):
            raise RuleError(file, key, f"at least one matcher ({', '.join(MATCHERS)})")
        if e.role is not None and e.role not in ROLES:
            raise RuleError(file, f"{key}.role", f"one of {', '.join(ROLES)}")
        centre = e.role == "county_centre" or e.officer == "county_centre"
        if centre and e.kind in (None, FRAUD_KIND):
            raise RuleError(
                file,
                f"{key}.kind",
                'a kind other than "fraud": the county centre is the last rung of every '
                "ladder, and a fraud warning must never be silenced into nothing",
            )
        items.append(
            Silence(
                id=e.id,
                author=e.author,
                reason=e.reason,
                starts_at=start,
                ends_at=end,
                officer=e.officer,
                role=e.role,
                station=e.station,
                grid=e.grid,
                kind=e.kind,
                timezone=raw.timezone,
            )
        )
    return Silences(items=tuple(items), timezone=raw.timezone, source=str(file))
