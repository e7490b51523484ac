"""Correlation, inhibition and area alerts (issue 14, items 3 and 4), through the engine's loop.

Several warnings about one resident, phone or household within the window are one incident:
one ladder, every source linked, the most urgent level wins, and every joined warning ends as
the incident ends. A road hazard for a grid absorbs the same hazard's per-resident warnings in
that grid. Many fraud warnings in one grid within minutes alert the grid's officer once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from engine.incidents import Correlator, apply
from engine.journal import FsyncPolicy, Journal
from engine.machine import Intake
from engine.model import (
    Acknowledged,
    Action,
    AreaTarget,
    Outcome,
    PhoneTarget,
    ResidentTarget,
    Responders,
    WarningInstruction,
)
from engine.privacy import phone_digest
from engine.rules.correlation import load_correlation
from engine.rules.escalation import load_escalation
from engine.scheduler import Engine
from engine.testing.directory import StaticDirectory

BASE = load_escalation()
RULES = msgspec.structs.replace(BASE, correlation=load_correlation(kinds=frozenset(BASE.kinds)))
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
PHONE = "13800000007"


def resident(rid: int, grid: str = "03-17") -> Responders:
    return Responders(
        county_centre="cc",
        grid_officer=f"P-{grid}",
        duty_officer="duty",
        chief="chief",
        visitors=(f"nb-{rid}",),
        resident=rid,
        grid=grid,
        station=grid[:2],
        household=phone_digest(PHONE) if rid in (7, 8) else None,  # 7 and 8 share a phone
    )


DIRECTORY = StaticDirectory(
    county_centre="cc",
    residents={rid: resident(rid, "03-17" if rid < 40 else "04-02") for rid in range(60)},
    areas={
        "grid:03-17": Responders(
            county_centre="cc", grid_officer="P-03-17", grid="03-17", station="03"
        )
    },
    phones={PHONE: 7},
)


def warning(
    wid: str,
    target: ResidentTarget | PhoneTarget | AreaTarget,
    *,
    kind: str = "fraud",
    level: int = 2,
    at: datetime = T0,
    **kw: object,
) -> WarningInstruction:
    return WarningInstruction(
        id=wid,
        kind=kind,
        level=level,
        target=target,
        issued_at=at,
        expires=at + timedelta(hours=6),
        **kw,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def engine_with(sent: list[Action], **options: object) -> AsyncIterator[Engine]:
    t0 = trio.current_time()

    def clock() -> datetime:
        return T0 + timedelta(seconds=trio.current_time() - t0)

    async with (
        Engine.open(DIRECTORY, RULES, wall_clock=clock, **options) as engine,  # type: ignore[arg-type]
        trio.open_nursery() as nursery,
    ):

        async def outbox() -> None:
            async for a in engine.actions():
                sent.append(a)

        nursery.start_soon(outbox)
        yield engine
        nursery.cancel_scope.cancel()


async def settle() -> None:
    await trio.sleep(0.001)


def officers(sent: list[Action], wid: str) -> list[str]:
    return [a.to for a in sent if a.warning_id == wid and a.action == "notify_officer"]


async def test_warnings_about_one_resident_within_the_window_are_one_incident(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[Action] = []
    async with engine_with(sent) as engine:
        await engine.submit(warning("w1", ResidentTarget(5), level=3))
        await trio.sleep(600)
        await engine.submit(
            warning("w2", ResidentTarget(5), level=1, at=T0 + timedelta(minutes=10))
        )
        await settle()
        first, second = engine.status("w1"), engine.status("w2")
        assert first is not None and second is not None
        assert second.status == "linked" and second.incident == "w1"
        assert first.sources == ("w2",)
        assert first.plan_level == 1, "the most urgent level wins"
        assert officers(sent, "w2") == [], "one ladder: the joined warning sends nothing"
        assert [a.cause for a in sent if a.warning_id == "w1"][-1] in ("linked", "new")
        # an ack about the joined warning works the incident
        await engine.feedback(Acknowledged(warning_id="w2", officer="P-03-17"))
        await settle()
        first = engine.status("w1")
        assert first is not None and first.acked_by == "P-03-17"
        # the outcome ends both, with the same outcome
        await engine.feedback(Outcome(warning_id="w1", outcome="dissuaded"))
        await settle()
        first, second = engine.status("w1"), engine.status("w2")
        assert first is not None and second is not None
        assert (first.status, first.outcome) == ("closed", "dissuaded")
        assert (second.status, second.outcome) == ("closed", "dissuaded")
        assert engine.pending == 0


async def test_outside_the_window_or_another_kind_is_a_warning_of_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[Action] = []
    async with engine_with(sent) as engine:
        await engine.submit(warning("w1", ResidentTarget(5)))
        await trio.sleep(1801)  # the window is 1800 s
        later = T0 + timedelta(seconds=1801)
        await engine.submit(warning("w2", ResidentTarget(5), at=later))
        await engine.submit(warning("w3", ResidentTarget(6), kind="missing_person", at=later))
        await engine.submit(warning("w4", ResidentTarget(6), kind="missing_person", at=later))
        await settle()
        for wid in ("w2", "w3", "w4"):
            s = engine.status(wid)
            assert s is not None and s.status == "active" and s.incident is None, wid
            assert officers(sent, wid), wid


async def test_a_phone_and_the_household_that_shares_it_meet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[Action] = []
    async with engine_with(sent) as engine:
        await engine.submit(warning("w1", ResidentTarget(8)))  # household of 7 and 8
        await engine.submit(warning("w2", PhoneTarget(PHONE)))  # 7's number
        await engine.submit(warning("w3", PhoneTarget("13999999999")))  # nobody's
        await engine.submit(warning("w4", PhoneTarget("+86 139-9999-9999")))  # the same number
        await settle()
        assert engine.status("w2").incident == "w1"  # type: ignore[union-attr]
        assert engine.status("w3").incident is None  # type: ignore[union-attr]
        assert engine.status("w4").incident == "w3"  # type: ignore[union-attr]


async def test_exercises_never_join_real_incidents(autojump_clock: trio.testing.MockClock) -> None:
    sent: list[Action] = []
    async with engine_with(sent) as engine:
        await engine.submit(warning("w1", ResidentTarget(5)))
        await engine.submit(warning("x1", ResidentTarget(5), status="exercise"))
        await settle()
        x = engine.status("x1")
        assert x is not None and x.status == "active" and x.incident is None
        assert all(a.exercise and a.to == "county_centre" for a in sent if a.warning_id == "x1")
        assert not [a for a in sent if a.warning_id == "x1" and a.to.startswith("resident:")]


async def test_an_area_hazard_absorbs_the_same_hazards_pushes_in_its_grid(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[Action] = []
    async with engine_with(sent) as engine:
        await engine.submit(warning("road", AreaTarget("grid:03-17"), kind="road_hazard"))
        await engine.submit(warning("r5", ResidentTarget(5), kind="road_hazard"))  # same grid
        await engine.submit(warning("r45", ResidentTarget(45), kind="road_hazard"))  # 04-02
        await engine.submit(warning("f6", ResidentTarget(6), kind="fraud"))  # not inhibited
        await settle()
        r5, r45, f6 = engine.status("r5"), engine.status("r45"), engine.status("f6")
        assert r5 is not None and r5.status == "linked" and r5.incident == "road"
        assert "inhibited" in r5.timeline[0].reason
        # No second push of the hazard: only the centre hears which warning took it.
        r5_sent = [(a.action, a.to) for a in sent if a.warning_id == "r5"]
        assert r5_sent == [("report", "cc")], r5_sent
        assert r45 is not None and r45.status == "active"
        assert f6 is not None and f6.status == "active"
        await engine.submit(
            warning("road", AreaTarget("grid:03-17"), kind="road_hazard", msg_type="cancel")
        )
        await settle()
        r5 = engine.status("r5")
        assert r5 is not None and r5.status == "cancelled", "ends as the area warning ends"
        await engine.submit(warning("r6", ResidentTarget(6), kind="road_hazard"))
        await settle()
        r6 = engine.status("r6")
        assert r6 is not None and r6.status == "active", "no active area warning: its own ladder"


async def test_many_fraud_warnings_in_one_grid_alert_its_officer_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[Action] = []
    async with engine_with(sent) as engine:
        for i in range(4):  # four, a minute apart: below the threshold of five
            await engine.submit(
                warning(f"w{i}", ResidentTarget(10 + i), at=T0 + timedelta(minutes=i))
            )
            await trio.sleep(60)
        assert not [a for a in sent if a.action == "area_alert"]
        await engine.submit(warning("w4", ResidentTarget(14), at=T0 + timedelta(minutes=4)))
        await engine.submit(warning("w5", ResidentTarget(15), at=T0 + timedelta(minutes=4)))
        await engine.submit(warning("o1", ResidentTarget(41), at=T0 + timedelta(minutes=4)))
        await settle()
        alerts = [a for a in sent if a.action == "area_alert"]
        assert [(a.to, a.warning_id) for a in alerts] == [("P-03-17", "w4")]
        assert "grid 03-17" in alerts[0].reason


def test_the_correlator_rebuilt_from_states_decides_as_the_live_one_did() -> None:
    """After a restart the index comes from the states: a warning arriving then joins the
    same incident it would have joined without the restart."""
    now = T0.timestamp()
    live = Correlator(RULES.correlation)
    states: dict[str, object] = {}
    w1 = warning("w1", ResidentTarget(5))
    r = DIRECTORY.responders(w1.target)
    decision = live.decide(w1, r, now, states)  # type: ignore[arg-type]
    changes = apply(states, "w1", Intake(w1, r, w1.expires.timestamp()), now, RULES, decision)  # type: ignore[arg-type]
    assert changes is not None
    states = {w: new for w, _, new, _, _ in changes}
    restored = Correlator(RULES.correlation)
    restored.restore(states, now + 60)  # type: ignore[arg-type]
    w2 = warning("w2", PhoneTarget(PHONE))
    r2 = DIRECTORY.responders(ResidentTarget(7))
    w3 = warning("w3", ResidentTarget(5))
    assert restored.decide(w3, r, now + 60, states).incident == "w1"  # type: ignore[arg-type]
    assert restored.decide(w2, r2, now + 60, states).incident is None  # type: ignore[arg-type]


@pytest.mark.parametrize("snapshot", [False, True])
async def test_incidents_survive_a_restart(tmp_path: Path, snapshot: bool) -> None:
    """Real clock and journal: the links, the raised level and the area alert come back the
    same after a restart, and an outcome then ends every linked warning."""
    rules = RULES
    before: dict[str, object] = {}

    async def run(then: bool) -> None:
        async with (
            Journal.open(tmp_path / "j", fsync=FsyncPolicy.always()) as journal,
            Engine.open(DIRECTORY, rules, journal=journal) as engine,
        ):
            if not then:
                now = datetime.now(UTC)
                await engine.submit(warning("w1", ResidentTarget(5), level=3, at=now))
                await engine.submit(warning("w2", ResidentTarget(5), level=1, at=now))
                await engine.submit(
                    warning("road", AreaTarget("grid:03-17"), kind="road_hazard", at=now)
                )
                await engine.submit(warning("r9", ResidentTarget(9), kind="road_hazard", at=now))
                await engine.durable()
                before.update({w: engine.status(w) for w in ("w1", "w2", "road", "r9")})
                if snapshot:
                    await engine.snapshot()
                return
            after = {w: engine.status(w) for w in ("w1", "w2", "road", "r9")}
            assert after == before
            await engine.feedback(Outcome(warning_id="w2", outcome="false_alarm"))
            await engine.durable()
            w1, w2 = engine.status("w1"), engine.status("w2")
            assert w1 is not None and w2 is not None
            assert (w1.status, w2.status, w2.outcome) == ("closed", "closed", "false_alarm")
            w3 = warning("w3", ResidentTarget(9), kind="road_hazard", at=datetime.now(UTC))
            await engine.submit(w3)
            await engine.durable()
            assert engine.status("w3").incident == "road", "the restored index still inhibits"  # type: ignore[union-attr]

    with trio.fail_after(20):
        await run(False)
        await run(True)
