"""Duty rosters (engine/rules/roster.py): rotations, shifts, handovers, leave, overrides,
round robin, time zones across daylight-saving changes, and the file's validation."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rules.loading import RuleError
from engine.rules.roster import (
    OnDuty,
    Rosters,
    Rotation,
    load_rosters,
    pick,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
ANCHOR = date(2026, 1, 5)  # a Monday


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: ZoneInfo = SH) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


def write(tmp_path: Path, body: str, name: str = "rosters.toml") -> Path:
    p = tmp_path / name
    p.write_text('version = 1\ntimezone = "Asia/Shanghai"\n' + body, encoding="utf-8")
    return p


DAY_NIGHT = """
[[rotations]]
station = "03"
role = "duty_officer"
shift = "day"
start_time = "08:00"
end_time = "20:00"
every = "weekly"
anchor = 2026-01-05
officers = ["D031", "D032"]

[[rotations]]
station = "03"
role = "duty_officer"
shift = "night"
start_time = "20:00"
end_time = "08:00"
every = "weekly"
anchor = 2026-01-05
officers = ["D032", "D031"]
"""


def who(r: Rosters, t: float, station: str = "03", role: str = "duty_officer") -> OnDuty:
    on = r.on_duty(station, role, t)
    assert on is not None
    return on


def test_weekly_day_and_night_shifts_hand_over_at_their_wall_times(tmp_path: Path) -> None:
    r = load_rosters(write(tmp_path, DAY_NIGHT))
    # Week 0 (from Monday 5 January): D031 days, D032 nights.
    assert who(r, at(2026, 1, 6, 10)).officers == ("D031",)
    assert who(r, at(2026, 1, 6, 10)).shift == "day"
    assert who(r, at(2026, 1, 6, 22)).officers == ("D032",)
    # The handover is exact: 19:59:59 is still the day shift, 20:00:00 the night's.
    assert who(r, at(2026, 1, 6, 20) - 1).officers == ("D031",)
    night = who(r, at(2026, 1, 6, 20))
    assert (night.officers, night.shift) == (("D032",), "night")
    assert night.starts_at == at(2026, 1, 6, 20) and night.ends_at == at(2026, 1, 7, 8)
    # Week 1: they swap.
    assert who(r, at(2026, 1, 13, 10)).officers == ("D032",)
    assert who(r, at(2026, 1, 13, 22)).officers == ("D031",)


def test_an_overnight_shift_belongs_to_the_day_it_started(tmp_path: Path) -> None:
    r = load_rosters(write(tmp_path, DAY_NIGHT))
    # Monday 12 January 02:00 is in Sunday 11 January's night shift: still week 0's D032,
    # although the calendar week of the clock has already turned.
    early = who(r, at(2026, 1, 12, 2))
    assert early.officers == ("D032",)
    assert early.starts_at == at(2026, 1, 11, 20)
    # Monday's own night shift is week 1's.
    assert who(r, at(2026, 1, 12, 21)).officers == ("D031",)


def test_daily_and_custom_rotations_count_turns_from_the_anchor(tmp_path: Path) -> None:
    body = """
[[rotations]]
station = "05"
role = "chief"
start_time = "00:00"
end_time = "00:00"
every = "daily"
anchor = 2026-01-05
officers = ["A", "B", "C"]

[[rotations]]
station = "06"
role = "chief"
start_time = "09:00"
end_time = "09:00"
every = "custom"
days = 3
anchor = 2026-01-05
officers = ["X", "Y"]
"""
    r = load_rosters(write(tmp_path, body))
    daily = [who(r, at(2026, 1, 5 + d, 12), "05", "chief").officers[0] for d in range(6)]
    assert daily == ["A", "B", "C", "A", "B", "C"]
    assert who(r, at(2026, 1, 5, 12), "05", "chief").ends_at - at(2026, 1, 5) == 86400
    # Three-day turns from 09:00 on the anchor: X until 8 January 09:00, then Y.
    custom = [who(r, at(2026, 1, 5 + d, 12), "06", "chief").officers[0] for d in range(7)]
    assert custom == ["X", "X", "X", "Y", "Y", "Y", "X"]
    assert who(r, at(2026, 1, 8, 9) - 1, "06", "chief").officers == ("X",)
    # Before the anchor the turns count backwards, with no gap.
    assert who(r, at(2026, 1, 4, 12), "05", "chief").officers == ("C",)


def test_a_station_without_a_rotation_keeps_the_registrys_answer(tmp_path: Path) -> None:
    r = load_rosters(write(tmp_path, DAY_NIGHT))
    assert r.on_duty("04", "duty_officer", at(2026, 1, 6, 10)) is None
    assert r.on_duty("03", "chief", at(2026, 1, 6, 10)) is None
    assert not r.covers("03", "chief") and r.covers("03", "duty_officer")


def test_a_gap_between_shifts_has_nobody_and_says_so(tmp_path: Path) -> None:
    body = """
