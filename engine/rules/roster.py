"""Duty rosters (``rules/rosters.toml``): who is the station's duty officer (or chief) at a time.

Why in the rules and pure: the machine resolves a duty rung when the rung fires, from
``(station, role, now)``, so a warning that outlives a shift goes to the next shift's officer,
and a replay after a crash resolves exactly as the live run did.

Time zones: every shift is written in local wall time of an IANA zone (the file's, default
Asia/Shanghai, or the rotation's own). Turns are counted in local *dates* from the anchor, never
in seconds, so a handover at 08:00 stays at 08:00 across a daylight-saving change. A shift
that starts in a nonexistent local time (the hour skipped in spring) starts at the same wall
reading on the old offset, i.e. one hour later on the new one (``fold=0``); in an hour that
happens twice (autumn) the first one counts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from engine.rules.loading import RuleError, convert, load_rule_file
from engine.rules.silences import epoch
from engine.rules.zones import zone

RosterRole = Literal["duty_officer", "chief", "grid_officer"]
PERIODS: Final = {"daily": 1, "weekly": 7}


class OnDuty(msgspec.Struct, frozen=True, gc=False):
    """Who is on for one station and role at one time, in rotation order, and the shift."""

    officers: tuple[str, ...]
    shift: str
    starts_at: float
    ends_at: float
    notes: tuple[str, ...] = ()


class Rotation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One shift of one station's role, passed from officer to officer every period."""

    station: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    role: RosterRole
    anchor: date
    officers: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]
    shift: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "day"
    start_time: Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "08:00"
    end_time: Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "08:00"
    every: Literal["daily", "weekly", "custom"] = "weekly"
    days: Annotated[int, msgspec.Meta(ge=1, le=366)] | None = None
    on_at_once: Annotated[int, msgspec.Meta(ge=1)] = 1
    timezone: str | None = None

    @property
    def period_days(self) -> int:
        return self.days if self.every == "custom" and self.days else PERIODS.get(self.every, 1)


