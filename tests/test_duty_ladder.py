"""Rosters and silences inside the pure machine (engine/machine.py): the duty rung is resolved
when it fires, a warning that outlives a shift goes to the next shift's officer, a silenced rung
is skipped with its reason, and the fraud warning's last rung is never silenced."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.machine import Intake, WarningState, step
from engine.model import Action, ResidentTarget, Responders, WarningInstruction
from engine.rules.escalation import EscalationRules, load_escalation
from engine.rules.roster import Leave, Rosters, Rotation
from engine.rules.silences import Silence, Silences
from tests.test_ack_semantics import run_until as tick_until

SH = ZoneInfo("Asia/Shanghai")
BASE = load_escalation()
WHO = Responders(
    county_centre="cc",
    grid_officer="G0317",
    duty_officer="registry-duty",
    chief="registry-chief",
    visitors=("nb-1",),
    resident=7,
    grid="03-17",
    station="03",
)
ROT = {"station": "03", "role": "duty_officer", "anchor": date(2026, 1, 5), "every": "weekly"}
ROSTERS = Rosters(
    rotations=(
        Rotation(
            **ROT, shift="day", start_time="08:00", end_time="20:00", officers=("D031", "D032")
        ),  # type: ignore[arg-type]
        Rotation(
            **ROT, shift="night", start_time="20:00", end_time="08:00", officers=("D032", "D031")
        ),  # type: ignore[arg-type]
    )
)
RULES = msgspec.structs.replace(BASE, rosters=ROSTERS)


def local(d: int, h: int, mi: int = 0) -> float:
    return datetime(2026, 1, d, h, mi, tzinfo=SH).timestamp()


def start(
    at: float,
    rules: EscalationRules = RULES,
    level: int = 3,
    ordinal: int = 0,
    kind: str = "fraud",
    wid: str = "w1",
) -> WarningState:
    issued = datetime.fromtimestamp(at, SH)
    w = WarningInstruction(
        id=wid,
        kind=kind,
        level=level,
        target=ResidentTarget(7),
        issued_at=issued,
        expires=issued + timedelta(hours=24),
    )
    s, _, _ = step(None, Intake(w, WHO, w.expires.timestamp(), ordinal=ordinal), at, rules)
    assert s is not None
    return s


def run_until(
    s: WarningState, until: float, rules: EscalationRules = RULES
) -> tuple[WarningState, list[tuple[float, Action]]]:
    """test_ack_semantics' driver, with this module's rules (rosters) by default."""
    return tick_until(s, until, rules)


def paged(actions: list[tuple[float, Action]]) -> list[tuple[float, str]]:
    return [(t, a.to) for t, a in actions if a.action == "notify_officer"]


def test_the_duty_rung_goes_to_whoever_is_on_duty_when_it_fires() -> None:
    # Level 3 fraud: the grid officer at once and again at 30 min, the duty officer at 60 min.
    morning = start(local(6, 10))
    _, acts = run_until(morning, local(6, 11, 30))
    assert paged(acts)[-1] == (local(6, 11), "D031")  # the day shift's, not the registry's
    evening = start(local(6, 19, 10))
    s, acts = run_until(evening, local(6, 20, 30))
    # The warning arrived on the day shift and outlived it: the night officer gets it.
    assert paged(acts)[-1] == (local(6, 20, 10), "D032")
    line = next(x for x in s.timeline if x.to == "duty_officer#1")
    assert "night shift" in line.reason


def test_without_a_rotation_the_registrys_duty_officer_stands() -> None:
    s = start(local(6, 10), rules=BASE)
    _, acts = run_until(s, local(6, 11, 30), rules=BASE)
    assert paged(acts)[-1] == (local(6, 11), "registry-duty")


def test_nobody_on_duty_skips_the_rung_and_says_why() -> None:
    away = msgspec.structs.replace(
        ROSTERS,
        leave=(
            Leave("D031", datetime(2026, 1, 6, tzinfo=SH), datetime(2026, 1, 7, tzinfo=SH), "sick"),
            Leave(
                "D032", datetime(2026, 1, 6, tzinfo=SH), datetime(2026, 1, 7, tzinfo=SH), "leave"
            ),
        ),
    )
    rules = msgspec.structs.replace(BASE, rosters=away)
    s, acts = run_until(start(local(6, 10), rules), local(6, 11, 30), rules)
    assert paged(acts)[-1] == (local(6, 11), "cc")  # straight on to the county centre
    skipped = next(x for x in s.timeline if x.to == "duty_officer:skipped")
    assert "nobody on duty at station 03" in skipped.reason and "sick" in skipped.reason


def test_round_robin_spreads_warnings_over_the_officers_on_together() -> None:
    pair = Rosters(
        rotations=(
            Rotation(
                **ROT,
                start_time="08:00",
                end_time="08:00",
                on_at_once=2,  # type: ignore[arg-type]
                officers=("D1", "D2", "D3", "D4"),
            ),
        )
    )
    rules = msgspec.structs.replace(BASE, rosters=pair)
    got = []
    for n in range(4):
        _, acts = run_until(start(local(6, 10), rules, ordinal=n), local(6, 11, 30), rules)
        got.append(paged(acts)[-1][1])
    assert got == ["D1", "D2", "D1", "D2"]


SILENCED = Silences(
    (
        Silence(
            id="leave-d032",
            author="王队长",
            reason="D032 on leave, not in the roster file yet",
            starts_at=local(6, 0),
            ends_at=local(7, 0),
            officer="D032",
        ),
    )
)


def test_a_silenced_rung_is_skipped_with_the_silences_reason_and_the_ladder_goes_on() -> None:
    rules = msgspec.structs.replace(RULES, silences=SILENCED)
    s, acts = run_until(start(local(6, 19, 10), rules), local(6, 20, 30), rules)
    assert paged(acts)[-1] == (local(6, 20, 10), "cc")
    line = next(x for x in s.timeline if x.to == "duty_officer:silenced")
    assert "leave-d032" in line.reason and "王队长" in line.reason and "D032" in line.reason
    # Outside the silence's window the same rung pages D032.
    s, acts = run_until(start(local(7, 19, 10), rules), local(7, 20, 30), rules)
    assert paged(acts)[-1] == (local(7, 20, 10), "D032")


def test_the_county_centre_always_gets_a_fraud_warning_whatever_the_silences_say() -> None:
    # A silence built in code (a file like this one is refused at load) that would silence
    # every rung: the fraud warning still reaches the county centre.
    everyone = Silences(
        tuple(
            Silence(id=f"s-{role}", author="a", reason="r", starts_at=0.0, ends_at=4e9, role=role)
            for role in ("grid_officer", "duty_officer", "chief", "county_centre")
        )
    )
    rules = msgspec.structs.replace(RULES, silences=everyone)
    s, acts = run_until(start(local(6, 10), rules, level=1), local(6, 12), rules)
    assert {to for _, to in paged(acts)} == {"cc"}
    assert s.officer.status != "exhausted" or paged(acts)
    help_ = start(local(6, 10), rules, level=1, kind="help_request", wid="w2")
    h, acts = run_until(help_, local(6, 12), rules)
    assert paged(acts) == [] and h.officer.status == "exhausted"


@settings(max_examples=150, deadline=None)
@given(
    minute=st.integers(0, 14 * 24 * 60),
    level=st.integers(1, 4),
    silenced=st.sets(st.sampled_from(["G0317", "D031", "D032", "registry-chief"])),
)
def test_every_rung_that_fires_pages_the_roster_or_is_skipped_with_a_reason(
    minute: int, level: int, silenced: set[str]
) -> None:
    """Whenever the warning arrives and whoever is silenced: each duty page goes to the
    officer the roster has on at that instant, no silenced officer is ever paged, and every
    rung not paged has a timeline line saying why."""
    sil = Silences(
        tuple(
            Silence(id=f"s-{o}", author="a", reason="r", starts_at=0.0, ends_at=4e9, officer=o)
            for o in sorted(silenced)
        )
    )
    rules = msgspec.structs.replace(RULES, silences=sil)
    t0 = local(5, 0) + minute * 60
    s, acts = run_until(start(t0, rules, level=level), t0 + 2 * 86400, rules)
    for t, a in acts:
        if a.action != "notify_officer":
            continue
        assert a.to not in silenced
        if a.to in ("D031", "D032"):
            on = ROSTERS.on_duty("03", "duty_officer", t)
            assert on is not None and on.officers == (a.to,)
    for line in s.timeline:
        if line.to.endswith((":silenced", ":skipped")):
            assert line.reason
    silenced_lines = [x for x in s.timeline if x.to.endswith(":silenced")]
    assert all(any(o in x.reason for o in silenced) for x in silenced_lines)