[[rotations]]
station = "03"
role = "duty_officer"
start_time = "08:00"
end_time = "18:00"
every = "daily"
anchor = 2026-01-05
officers = ["D031"]
"""
    r = load_rosters(write(tmp_path, body))
    gap = who(r, at(2026, 1, 6, 19))
    assert gap.officers == () and "no shift" in gap.notes[0]
    assert pick(gap, 1, 1) is None


def test_round_robin_among_officers_on_together_and_a_repeat_goes_to_the_next(
    tmp_path: Path,
) -> None:
    body = """
[[rotations]]
station = "03"
role = "duty_officer"
start_time = "08:00"
end_time = "08:00"
every = "daily"
anchor = 2026-01-05
on_at_once = 2
officers = ["D1", "D2", "D3", "D4"]
"""
    r = load_rosters(write(tmp_path, body))
    first = who(r, at(2026, 1, 5, 12))
    second = who(r, at(2026, 1, 6, 12))
    assert first.officers == ("D1", "D2") and second.officers == ("D3", "D4")
    # Warnings by intake number alternate; a repeat of the rung (attempt 2) goes to the other.
    assert [pick(first, n, 1) for n in range(4)] == ["D1", "D2", "D1", "D2"]
    assert pick(first, 0, 2) == "D2" and pick(first, 1, 2) == "D1"


def test_leave_is_covered_by_the_next_free_officer_of_the_rotation(tmp_path: Path) -> None:
    body = """
[[rotations]]
station = "03"
role = "duty_officer"
start_time = "08:00"
end_time = "08:00"
every = "daily"
anchor = 2026-01-05
officers = ["D1", "D2", "D3"]

[[leave]]
officer = "D1"
start = 2026-01-05T00:00:00
end = 2026-01-05T20:00:00
reason = "sick leave"

[[leave]]
officer = "D2"
start = 2026-01-05T00:00:00
end = 2026-01-05T18:00:00
reason = "training"
"""
    r = load_rosters(write(tmp_path, body))
    morning = who(r, at(2026, 1, 5, 10))
    assert morning.officers == ("D3",)  # D1 off, D2 off too: D3 covers
    assert morning.notes == ("D1 on leave (sick leave): D3 covers",)
    evening = who(r, at(2026, 1, 5, 19))
    assert evening.officers == ("D2",)  # D2 is back and first of the spares
    # Leave ends mid-shift: from then on the rotation's own officer is on again.
    back = who(r, at(2026, 1, 5, 21))
    assert back.officers == ("D1",) and back.notes == ()
    assert who(r, at(2026, 1, 6, 11)).officers == ("D2",)  # the next turn, as planned


def test_leave_with_nobody_to_cover_leaves_the_rung_empty_with_the_reason(
    tmp_path: Path,
) -> None:
    body = DAY_NIGHT.split("[[rotations]]")[1]
    body = "[[rotations]]" + body.replace('["D031", "D032"]', '["D031"]')
    body += """
[[leave]]
officer = "D031"
start = 2026-01-06T00:00:00
end = 2026-01-07T00:00:00
reason = "sick leave"
"""
    r = load_rosters(write(tmp_path, body))
    on = who(r, at(2026, 1, 6, 10))
    assert on.officers == () and on.notes == ("D031 on leave (sick leave), nobody to cover",)


def test_overrides_take_the_whole_shift_or_replace_one_officer(tmp_path: Path) -> None:
    body = (
        DAY_NIGHT
        + """
[[overrides]]
station = "03"
role = "duty_officer"
officer = "D039"
start = 2026-01-06T08:00:00
end = 2026-01-06T20:00:00
reason = "swap with D031"

[[overrides]]
station = "03"
role = "duty_officer"
officer = "D038"
replaces = "D032"
start = 2026-01-07T20:00:00
end = 2026-01-08T08:00:00
reason = "cover"

[[overrides]]
station = "03"
role = "duty_officer"
officer = "D037"
replaces = "D099"
start = 2026-01-09T08:00:00
end = 2026-01-09T20:00:00
reason = "names nobody on the shift"
"""
    )
    r = load_rosters(write(tmp_path, body))
    swap = who(r, at(2026, 1, 6, 9))
    assert swap.officers == ("D039",) and swap.notes == ("D039 takes the shift: swap with D031",)
    assert who(r, at(2026, 1, 6, 20)).officers == ("D032",)  # the override has ended
    assert who(r, at(2026, 1, 7, 23)).officers == ("D038",)
    assert who(r, at(2026, 1, 9, 9)).officers == ("D031",)  # replaces someone not on


def test_a_rotation_in_new_york_keeps_its_wall_times_across_both_dst_changes(
    tmp_path: Path,
) -> None:
    body = """
