"""The trio scheduler under ``autojump_clock``: deadlines land exactly, intake and feedback are
applied in order, garbage is refused without stopping the engine, and 10,000 warnings with mixed
feedback all end as they should."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.machine import WarningState
from engine.model import (
    Acknowledged,
    Action,
    AreaTarget,
    CallResult,
    InvalidFeedback,
    InvalidWarning,
    MessageRead,
    Outcome,
    PhoneTarget,
    ResidentTarget,
    Responders,
    Target,
    WarningInstruction,
)
from engine.rules.escalation import load_escalation
from engine.scheduler import Engine
from engine.testing.directory import StaticDirectory
from tests.props import examples

RULES = load_escalation()


def responders_for(rid: int) -> Responders:
    return Responders(
        county_centre="cc",
        grid_officer=f"grid-{rid % 50}",
        duty_officer=f"duty-{rid % 5}",
        chief=f"chief-{rid % 5}",
        visitors=(f"nb-{rid}",),
        resident=rid,
    )


DIRECTORY = StaticDirectory(
    county_centre="cc",
    residents={rid: responders_for(rid) for rid in range(100)},
    areas={"grid-3": Responders(county_centre="cc", grid_officer="grid-3-officer")},
    phones={"13800000007": 7},
)


class Recorder:
    """Collects actions with the trio time they came out of the outbox."""

    def __init__(self) -> None:
        self.actions: list[tuple[float, Action]] = []

    def of(self, wid: str, kind: str | None = None) -> list[tuple[float, str, str]]:
        return [
            (t, a.action, a.to)
            for t, a in self.actions
            if a.warning_id == wid and (kind is None or a.action == kind)
        ]

    async def run(self, engine: Engine) -> None:
        async for action in engine.actions():
            self.actions.append((trio.current_time(), action))


@asynccontextmanager
async def running(**options: object) -> AsyncIterator[tuple[Engine, Recorder]]:
    rec = Recorder()
    async with Engine.open(DIRECTORY, RULES, **options) as engine, trio.open_nursery() as n:  # type: ignore[arg-type]
        n.start_soon(rec.run, engine)
        yield engine, rec
        n.cancel_scope.cancel()


def make(
    engine: Engine,
    wid: str = "w1",
    kind: str = "fraud",
    level: int = 1,
    target: Target | None = None,
    msg_type: str = "alert",
    minutes: float = 120,
) -> WarningInstruction:
    now = engine.wall_clock()
    return WarningInstruction(
        id=wid,
        kind=kind,
        level=level,
        target=target if target is not None else ResidentTarget(7),
        issued_at=now,
        expires=now + timedelta(minutes=minutes),
        msg_type=msg_type,  # type: ignore[arg-type]
    )


def status(engine: Engine, wid: str) -> WarningState:
    s = engine.status(wid)
    assert s is not None
    return s


async def test_escalation_happens_exactly_at_the_configured_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (engine, rec):
        t0 = trio.current_time()
        await engine.submit(make(engine))
        await trio.sleep(3000)
        got = [(t - t0, to) for t, _, to in rec.of("w1", "notify_officer")]
        # rules/escalation.toml, officer_ladders.urgent: 120, 120, 300, then 600 x 3
        assert got == [
            (0, "grid-7"),
            (120, "duty-2"),
            (240, "chief-2"),
            (540, "cc"),
            (1140, "cc"),
            (1740, "cc"),
        ]
        contact = [(t - t0, kind) for t, kind, _ in rec.of("w1") if kind in ("call", "chat")]
        assert contact == [(0, "call"), (60, "call"), (120, "chat")]


async def test_ack_stops_escalation_and_outcome_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (engine, rec):
        t0 = trio.current_time()
        await engine.submit(make(engine))
        await trio.sleep(100)
        await engine.feedback(Acknowledged(warning_id="w1", officer="grid-7"))
        await engine.feedback(CallResult(warning_id="w1", result="answered"))
        await trio.sleep(5000)
        assert [to for _, _, to in rec.of("w1", "notify_officer")] == ["grid-7"]
        await engine.feedback(Outcome(warning_id="w1", outcome="dissuaded"))
        await trio.sleep(1)
        s = status(engine, "w1")
        assert (s.status, s.outcome, s.acked_by) == ("closed", "dissuaded", "grid-7")
        assert rec.of("w1", "stand_down") == [(t0 + 5100, "stand_down", "grid-7")]


async def test_busy_moves_to_chat_without_waiting(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (engine, rec):
        t0 = trio.current_time()
        await engine.submit(make(engine))
        await trio.sleep(5)
        key = status(engine, "w1").contact.key
        await engine.feedback(CallResult(warning_id="w1", result="busy", key=key))
        await trio.sleep(5)
        await engine.feedback(CallResult(warning_id="w1", result="no_answer"))
        await trio.sleep(1)
        assert [(t - t0, k) for t, k, _ in rec.of("w1") if k in ("call", "chat")] == [
            (0, "call"),
            (5, "call"),
            (10, "chat"),
        ]


async def test_cancel_stops_everything(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (engine, rec):
        await engine.submit(make(engine))
        await trio.sleep(130)
        await engine.submit(make(engine, msg_type="cancel"))
        await trio.sleep(1)
        n = len(rec.of("w1"))
        await trio.sleep(10_000)
        assert len(rec.of("w1")) == n  # nothing after the cancel
        assert {to for _, _, to in rec.of("w1", "stand_down")} == {"grid-7", "duty-2"}
        assert status(engine, "w1").status == "cancelled"
        assert status(engine, "w1").next_deadline is None


async def test_update_raises_level_and_replans(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (engine, rec):
        t0 = trio.current_time()
        await engine.submit(make(engine, level=3))
        await trio.sleep(600)
        assert [to for _, _, to in rec.of("w1", "notify_officer")] == ["grid-7"]
        await engine.submit(make(engine, level=1, msg_type="update"))
        await trio.sleep(400)
        got = [(t - t0, to) for t, _, to in rec.of("w1", "notify_officer")]
        # level 3: grid officer has 1800 s; raised at 600 to level 1: re-notified, 120 s each
        assert got == [(0, "grid-7"), (600, "grid-7"), (720, "duty-2"), (840, "chief-2")]
        keys = [a.key for _, a in rec.actions if a.action == "notify_officer"]
        assert len(keys) == len(set(keys))
        assert status(engine, "w1").plan_level == 1


async def test_duplicate_submit_is_idempotent(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (engine, rec):
        w = make(engine)
        for _ in range(5):
            await engine.submit(w)
        await trio.sleep(1)
        await engine.submit(w)
        await trio.sleep(200)
        assert [to for _, _, to in rec.of("w1", "notify_officer")] == ["grid-7", "duty-2"]
        assert status(engine, "w1").duplicates == 5


async def test_garbage_is_refused_with_a_typed_error_and_the_engine_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (engine, rec):
        with pytest.raises(InvalidWarning) as err:
            await engine.submit(b'{"id": "x", "kind": "fraud", "level": 9}')
        assert err.value.field == "level"
        with pytest.raises(InvalidWarning) as err:
            await engine.submit(make(engine, wid="x", kind="volcano"))
        assert err.value.field == "kind"
        with pytest.raises(InvalidWarning) as err:
            await engine.submit(
                make(engine, wid="x", kind="road_hazard", target=PhoneTarget("13800001234"))
            )
        assert err.value.field == "target"
        with pytest.raises(InvalidWarning):
            await engine.submit(12345)  # type: ignore[arg-type]
        with pytest.raises(InvalidWarning) as err:  # built in Python: msgspec did not check it
            await engine.submit(make(engine, wid="x", level=9))
        assert err.value.field == "level"
        with pytest.raises(InvalidFeedback) as ferr:
            await engine.feedback(b'{"type": "ack", "warning_id": "w1"}')
        assert ferr.value.field == "officer"
        assert [d.source for d in engine.dead_letters] == ["warning"] * 5 + ["feedback"]
        # still working
        await engine.submit(msgspec.json.encode(make(engine)))
        await trio.sleep(1)
        assert [k for _, k, _ in rec.of("w1")] == ["notify_officer", "call"]


async def test_feedback_for_unknown_warning_is_dead_lettered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (engine, _):
        await engine.feedback(MessageRead(warning_id="ghost"))
        await trio.sleep(1)
        assert [(d.source, d.warning_id) for d in engine.dead_letters] == [("feedback", "ghost")]
        assert engine.stats.dead_letters == 1


async def test_unknown_or_failing_directory_goes_to_county(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken:
        def responders(self, target: Target) -> Responders:
            raise RuntimeError("registry down")

        def resident_by_phone(self, phone: str) -> int | None:
            raise RuntimeError("registry down")

    async with running() as (engine, rec):
        await engine.submit(make(engine, wid="p", target=PhoneTarget("13911112222")))
        await trio.sleep(1)
        assert rec.of("p", "notify_officer") == [(pytest.approx(0, abs=2), "notify_officer", "cc")]
        timeline = msgspec.json.encode(status(engine, "p").timeline).decode()
        assert "13911112222" not in timeline and "***2222" in timeline

    rec2 = Recorder()
    async with Engine.open(Broken(), RULES, county_centre="hq") as engine, trio.open_nursery() as n:
        n.start_soon(rec2.run, engine)
        await engine.submit(make(engine, wid="b"))
        await trio.sleep(1)
        assert [to for _, _, to in rec2.of("b", "notify_officer")] == ["hq"]
        assert "directory error (RuntimeError)" in status(engine, "b").timeline[1].reason
        n.cancel_scope.cancel()


async def test_known_phone_is_resolved_to_the_resident(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as (engine, rec):
        await engine.submit(make(engine, target=PhoneTarget("13800000007")))
        await trio.sleep(1)
        assert [(k, to) for _, k, to in rec.of("w1")] == [
            ("notify_officer", "grid-7"),
            ("call", "resident:7"),
        ]


async def test_area_warning_broadcasts(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (engine, rec):
        await engine.submit(make(engine, kind="road_hazard", level=2, target=AreaTarget("grid-3")))
        await trio.sleep(1)
        assert [(k, to) for _, k, to in rec.of("w1")] == [
            ("broadcast", "grid-3"),
            ("notify_officer", "grid-3-officer"),
        ]


async def test_ended_warnings_are_kept_for_dedup_then_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(retain_ended_s=3600.0) as (engine, _):
        await engine.submit(make(engine))
        await engine.feedback(Outcome(warning_id="w1", outcome="false_alarm"))
        await trio.sleep(1800)
        await engine.submit(make(engine))  # within retention: a duplicate
        await trio.sleep(1)
        assert status(engine, "w1").duplicates == 1
        await trio.sleep(1800)
        assert engine.status("w1") is None and engine.stats.evicted == 1
        assert engine.pending == 0


async def test_expiry_uses_the_warning_expires_time(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as (engine, rec):
        t0, e0 = trio.current_time(), engine.now()  # trio time; engine (epoch) time
        await engine.submit(make(engine, minutes=10))
        await trio.sleep(3600)
        s = status(engine, "w1")
        assert (s.status, s.outcome) == ("expired", "unreachable")
        assert s.timeline[-1].at == pytest.approx(e0 + 600, abs=1e-3)
        assert rec.of("w1", "report")[-1][0] == pytest.approx(t0 + 600)


async def test_actions_channel_ends_when_engine_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Engine.open(DIRECTORY, RULES) as engine:
        await engine.submit(make(engine))
        await trio.sleep(1)
        receiver = engine.actions()
    got = [a.action async for a in receiver]
    assert got == ["notify_officer", "call"]


# --- 10,000 concurrent warnings -------------------------------------------------------------

SCENARIOS = (
    "ack_then_outcome",
    "cancel",
    "silent",
    "answered_then_resolved",
    "raise_then_ack",
    "read",
)


async def test_ten_thousand_concurrent_warnings_with_mixed_feedback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every warning gets a scenario; simulated officers and residents answer the actions as
    they arrive (with delays), and every warning must end as its scenario says."""
    n = 10_000
    expected: dict[str, tuple[str, str | None]] = {}
    notified_after_ack: list[str] = []
    acked: set[str] = set()
    seen_keys: set[str] = set()

    async with Engine.open(DIRECTORY, RULES) as engine, trio.open_nursery() as nursery:

        async def later(delay: float, event: object) -> None:
            await trio.sleep(delay)
            if isinstance(event, WarningInstruction):
                await engine.submit(event)
            else:
                await engine.feedback(event)  # type: ignore[arg-type]

        async def respond() -> None:
            async for a in engine.actions():
                assert a.key not in seen_keys, a.key
                seen_keys.add(a.key)
                wid, scenario = a.warning_id, SCENARIOS[int(a.warning_id[1:]) % len(SCENARIOS)]
                if a.action == "notify_officer" and wid in acked:
                    notified_after_ack.append(wid)
                if scenario == "ack_then_outcome" and a.action == "notify_officer" and a.step == 1:
                    acked.add(wid)  # the duty officer takes it 30 s after being told
                    nursery.start_soon(later, 30, Acknowledged(warning_id=wid, officer=a.to))
                    nursery.start_soon(later, 900, Outcome(warning_id=wid, outcome="dissuaded"))
                elif scenario == "answered_then_resolved" and a.action == "call" and a.attempt == 2:
                    nursery.start_soon(later, 10, CallResult(warning_id=wid, result="answered"))
                    nursery.start_soon(later, 400, Outcome(warning_id=wid, outcome="resolved"))
                elif scenario == "read" and a.action == "chat":
                    nursery.start_soon(later, 60, MessageRead(warning_id=wid))
                elif (
                    scenario == "raise_then_ack"
                    and a.action == "notify_officer"
                    and a.level == 1  # only once the update has raised it
                    and wid not in acked
                ):
                    acked.add(wid)
                    nursery.start_soon(later, 5, Acknowledged(warning_id=wid, officer=a.to))
                    nursery.start_soon(later, 50, Outcome(warning_id=wid, outcome="false_alarm"))

        nursery.start_soon(respond)
        e0 = engine.now()
        for i in range(n):
            wid = f"w{i}"
            scenario = SCENARIOS[i % len(SCENARIOS)]
            level = 3 if scenario == "raise_then_ack" else 1 + i % 2
            w = make(engine, wid=wid, level=level, target=ResidentTarget(i % 100), minutes=180)
            await engine.submit(w)
            if scenario == "cancel":
                cancel = make(engine, wid=wid, msg_type="cancel", target=w.target)
                nursery.start_soon(later, 200 + i % 300, cancel)
            if scenario == "raise_then_ack":
                update = make(engine, wid=wid, level=1, msg_type="update", target=w.target)
                nursery.start_soon(later, 100 + i % 50, update)
            expected[wid] = {
                "ack_then_outcome": ("closed", "dissuaded"),
                "cancel": ("cancelled", None),
                "silent": ("expired", "unreachable"),
                "answered_then_resolved": ("closed", "resolved"),
                "raise_then_ack": ("closed", "false_alarm"),
                "read": ("expired", None),  # reached, but no outcome ever reported
            }[scenario]
        await trio.sleep(1)
        assert engine.pending == n
        await trio.sleep(4 * 3600)
        got = {wid: (status(engine, wid).status, status(engine, wid).outcome) for wid in expected}
        wrong = {wid: (got[wid], want) for wid, want in expected.items() if got[wid] != want}
        assert not wrong, list(wrong.items())[:5]
        assert engine.pending == 0
        assert notified_after_ack == []
        # expiry of "silent" ones happened at their expires time, not before
        for i in range(2, n, len(SCENARIOS)):
            assert status(engine, f"w{i}").timeline[-1].at == pytest.approx(e0 + 180 * 60, abs=1e-3)
        counts = Counter(s for s, _ in got.values())
        assert counts["closed"] == sum(1 for s, _ in expected.values() if s == "closed")
        nursery.cancel_scope.cancel()


