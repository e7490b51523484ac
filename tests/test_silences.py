"""Silences (engine/rules/silences.py): matchers, time windows, local times, the fraud rule
at load and at match, and the file's validation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rules.loading import RuleError
from engine.rules.silences import Silence, Silences, load_silences, protected

SH = ZoneInfo("Asia/Shanghai")
T = datetime(2026, 12, 4, 1, 0, tzinfo=SH).timestamp()


def silence(**kw: object) -> Silence:
    base: dict[str, object] = {
        "id": "s1",
        "author": "王队长",
        "reason": "network maintenance",
        "starts_at": T,
        "ends_at": T + 4 * 3600,
    }
    return Silence(**{**base, **kw})  # type: ignore[arg-type]


def rung(s: Silences, at: float = T + 60, **kw: object) -> Silence | None:
    q: dict[str, object] = {
        "officer": "D031",
        "role": "duty_officer",
        "station": "03",
        "grid": "03-17",
        "kind": "road_hazard",
        "at": at,
    }
    return s.match(**{**q, **kw})  # type: ignore[arg-type]


def test_every_matcher_given_must_match() -> None:
    s = Silences((silence(station="03", role="duty_officer"),))
    assert rung(s) is not None
    assert rung(s, station="04") is None
    assert rung(s, role="chief") is None
    by_officer = Silences((silence(officer="G0317"),))
    assert rung(by_officer, officer="G0317", role="grid_officer") is not None
    assert rung(by_officer) is None
    by_kind = Silences((silence(kind="road_hazard", grid="03-17"),))
    assert rung(by_kind) is not None
    assert rung(by_kind, kind="missing_person") is None
    assert rung(by_kind, grid="03-18") is None


def test_a_silence_is_active_from_its_start_until_just_before_its_end() -> None:
    s = Silences((silence(station="03"),))
    assert rung(s, at=T - 1) is None
    assert rung(s, at=T) is not None
    assert rung(s, at=T + 4 * 3600 - 1) is not None
    assert rung(s, at=T + 4 * 3600) is None
    assert s.active(T) == s.items and s.active(T - 1) == ()
    assert s.next_change(T - 10) == T and s.next_change(T) == T + 4 * 3600
    assert s.next_change(T + 4 * 3600) is None


def test_the_first_matching_silence_in_file_order_is_the_one_reported() -> None:
    s = Silences((silence(id="a", station="04"), silence(id="b", station="03"), silence(id="c")))
    hit = rung(s)
    assert hit is not None and hit.id == "b"


def test_the_county_centres_rung_of_a_fraud_warning_is_never_silenced() -> None:
    built_in_code = Silences((silence(role="county_centre"),))
    assert rung(built_in_code, role="county_centre", officer="cc", kind="fraud") is None
    assert rung(built_in_code, role="county_centre", officer="cc", kind="help") is not None
    assert protected("fraud", "county_centre")
    assert not protected("fraud", "chief") and not protected("help", "county_centre")


def test_describe_names_the_silence_its_author_the_end_and_the_reason() -> None:
    text = silence(station="03").describe()
    assert text == ("silence s1 by 王队长 until 2026-12-04 05:00 +0800: network maintenance")


def write(tmp_path: Path, body: str, tz: str = "Asia/Shanghai") -> Path:
    p = tmp_path / "silences.toml"
    p.write_text(f'version = 1\ntimezone = "{tz}"\n' + body, encoding="utf-8")
    return p


ONE = """
[[silences]]
id = "st03"
author = "王队长"
reason = "station 03 offline"
start = 2026-12-04T01:00:00
end = 2026-12-04T05:00:00+08:00
station = "03"
"""


def test_times_without_an_offset_are_read_in_the_files_zone(tmp_path: Path) -> None:
    s = load_silences(write(tmp_path, ONE))
    (one,) = s.items
    assert one.starts_at == T and one.ends_at == T + 4 * 3600
    later = ONE.replace("2026-12-04T05:00:00+08:00", "2026-12-05T05:00:00+08:00")
    ny = load_silences(write(tmp_path, later, "America/New_York"))
    start = datetime(2026, 12, 4, 1, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
    assert ny.items[0].starts_at == start
    assert ny.items[0].ends_at == T + 28 * 3600  # written with an offset: taken as written


def test_the_packaged_silences_file_loads_and_silences_nothing() -> None:
    s = load_silences()
    assert s.items == ()
    assert rung(s) is None


@pytest.mark.parametrize(
    ("entry", "key", "expected"),
    [
        ('role = "county_centre"', "silences[0].kind", "never be silenced into nothing"),
        ('role = "county_centre"\nkind = "fraud"', "silences[0].kind", "other than"),
        ('officer = "county_centre"', "silences[0].kind", "other than"),
        ('role = "sheriff"', "silences[0].role", "one of grid_officer"),
        ("", "silences[0]", "at least one matcher"),
        ('station = "03"\nfoo = 1', "silences[0]", "foo"),
    ],
)
def test_a_bad_silence_names_the_file_the_key_and_the_expectation(
    tmp_path: Path, entry: str, key: str, expected: str
) -> None:
    body = (
        '[[silences]]\nid = "x"\nauthor = "a"\nreason = "r"\n'
        "start = 2026-12-04T01:00:00\nend = 2026-12-04T05:00:00\n" + entry + "\n"
    )
    path = write(tmp_path, body)
    with pytest.raises(RuleError) as err:
        load_silences(path)
    assert err.value.file == str(path)
    assert err.value.key.startswith(key), err.value
    assert expected in str(err.value)


def test_the_centre_may_be_silenced_for_another_kind(tmp_path: Path) -> None:
    body = ONE.replace('station = "03"', 'role = "county_centre"\nkind = "road_hazard"')
    s = load_silences(write(tmp_path, body))
    assert rung(s, role="county_centre", officer="cc") is not None


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        (("end = 2026-12-04T05:00:00+08:00", "end = 2026-12-04T00:00:00"), "end", "after start"),
        (("end = 2026-12-04T05:00:00+08:00", "end = 2027-01-10T00:00:00"), "end", "31 days"),
        (('author = "王队长"', 'author = "  "'), "author", "non-blank"),
        (('reason = "station 03 offline"', 'reason = ""'), "reason", ""),
        (('id = "st03"', "id = 3"), "id", "str"),
        (("start = 2026-12-04T01:00:00", 'start = "tomorrow"'), "start", "datetime"),
    ],
)
def test_bad_times_and_texts_name_their_key(
    tmp_path: Path, change: tuple[str, str], key: str, expected: str
) -> None:
    path = write(tmp_path, ONE.replace(*change))
    with pytest.raises(RuleError) as err:
        load_silences(path)
    assert err.value.key == f"silences[0].{key}", err.value
    assert expected in str(err.value)


def test_two_silences_with_one_id_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as err:
        load_silences(write(tmp_path, ONE + ONE))
    assert err.value.key == "silences[1].id"


OFFICERS = st.sampled_from(["G1", "D1", "C1", "cc"])
ROLES = st.sampled_from(["grid_officer", "duty_officer", "chief", "county_centre"])
STATIONS = st.sampled_from(["03", "04", None])
KINDS = st.sampled_from(["fraud", "help", "road_hazard"])


@st.composite
def silences(draw: st.DrawFn) -> Silence:
    start = draw(st.integers(0, 100))
    return Silence(
        id=f"s{draw(st.integers(0, 999))}",
        author="a",
        reason="r",
        starts_at=float(start),
        ends_at=float(start + draw(st.integers(1, 100))),
        officer=draw(st.one_of(st.none(), OFFICERS)),
        role=draw(st.one_of(st.none(), ROLES)),
        station=draw(STATIONS),
        kind=draw(st.one_of(st.none(), KINDS)),
    )


@settings(max_examples=400)
@given(
    items=st.lists(silences(), max_size=6),
    officer=OFFICERS,
    role=ROLES,
    station=STATIONS,
    kind=KINDS,
    at=st.integers(-5, 210),
)
def test_match_is_the_first_active_silence_whose_every_matcher_holds(
    items: list[Silence], officer: str, role: str, station: str | None, kind: str, at: int
) -> None:
    """A reference written the long way: match returns the first silence active at ``at``
    whose every given matcher equals the rung, and nothing for the protected fraud rung."""
    s = Silences(tuple(items))
    got = s.match(officer=officer, role=role, station=station, grid=None, kind=kind, at=at)

    def holds(x: Silence) -> bool:
        wants = {"officer": officer, "role": role, "station": station, "kind": kind}
        return x.starts_at <= at < x.ends_at and all(
            getattr(x, k) is None or getattr(x, k) == v for k, v in wants.items()
        )

    expected = next((x for x in items if holds(x)), None)
    if kind == "fraud" and role == "county_centre":
        expected = None
    assert got is expected
