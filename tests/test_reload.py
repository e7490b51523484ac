"""Rules reloaded while the engine runs (issue 14, item 7): new warnings take the new ladders,
running ones keep theirs unless the rules say "adopt", a refused reload changes nothing and is
counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import msgspec
import trio
import trio.testing

from engine.model import Action, ResidentTarget, Responders, WarningInstruction
from engine.rules.escalation import EscalationRules, load_escalation
from engine.rules.loading import RuleError
from engine.scheduler import Engine
from engine.testing.directory import StaticDirectory

RULES = load_escalation()
T0 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
DIRECTORY = StaticDirectory(
    county_centre="cc",
    residents={
        rid: Responders(
            county_centre="cc",
            grid_officer="grid",
            duty_officer="duty",
            chief="chief",
            resident=rid,
        )
        for rid in range(10)
    },
)


def first_rung(rules: EscalationRules, seconds: float, **kw: object) -> EscalationRules:
    """The rules with fraud level 1's first rung waiting ``seconds`` for an ack."""
    kp = rules.kinds["fraud"]
    p1 = kp.levels[0]
    rung = msgspec.structs.replace(p1.officers[0], ack_within_s=seconds)
    p1 = msgspec.structs.replace(p1, officers=(rung, *p1.officers[1:]))
    kinds = {**rules.kinds, "fraud": msgspec.structs.replace(kp, levels=(p1, *kp.levels[1:]))}
    return msgspec.structs.replace(rules, kinds=kinds, source=f"<{seconds:g}s>", **kw)  # type: ignore[arg-type]


def warning(wid: str, rid: int, at: datetime) -> WarningInstruction:
    return WarningInstruction(
        id=wid,
        kind="fraud",
        level=1,
        target=ResidentTarget(rid),
        issued_at=at,
        expires=at + timedelta(hours=4),
    )


@asynccontextmanager
async def engine_with(
    sent: list[tuple[float, Action]], rules: EscalationRules
) -> AsyncIterator[Engine]:
    t0 = trio.current_time()

    def clock() -> datetime:
        return T0 + timedelta(seconds=trio.current_time() - t0)

    async with (
        Engine.open(DIRECTORY, rules, wall_clock=clock) as engine,
        trio.open_nursery() as nursery,
    ):

        async def outbox() -> None:
            async for a in engine.actions():
                sent.append((engine.now() - T0.timestamp(), a))

        nursery.start_soon(outbox)
        yield engine
        nursery.cancel_scope.cancel()


def second_notice(sent: list[tuple[float, Action]], wid: str) -> float:
    times = [t for t, a in sent if a.warning_id == wid and a.action == "notify_officer"]
    return times[1]


async def test_running_warnings_keep_their_ladder_and_new_ones_take_the_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[tuple[float, Action]] = []
    async with engine_with(sent, first_rung(RULES, 600)) as engine:
        await engine.submit(warning("old", 1, T0))
        await trio.sleep(10)
        engine.reload(first_rung(RULES, 120))
        await engine.submit(warning("new", 2, T0 + timedelta(seconds=10)))
        await trio.sleep(3600)
        assert second_notice(sent, "old") == 600, "the running warning kept its 600 s rung"
        assert second_notice(sent, "new") == 10 + 120, "the new warning took the 120 s rung"
        assert engine.reloads.ok == 1 and engine.rulebook.generation == 1


async def test_adopt_moves_running_warnings_to_the_new_ladder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[tuple[float, Action]] = []
    async with engine_with(sent, first_rung(RULES, 600)) as engine:
        await engine.submit(warning("old", 1, T0))
        await trio.sleep(10)
        engine.reload(first_rung(RULES, 120, running_warnings="adopt"))
        await trio.sleep(3600)
        # the rung in progress keeps its deadline; the next steps follow the new ladder
        notices = [t for t, a in sent if a.warning_id == "old" and a.action == "notify_officer"]
        assert notices[1] == 600
        assert engine.rulebook.generations == 1, "adopt drops the old generations"


async def test_a_refused_reload_keeps_the_old_rules_and_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[tuple[float, Action]] = []
    async with engine_with(sent, RULES) as engine:
        await engine.submit(warning("w1", 1, T0))
        await trio.sleep(1)

        def bad() -> EscalationRules:
            raise RuleError("/site/escalation.toml", "kinds.fraud.levels.1.officers", "a ladder")

        assert engine.reload_from(bad) is False
        assert engine.rules is RULES
        assert engine.reloads.failed == 1 and engine.reloads.ok == 0
        assert "kinds.fraud.levels.1.officers" in engine.reloads.last_error
        # adopt with a running warning whose kind the new rules lack: refused, nothing changed
        without_fraud = msgspec.structs.replace(
            RULES,
            kinds={k: v for k, v in RULES.kinds.items() if k != "fraud"},
            running_warnings="adopt",
        )
        assert engine.reload_from(lambda: without_fraud) is False
        assert engine.rules is RULES and engine.rulebook.generation == 0
        # keep: the running fraud warning goes on with its ladder, new fraud is refused
        kept = msgspec.structs.replace(without_fraud, running_warnings="keep")
        assert engine.reload_from(lambda: kept) is True
        await trio.sleep(3600)
        assert len([a for _, a in sent if a.action == "notify_officer"]) > 1


async def test_sighup_reloads_and_a_bad_file_keeps_the_old_rules() -> None:
    """A real SIGHUP to this process, caught by the service's watcher (real clock: signals
    are delivered by the OS)."""
    import os
    import signal

    from engine.service import watch_reload

    sent: list[tuple[float, Action]] = []
    loads: list[str] = []

    def load() -> EscalationRules:
        loads.append("x")
        if len(loads) == 2:
            raise RuleError("/site/rosters.toml", "rotations[0].officers", "a non-empty list")
        return first_rung(RULES, 60 * len(loads))

    async with engine_with(sent, RULES) as engine, trio.open_nursery() as nursery:
        nursery.start_soon(watch_reload, engine, load)
        await trio.sleep(0.05)  # the watcher installs its handler
        with trio.fail_after(5):
            for want in (1, 2, 3):
                os.kill(os.getpid(), signal.SIGHUP)
                while len(loads) < want:
                    await trio.sleep(0.01)
        assert (engine.reloads.ok, engine.reloads.failed) == (2, 1)
        assert engine.rules.source == "<180s>", "the third load is in force"
        assert "rotations[0].officers" in engine.reloads.last_error
        nursery.cancel_scope.cancel()