# --- random operation sequences (hypothesis + trio, replayed) --------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["alert", "update1", "cancel", "ack", "busy", "read", "outcome", "wait"]),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([0, 1, 59, 60, 120, 1000, 9000]),
    ),
    max_size=30,
)


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
async def test_random_operations_leave_every_warning_ended_or_scheduled(
    autojump_clock: trio.testing.MockClock, ops: list[tuple[str, str, int]]
) -> None:
    async with running() as (engine, rec):
        for op, wid, wait in ops:
            if op == "alert":
                await engine.submit(make(engine, wid=wid, level=2))
            elif op == "update1":
                await engine.submit(make(engine, wid=wid, level=1, msg_type="update"))
            elif op == "cancel":
                await engine.submit(make(engine, wid=wid, msg_type="cancel"))
            elif op == "ack":
                await engine.feedback(Acknowledged(warning_id=wid, officer="x"))
            elif op == "busy":
                await engine.feedback(CallResult(warning_id=wid, result="busy"))
            elif op == "read":
                await engine.feedback(MessageRead(warning_id=wid))
            elif op == "outcome":
                await engine.feedback(Outcome(warning_id=wid, outcome="resolved"))
            await trio.sleep(wait)
        await trio.sleep(0.001)
        now = engine.now()
        live = {wid for _, _, wid in engine._heap if engine._live.get(wid) is not None}
        for wid in ("a", "b", "c"):
            s = engine.status(wid)
            if s is None:
                continue
            if s.status == "active":
                assert s.next_deadline is not None and s.next_deadline > now
                assert wid in live, "an active warning has no live deadline in the heap"
        keys = [a.key for _, a in rec.actions]
        assert len(keys) == len(set(keys))
        per_wid: dict[str, list[float]] = defaultdict(list)
        for t, a in rec.actions:
            per_wid[a.warning_id].append(t)
        for times in per_wid.values():
            assert times == sorted(times)