[[rotations]]
station = "NY1"
role = "duty_officer"
start_time = "08:00"
end_time = "08:00"
every = "daily"
anchor = 2026-03-01
timezone = "America/New_York"
officers = ["E", "F"]
"""
    r = load_rosters(write(tmp_path, body))
    # Spring forward (8 March 2026, 02:00 -> 03:00): the shift from 7 March 08:00 EST to
    # 8 March 08:00 EDT lasts 23 hours, and the handover is at 08:00 on the wall both days.
    sat = who(r, at(2026, 3, 7, 12, tz=NY), "NY1")
    assert sat.starts_at == at(2026, 3, 7, 8, tz=NY)
    assert sat.ends_at == at(2026, 3, 8, 8, tz=NY)
    assert sat.ends_at - sat.starts_at == 23 * 3600
    assert who(r, at(2026, 3, 8, 8, tz=NY) - 1, "NY1").officers == sat.officers
    assert who(r, at(2026, 3, 8, 8, tz=NY), "NY1").officers != sat.officers
    # Fall back (1 November 2026): the shift over the change lasts 25 hours.
    sat = who(r, at(2026, 10, 31, 12, tz=NY), "NY1")
    assert sat.ends_at - sat.starts_at == 25 * 3600
    assert datetime.fromtimestamp(sat.ends_at, NY).hour == 8
    # Turns count in local dates: still strictly alternating after both changes.
    names = [
        who(r, at(2026, 3, 1, 12, tz=NY) + d * 86400, "NY1").officers[0] for d in range(0, 250)
    ]
    assert names == ["E", "F"] * 125


def test_a_shift_starting_in_the_skipped_hour_starts_an_hour_later_on_the_wall(
    tmp_path: Path,
) -> None:
    body = """
