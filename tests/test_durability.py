"""The journal behind the engine: a restart rebuilds the same states and deadlines, a deadline
that passed while the engine was down fires at once, unsent actions are sent again with their
keys, a torn journal always opens and loses only the tail, and ``status`` reads it all back.

Real clock throughout (the journal does real I/O; see TOOLCHAIN.md on autojump), with time
shifted by injecting ``wall_clock``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing
from click.testing import CliRunner

from engine import durability
from engine.cli import main
from engine.durability import Accepted
from engine.journal import FsyncPolicy, Journal
from engine.journal.framing import HEADER_SIZE, RECORD_HEAD
from engine.journal.reader import read_journal
from engine.machine import WarningState
from engine.model import (
    Acknowledged,
    Action,
    CallResult,
    InvalidWarning,
    Outcome,
    PhoneTarget,
    ResidentTarget,
    Responders,
    WarningInstruction,
)
from engine.rules.escalation import load_escalation
from engine.scheduler import Engine
from engine.testing.directory import StaticDirectory

RULES = load_escalation()
DIRECTORY = StaticDirectory(
    county_centre="cc",
    residents={
        rid: Responders(
            county_centre="cc",
            grid_officer=f"grid-{rid}",
            duty_officer="duty",
            chief="chief",
            visitors=(f"nb-{rid}",),
            resident=rid,
        )
        for rid in range(50)
    },
    phones={"13800000007": 7},
)


def warning(
    wid: str, *, level: int = 1, msg_type: str = "alert", hours: float = 5, rid: int = 1
) -> WarningInstruction:
    now = datetime.now(UTC)
    return WarningInstruction(
        id=wid,
        kind="fraud",
        level=level,
        target=ResidentTarget(rid) if rid != 7 else PhoneTarget("13800000007"),
        issued_at=now,
        expires=now + timedelta(hours=hours),
        msg_type=msg_type,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def engine_on(
    path: Path,
    *,
    sent: list[Action] | None = None,
    shift_s: float = 0.0,
    **options: object,
) -> AsyncIterator[Engine]:
    """An engine with a journal at ``path``; actions are collected into ``sent`` and marked
    sent (None: nobody reads the outbox). ``shift_s`` moves the wall clock forward."""

    def clock() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=shift_s)

    async with (
        Journal.open(path, fsync=FsyncPolicy.always()) as journal,
        Engine.open(DIRECTORY, RULES, journal=journal, wall_clock=clock, **options) as engine,  # type: ignore[arg-type]
        trio.open_nursery() as nursery,
    ):
        if sent is not None:

            async def outbox() -> None:
                stream = engine.actions()
                while True:
                    batch = await stream.receive_batch()
                    sent.extend(batch)
                    engine.mark_sent([a.key for a in batch])

            nursery.start_soon(outbox)
        yield engine
        nursery.cancel_scope.cancel()


def deadlines(engine: Engine) -> dict[str, float]:
    """The live heap entry of every warning (what will wake it next)."""
    return {wid: d for d, seq, wid in engine._heap if engine._live.get(wid) == seq}


async def settle(engine: Engine, until: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not until():
            await trio.sleep(0.005)


async def busy_history(engine: Engine) -> None:
    """Alerts, a raise, acks, call results, an outcome, a cancel, unknown feedback."""
    await engine.submit_many([warning(f"w{i}", rid=i, level=1 + i % 3) for i in range(12)])
    await engine.submit(warning("w1", level=1, msg_type="update", rid=1))
    await engine.submit(warning("w2", level=1, msg_type="update", rid=2))  # raises 3 -> 1
    await engine.submit(warning("w3", msg_type="cancel", rid=3))
    await engine.submit(warning("w0", rid=0))  # a duplicate alert
    await engine.feedback_many(
        [
            Acknowledged(warning_id="w4", officer="grid-4"),
            CallResult(warning_id="w5", result="busy"),
            CallResult(warning_id="w6", result="answered"),
            Outcome(warning_id="w7", outcome="dissuaded"),
            Acknowledged(warning_id="nobody", officer="x"),  # unknown: dead-lettered
        ]
    )
    await engine.durable()


async def test_restart_rebuilds_the_same_states_and_deadlines(tmp_path: Path) -> None:
    sent: list[Action] = []
    async with engine_on(tmp_path / "j", sent=sent) as engine:
        await busy_history(engine)
        await settle(engine, lambda: engine.unsent == 0)
        before_states = dict(engine._states)
        before_deadlines = deadlines(engine)
        before_pending = engine.pending
    assert len(before_states) == 12 and before_pending == 10  # w3 cancelled, w7 closed
    assert before_states["w3"].status == "cancelled" and before_states["w0"].duplicates == 1
    again: list[Action] = []
    async with engine_on(tmp_path / "j", sent=again) as engine:
        assert engine._states == before_states
        assert deadlines(engine) == before_deadlines
        assert engine.pending == before_pending
        assert engine.stats.replayed > 0
        await trio.sleep(0.05)
    assert again == []  # everything was marked sent before the restart: nothing repeats


async def test_replay_equals_the_live_run_across_snapshots(tmp_path: Path) -> None:
    async with engine_on(tmp_path / "j", sent=[], snapshot_every=4) as engine:
        await busy_history(engine)
        await settle(engine, lambda: engine.unsent == 0 and engine.stats.snapshots >= 2)
        # the read-only reader works beside the live writer
        image = read_journal(tmp_path / "j")
        assert image.snapshot_payload is not None
        live = dict(engine._states)
    rebuilt = durability.rebuild(image.snapshot_payload, image.records, RULES)
    assert rebuilt.states == live
    async with engine_on(tmp_path / "j") as engine:
        assert engine._states == live
        # a clean run ends with a snapshot only when asked to (serve does): the log is short
        await engine.snapshot()
    image = read_journal(tmp_path / "j")
    assert image.records == [] and image.snapshot_payload is not None


async def test_a_deadline_that_passed_while_down_fires_at_once(tmp_path: Path) -> None:
    async with engine_on(tmp_path / "j", sent=[]) as engine:
        await engine.submit(warning("late", rid=9))
        await engine.durable()
        first = engine.status("late")
        assert first is not None and first.officer.to == "grid-9"
        due = first.officer.deadline
    # Restart "130 s later": the grid officer's 120 s to acknowledge ran out while down.
    sent: list[Action] = []
    async with engine_on(tmp_path / "j", sent=sent, shift_s=130) as engine:
        await settle(engine, lambda: any(a.to == "duty" for a in sent))
        s = engine.status("late")
        assert s is not None and s.officer.to == "duty"
        escalated = s.timeline[-2:]
        assert escalated[0].at >= due and escalated[0].at < due + 130 + 5
        assert "no ack within 120 s" in escalated[0].reason


async def test_unsent_actions_are_sent_again_after_restart_with_the_same_keys(
    tmp_path: Path,
) -> None:
    async with engine_on(tmp_path / "j", sent=None) as engine:  # nobody sends
        await engine.submit_many([warning(f"u{i}", rid=i) for i in range(3)])
        await engine.durable()
        produced = set()
        await settle(engine, lambda: engine.unsent == 6)
        while True:
            try:
                produced.add(engine.actions().receive_nowait())
            except trio.WouldBlock:
                break
    assert len(produced) == 6
    sent: list[Action] = []
    async with engine_on(tmp_path / "j", sent=sent) as engine:
        await settle(engine, lambda: len(sent) == 6 and engine.unsent == 0)
    assert set(sent) == produced  # same actions, same keys
    sent.clear()
    async with engine_on(tmp_path / "j", sent=sent) as engine:
        await trio.sleep(0.05)
    assert sent == []  # the Sent records made it to the journal


def _record_offsets(segment: bytes) -> list[int]:
    """Start offsets of the records of a segment image, plus its end."""
    offsets, pos = [], HEADER_SIZE
    while pos < len(segment):
        offsets.append(pos)
        length, _ = RECORD_HEAD.unpack_from(segment, pos)
        pos += RECORD_HEAD.size + length
    return [*offsets, pos]


async def test_torn_journal_opens_at_every_byte_and_loses_only_the_tail(tmp_path: Path) -> None:
    src = tmp_path / "src"
    async with engine_on(src, sent=[]) as engine:
        for i in range(4):
            await engine.submit(warning(f"t{i}", rid=i))
            await engine.durable()  # acknowledged one by one: each is its own record
        await settle(engine, lambda: engine.unsent == 0)
    (segment_path,) = src.glob("*.wal")
    image = segment_path.read_bytes()
    records = read_journal(src).records
    offsets = _record_offsets(image)
    assert len(offsets) == len(records) + 1
    expected = [durability.rebuild(None, records[:k], RULES).states for k in range(len(records))]
    expected.append(durability.rebuild(None, records, RULES).states)
    # every cut inside the last three records (and exactly at their boundaries)
    first = offsets[-4]
    work = tmp_path / "work"
    cuts = 0
    for cut in range(first, len(image) + 1):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / segment_path.name).write_bytes(image[:cut])
        complete = sum(1 for end in offsets[1:] if end <= cut)
        async with (
            Journal.open(work, fsync=FsyncPolicy.none()) as journal,
            Engine.open(DIRECTORY, RULES, journal=journal) as engine,
        ):
            assert engine.stats.replayed == complete, cut
            assert engine._states == expected[complete], cut
            assert journal.stats.truncated_bytes == cut - offsets[complete]
        cuts += 1
    assert cuts > 300
    # the last records were Accepted warnings: cutting into one loses just that warning
    assert isinstance(durability.decode_record(records[-1]), durability.Sent | Accepted)


async def test_status_prints_the_timeline_in_local_time(tmp_path: Path) -> None:
    async with engine_on(tmp_path / "j", sent=[]) as engine:
        await busy_history(engine)
        state: WarningState | None = engine.status("w4")
    assert state is not None
    runner = CliRunner()
    result = runner.invoke(main, ["status", "w4", "--journal", str(tmp_path / "j")])
    assert result.exit_code == 0, result.output
    assert "warning w4: fraud" in result.output
    assert "acked by   grid-4" in result.output
    local = datetime.fromtimestamp(state.timeline[0].at, UTC) + timedelta(hours=8)
    assert local.strftime("%Y-%m-%d %H:%M:%S") in result.output
    assert "officer  grid_officer#1 -> acked: acknowledged by grid-4" in result.output
    phone = runner.invoke(main, ["status", "w7", "--journal", str(tmp_path / "j")])
    assert phone.exit_code == 0 and "13800000007" not in phone.output
    assert "target     phone ***0007" in phone.output
    unknown = runner.invoke(main, ["status", "nope", "--journal", str(tmp_path / "j")])
    assert unknown.exit_code == 2 and "no warning 'nope'" in unknown.output
    missing = runner.invoke(main, ["status", "w4", "--journal", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no journal" in missing.output


@pytest.mark.parametrize("snapshot", [False, True])
async def test_a_retired_warning_id_is_refused_for_good(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, snapshot: bool
) -> None:
    """Once a warning has ended and been forgotten (retain_ended_s), its id is retired: a new
    alert under it is refused with the reason, in this run and after a restart (replayed from
    the records, or from a snapshot), instead of starting over under the same action keys."""
    folder = tmp_path / "j"
    async with engine_on(folder, sent=[], retain_ended_s=60.0) as engine:
        await engine.submit(warning("w1", rid=1))
        await engine.submit(warning("w1", rid=1, msg_type="cancel"))
        await settle(engine, lambda: engine.status("w1") is not None)
        await trio.sleep(120)  # retention passes: w1 is forgotten
        assert engine.status("w1") is None and engine.stats.evicted == 1
        with pytest.raises(InvalidWarning) as err:
            await engine.submit(warning("w1", rid=1))
        assert err.value.field == "id" and "not used before" in str(err.value)
        if snapshot:
            await engine.snapshot()
    async with engine_on(folder, sent=[], retain_ended_s=60.0) as engine:
        with pytest.raises(InvalidWarning):
            await engine.submit(warning("w1", rid=1))
        await engine.submit(warning("w2", rid=2))  # other ids are fine