class Override(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Someone else on a shift (a swap, cover): all of it, or only in place of ``replaces``."""

    station: str
    role: RosterRole
    officer: str
    start: datetime
    end: datetime
    reason: Annotated[str, msgspec.Meta(min_length=1)]
    replaces: str | None = None


class Leave(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An officer off duty (sick leave, holiday): never picked in this window."""

    officer: str
    start: datetime
    end: datetime
    reason: Annotated[str, msgspec.Meta(min_length=1)]


def minutes_of_day(hhmm: str) -> int:
    """``"HH:MM"`` (validated by the rotation's pattern) as minutes after midnight."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class _Shift:
    """A rotation compiled for lookups: zone, minutes of day, anchor, period."""

    __slots__ = ("end", "length", "rot", "start", "tz")

    def __init__(self, rot: Rotation, tz: ZoneInfo) -> None:
        self.rot, self.tz = rot, tz
        self.start, self.end = minutes_of_day(rot.start_time), minutes_of_day(rot.end_time)
        self.length = (self.end - self.start) % 1440 or 1440

    def _at(self, day: date, minutes: int) -> float:
        d = day + timedelta(days=minutes // 1440)
        m = minutes % 1440
        return datetime.combine(d, time(m // 60, m % 60), self.tz).timestamp()

    def containing(self, at: float) -> tuple[date, float, float] | None:
        """The shift (its local start date, start and end epoch) that contains ``at``."""
        day = datetime.fromtimestamp(at, self.tz).date()
        for d in (day, day - timedelta(days=1)):
            start = self._at(d, self.start)
            end = self._at(d, self.start + self.length)
            if start <= at < end:
                return d, start, end
        return None

    def turn(self, day: date) -> int:
        return (day - self.rot.anchor).days // self.rot.period_days

    def minutes(self) -> set[int]:
        return {(self.start + i) % 1440 for i in range(self.length)}


class Rosters(msgspec.Struct, frozen=True, dict=True):
    """Every rotation, override and leave of a site. ``on_duty`` is what the machine asks."""

    timezone: str = "Asia/Shanghai"
    rotations: tuple[Rotation, ...] = ()
    overrides: tuple[Override, ...] = ()
    leave: tuple[Leave, ...] = ()
    source: str = "<memory>"

    def _compiled(
        self,
    ) -> tuple[dict[tuple[str, str], list[_Shift]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            index: dict[tuple[str, str], list[_Shift]] = {}
            for rot in self.rotations:
                tz = zone(rot.timezone or self.timezone)
                index.setdefault((rot.station, rot.role), []).append(_Shift(rot, tz))
            tz = zone(self.timezone)
            leave = [(epoch(x.start, tz), epoch(x.end, tz), x) for x in self.leave]
            over = [(epoch(o.start, tz), epoch(o.end, tz), o) for o in self.overrides]
            cache = self.__dict__["_cache"] = (index, leave, over)
        return cache

    @property
    def roles(self) -> frozenset[str]:
        """The roles some station has a rotation for (the machine asks nothing else)."""
        roles = self.__dict__.get("_roles")
        if roles is None:
            roles = self.__dict__["_roles"] = frozenset(r.role for r in self.rotations)
        return roles

    def covers(self, station: str, role: str) -> bool:
        return (station, role) in self._compiled()[0]

    def _on_leave(self, officer: str, at: float) -> Leave | None:
        for start, end, x in self._compiled()[1]:
            if x.officer == officer and start <= at < end:
                return x
        return None

    def on_duty(self, station: str, role: str, at: float) -> OnDuty | None:
        """Who is on at ``at``; None when the station has no rotation for the role (the
        registry's answer then stands).

        Answers are cached per station and role for as long as they hold: within one shift
        and between two leave or override boundaries nothing changes, so the rung that fires
        next in the same shift (the usual case) costs a dict lookup and two comparisons."""
        cache: dict[tuple[str, str], tuple[float, float, OnDuty | None]] | None
        cache = self.__dict__.get("_answers")
        if cache is None:
            cache = self.__dict__["_answers"] = {}
        hit = cache.get((station, role))
        if hit is not None and hit[0] <= at < hit[1]:
            return hit[2]
        if not self.covers(station, role):
            return None
        on = self._on_duty(station, role, at)
        lo, hi = (on.starts_at, on.ends_at) if on is not None and on.officers else (at, at)
        if on is not None and lo < hi:
            edges = self._edges()
            i = bisect.bisect_right(edges, at)
            if i > 0:
                lo = max(lo, edges[i - 1])
            if i < len(edges):
                hi = min(hi, edges[i])
            if lo <= at < hi:
                if len(cache) > 4096:
                    cache.clear()
                cache[(station, role)] = (lo, hi, on)
        return on

    def _edges(self) -> list[float]:
        """Every leave and override start and end: where an answer may change mid-shift."""
        edges = self.__dict__.get("_edge_list")
        if edges is None:
            _, leave, over = self._compiled()
            edges = sorted({t for a, b, _ in (*leave, *over) for t in (a, b)})
            self.__dict__["_edge_list"] = edges
        return edges

    def _on_duty(self, station: str, role: str, at: float) -> OnDuty | None:
        shifts = self._compiled()[0].get((station, role))
        if shifts is None:
            return None
        for sh in shifts:
            found = sh.containing(at)
            if found is not None:
                break
        else:
            return OnDuty((), "(none)", at, at, ("no shift covers this time",))
        day, start, end = found
        rot = sh.rot
        n, k = len(rot.officers), min(rot.on_at_once, len(rot.officers))
        first = sh.turn(day) * k
        on = [rot.officers[(first + j) % n] for j in range(k)]
        notes: list[str] = []
        spare = [rot.officers[(first + k + j) % n] for j in range(n - k)]
        for i, who in enumerate(on):
            away = self._on_leave(who, at)
            if away is None:
                continue
            cover = next((s for s in spare if s not in on and not self._on_leave(s, at)), None)
            if cover is None:
                notes.append(f"{who} on leave ({away.reason}), nobody to cover")
                on[i] = ""
            else:
                notes.append(f"{who} on leave ({away.reason}): {cover} covers")
                on[i] = cover
        for o_start, o_end, o in self._compiled()[2]:
            if o.station != station or o.role != role or not o_start <= at < o_end:
                continue
            if o.replaces is None:
                notes.append(f"{o.officer} takes the shift: {o.reason}")
                on = [o.officer]
            elif o.replaces in on:
                notes.append(f"{o.officer} in place of {o.replaces}: {o.reason}")
                on[on.index(o.replaces)] = o.officer
        return OnDuty(tuple(w for w in on if w), rot.shift, start, end, tuple(notes))

    def day(self, station: str, at: float) -> list[tuple[str, OnDuty]]:
        """For ``roster show``: each role's shift at ``at`` and the shift after it."""
        out: list[tuple[str, OnDuty]] = []
        for (st, role), _ in sorted(self._compiled()[0].items()):
            if st != station:
                continue
            now = self.on_duty(station, role, at)
            assert now is not None
            out.append((role, now))
            after = now.ends_at if now.ends_at > at else self._next_start(station, role, at)
            if after is not None:
                nxt = self.on_duty(station, role, after)
                if nxt is not None:
                    out.append((role, nxt))
        return out

    def _next_start(self, station: str, role: str, at: float) -> float | None:
        starts = []
        for sh in self._compiled()[0].get((station, role), []):
            day = datetime.fromtimestamp(at, sh.tz).date()
            starts += [sh._at(day + timedelta(days=i), sh.start) for i in range(2)]
        later = sorted(s for s in starts if s > at)
        return later[0] if later else None


EMPTY_ROSTERS: Final = Rosters()


def pick(on: OnDuty, ordinal: int, attempt: int) -> str | None:
    """Round robin among the officers on together: by the warning's intake number, and a
    repeat of the rung goes to the next of them."""
    if not on.officers:
        return None
    return on.officers[(ordinal + attempt - 1) % len(on.officers)]


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    timezone: str = "Asia/Shanghai"
    rotations: list[dict[str, Any]] = []
    overrides: list[dict[str, Any]] = []
    leave: list[dict[str, Any]] = []


_CHOICES = {
    "role": ("duty_officer", "chief", "grid_officer"),
    "every": ("daily", "weekly", "custom"),
}


def _windows(items: Iterable[Override | Leave], name: str, file: Path, tz: ZoneInfo) -> None:
    for i, x in enumerate(items):
        if epoch(x.end, tz) <= epoch(x.start, tz):
            raise RuleError(file, f"{name}[{i}].end", "a time after start")
        if not x.reason.strip():
            raise RuleError(file, f"{name}[{i}].reason", "a non-blank reason")


def load_rosters(path: str | Path | None = None) -> Rosters:
    """Load and validate a rosters file (default: the packaged ``rules/rosters.toml``)."""
    file, raw = load_rule_file(path, "rosters.toml", _File)
    tz = zone(raw.timezone, file, "timezone")
    rotations = []
    taken: dict[tuple[str, str], list[tuple[int, set[int]]]] = {}
    for i, body in enumerate(raw.rotations):
        key = f"rotations[{i}]"
        rot = convert(body, Rotation, file, key, _CHOICES)
        rtz = zone(rot.timezone, file, f"{key}.timezone") if rot.timezone else tz
        if rot.every == "custom" and rot.days is None:
            raise RuleError(file, f"{key}.days", 'the turn length in days (every = "custom")')
        if rot.every != "custom" and rot.days is not None:
            raise RuleError(file, f"{key}.days", 'no days unless every = "custom"')
        if len(set(rot.officers)) != len(rot.officers):
            raise RuleError(file, f"{key}.officers", "officer keys, each once")
        if rot.on_at_once > len(rot.officers):
            raise RuleError(
                file, f"{key}.on_at_once", f"at most {len(rot.officers)} (the officers listed)"
            )
        mins = _Shift(rot, rtz).minutes()
        for j, other in taken.get((rot.station, rot.role), []):
            if mins & other:
                raise RuleError(
                    file,
                    f"{key}.start_time",
                    f"a shift that does not overlap rotations[{j}] (same station and role)",
                )
        taken.setdefault((rot.station, rot.role), []).append((i, mins))
        rotations.append(rot)
    overrides = tuple(
        convert(b, Override, file, f"overrides[{i}]", _CHOICES) for i, b in enumerate(raw.overrides)
    )
    leave = tuple(convert(b, Leave, file, f"leave[{i}]") for i, b in enumerate(raw.leave))
    _windows(overrides, "overrides", file, tz)
    _windows(leave, "leave", file, tz)
    return Rosters(
        timezone=raw.timezone,
        rotations=tuple(rotations),
        overrides=overrides,
        leave=leave,
        source=str(file),
    )


__all__ = [
    "EMPTY_ROSTERS",
    "Leave",
    "OnDuty",
    "Override",
    "Rosters",
    "Rotation",
    "load_rosters",
    "minutes_of_day",
    "pick",
]
