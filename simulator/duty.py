"""Duty rosters for the synthetic county, and the simulator's view of shifts.

Why generated: the engine reads rosters from ``rules/rosters.toml``, which a real site fills;
the generated county has two duty officers per station (``D{ss}1``, ``D{ss}2``) and a chief
(``C{ss}``), so the simulator gives them the usual pattern: day 08:00-20:00 and night
20:00-08:00, alternating weekly, with whole days of leave (the other duty officer covers) and a
few nights taken by the station's community officers in swaps. The draws are seeded by the
traffic seed, so a what-if run has the same rosters as its baseline.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from engine.registry.registry import Registry
from engine.rules.roster import Leave, Override, Rosters, Rotation, minutes_of_day
from simulator.traffic import TrafficSpec


def shift_of(local: datetime, spec: TrafficSpec) -> str:
    """``day`` or ``night`` for a local time, by the duty spec's shift hours."""
    m = local.hour * 60 + local.minute
    day, night = minutes_of_day(spec.duty.day_start), minutes_of_day(spec.duty.night_start)
    return "day" if day <= m < night else "night"


def county_rosters(registry: Registry, spec: TrafficSpec) -> Rosters:
    """Rotations, leave and swaps for every station of the generated county."""
    rng = np.random.default_rng([spec.seed, 21])
    duty = spec.duty
    tz = spec.start.tzinfo
    start = spec.start.date()
    anchor = start - timedelta(days=start.weekday())  # the Monday of the first week
    by_station: dict[str, list[str]] = {}
    community: dict[str, list[str]] = {}
    for o in registry.officers:
        if o.role == "duty_officer":
            by_station.setdefault(o.station, []).append(o.key)
        elif o.role == "community_officer":
            community.setdefault(o.station, []).append(o.key)
    rotations: list[Rotation] = []
    leave: list[Leave] = []
    overrides: list[Override] = []
    for station, officers in sorted(by_station.items()):
        officers = sorted(officers)
        for shift, begin, end, order in (
            ("day", duty.day_start, duty.night_start, officers),
            ("night", duty.night_start, duty.day_start, officers[::-1]),
        ):
            rotations.append(
                Rotation(
                    station=station,
                    role="duty_officer",
                    anchor=anchor,
                    officers=tuple(order),
                    shift=shift,
                    start_time=begin,
                    end_time=end,
                    every="weekly",
                )
            )
        for who in officers:
            n = int(rng.poisson(duty.leave_days_per_month * spec.days / 30))
            for d in sorted(set(rng.integers(0, spec.days, n).tolist())):
                day0 = datetime.combine(start + timedelta(days=d), datetime.min.time(), tz)
                leave.append(Leave(who, day0, day0 + timedelta(days=1), "sick leave (simulated)"))
        takers = community.get(station, [])
        n = int(rng.poisson(duty.swaps_per_month * spec.days / 30)) if takers else 0
        dusk, dawn = minutes_of_day(duty.night_start), minutes_of_day(duty.day_start)
        h, m = divmod(dusk, 60)
        night_s = ((dawn - dusk) % 1440 or 1440) * 60
        for d in rng.integers(0, spec.days, n).tolist():
            night = datetime.combine(start + timedelta(days=d), datetime.min.time(), tz)
            night = night.replace(hour=h, minute=m)
            overrides.append(
                Override(
                    station=station,
                    role="duty_officer",
                    officer=takers[int(rng.integers(0, len(takers)))],
                    start=night,
                    end=night + timedelta(seconds=night_s),
                    reason="swap (simulated)",
                )
            )
    return Rosters(
        timezone="Asia/Shanghai",
        rotations=tuple(rotations),
        overrides=tuple(overrides),
        leave=tuple(leave),
        source="<simulated county rosters>",
    )