[[rotations]]
station = "NY1"
role = "chief"
start_time = "02:30"
end_time = "10:00"
every = "daily"
anchor = 2026-03-01
timezone = "America/New_York"
officers = ["G"]
"""
    r = load_rosters(write(tmp_path, body))
    # 02:30 does not exist on 8 March in New York: the shift starts at 02:30 EST = 03:30 EDT.
    starts = who(r, at(2026, 3, 8, 4, tz=NY), "NY1", "chief").starts_at
    assert starts == datetime(2026, 3, 8, 7, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert r.on_duty("NY1", "chief", starts - 1).officers == ()  # type: ignore[union-attr]


def test_a_rotation_in_shanghai_is_the_default_zone(tmp_path: Path) -> None:
    r = load_rosters(write(tmp_path, DAY_NIGHT))
    assert r.timezone == "Asia/Shanghai"
    # 08:00 Shanghai is 00:00 UTC.
    assert who(r, datetime(2026, 1, 6, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()).shift == "day"


def test_roster_show_lists_this_shift_and_the_next(tmp_path: Path) -> None:
    r = load_rosters(write(tmp_path, DAY_NIGHT))
    rows = r.day("03", at(2026, 1, 6, 10))
    assert [(role, on.shift, on.officers) for role, on in rows] == [
        ("duty_officer", "day", ("D031",)),
        ("duty_officer", "night", ("D032",)),
    ]


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        ('timezone = "Mars/Olympus"\n', "timezone", "IANA time zone"),
        (
            '[[rotations]]\nstation="03"\nrole="duty_officer"\nanchor=2026-01-05\n'
            'officers=["A"]\nevery="custom"\n',
            "rotations[0].days",
            "turn length",
        ),
        (
            '[[rotations]]\nstation="03"\nrole="duty_officer"\nanchor=2026-01-05\n'
            'officers=["A"]\ndays=3\n',
            "rotations[0].days",
            'every = "custom"',
        ),
        (
            '[[rotations]]\nstation="03"\nrole="duty_officer"\nanchor=2026-01-05\n'
            'officers=["A","A"]\n',
            "rotations[0].officers",
            "each once",
        ),
        (
            '[[rotations]]\nstation="03"\nrole="duty_officer"\nanchor=2026-01-05\n'
            'officers=["A"]\non_at_once=2\n',
            "rotations[0].on_at_once",
            "at most 1",
        ),
        (
            '[[rotations]]\nstation="03"\nrole="sheriff"\nanchor=2026-01-05\nofficers=["A"]\n',
            "rotations[0].role",
            "one of duty_officer, chief, grid_officer",
        ),
        (
            '[[rotations]]\nstation="03"\nrole="chief"\nanchor=2026-01-05\nofficers=["A"]\n'
            'start_time="8am"\n',
            "rotations[0].start_time",
            "",
        ),
        (
            '[[rotations]]\nstation="03"\nrole="chief"\nanchor=2026-01-05\nofficers=["A"]\n'
            'shfit="day"\n',
            "rotations[0]",
            "shfit",
        ),
        (
            '[[rotations]]\nstation="03"\nrole="chief"\nanchor=2026-01-05\nofficers=["A"]\n'
            'start_time="08:00"\nend_time="20:00"\n'
            '[[rotations]]\nstation="03"\nrole="chief"\nanchor=2026-01-05\nofficers=["B"]\n'
            'start_time="19:00"\nend_time="08:00"\n',
            "rotations[1].start_time",
            "does not overlap rotations[0]",
        ),
        (
            '[[leave]]\nofficer="A"\nstart=2026-01-06T00:00:00\nend=2026-01-05T00:00:00\n'
            'reason="x"\n',
            "leave[0].end",
            "after start",
        ),
        (
            '[[leave]]\nofficer="A"\nstart=2026-01-05T00:00:00\nend=2026-01-06T00:00:00\n'
            'reason="  "\n',
            "leave[0].reason",
            "non-blank",
        ),
        (
            '[[overrides]]\nstation="03"\nrole="chief"\nofficer="A"\n'
            "start=2026-01-05T00:00:00\nend=2026-01-06T00:00:00\n",
            "overrides[0]",
            "reason",
        ),
    ],
)
def test_a_bad_rosters_file_names_the_file_the_key_and_the_expectation(
    tmp_path: Path, body: str, key: str, expected: str
) -> None:
    path = tmp_path / "rosters.toml"
    path.write_text("version = 1\n" + body, encoding="utf-8")
    with pytest.raises(RuleError) as err:
        load_rosters(path)
    assert err.value.file == str(path)
    assert err.value.key.startswith(key), err.value
    assert expected in str(err.value)


def test_the_packaged_rosters_file_loads_and_is_empty() -> None:
    r = load_rosters()
    assert r.rotations == () and r.timezone == "Asia/Shanghai"
    assert r.on_duty("03", "duty_officer", 0.0) is None


ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe"]


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    start=st.integers(0, 23 * 60 + 59),
    length=st.integers(60, 23 * 60),
    every=st.sampled_from(["daily", "weekly", "custom"]),
    days=st.integers(1, 10),
    n=st.integers(1, 5),
    offset=st.floats(0, 2 * 365 * 86400, allow_nan=False),
)
def test_a_pair_of_shifts_covers_every_instant_once_and_hands_over_without_a_gap(
    tz: str, start: int, length: int, every: str, days: int, n: int, offset: float
) -> None:
    """Whatever the zone, the shift hours and the turn length: a day shift and the
    complementary night shift cover every instant exactly once; the shift that contains a
    time really contains it; the officer does not change within a shift; and the next shift
    starts the instant this one ends."""

    def hhmm(m: int) -> str:
        return f"{m // 60 % 24:02d}:{m % 60:02d}"

    common = {"station": "S", "role": "duty_officer", "anchor": date(2026, 1, 1), "every": every}
    if every == "custom":
        common["days"] = days
    officers = tuple(f"O{i}" for i in range(n))
    r = Rosters(
        timezone=tz,
        rotations=(
            Rotation(
                **common,  # type: ignore[arg-type]
                shift="a",
                officers=officers,
                start_time=hhmm(start),
                end_time=hhmm(start + length),
            ),
            Rotation(
                **common,  # type: ignore[arg-type]
                shift="b",
                officers=officers[::-1],
                start_time=hhmm(start + length),
                end_time=hhmm(start),
            ),
        ),
    )
    t = datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp() + offset
    on = who(r, t, "S")
    assert len(on.officers) == 1 and on.officers[0] in officers
    assert on.starts_at <= t < on.ends_at
    assert who(r, on.starts_at, "S").officers == on.officers
    assert who(r, on.ends_at - 1, "S").officers == on.officers
    nxt = who(r, on.ends_at, "S")
    assert nxt.starts_at == on.ends_at and nxt.shift != on.shift
    # The handover keeps its wall time, whatever the offset did meanwhile.
    zone = ZoneInfo(tz)
    wall = datetime.fromtimestamp(on.ends_at, zone)
    expected = hhmm(start + length) if on.shift == "a" else hhmm(start)
    h, m = map(int, expected.split(":"))
    planned = datetime(wall.year, wall.month, wall.day, h, m, tzinfo=zone)
    exists = planned.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(
        tzinfo=None
    ) == planned.replace(tzinfo=None)
    if exists:  # a handover planned in a skipped hour moves by the jump: tested above
        assert f"{wall:%H:%M}" == expected
    assert timedelta(seconds=on.ends_at - on.starts_at) <= timedelta(hours=24, minutes=60)
