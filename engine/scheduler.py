"""The imperative shell: one trio task owns every warning's state, its deadline and the outbox.

Embedding::

    async with Engine.open(directory, rules) as engine:
        nursery.start_soon(send_actions, engine.actions())   # async for action in ...
        await engine.submit(warning)          # raises InvalidWarning for garbage
        await engine.feedback(event)          # ack, call result, read, visit done, outcome
        engine.status(warning_id)             # WarningState (timeline included) or None

Durable embedding (what ``warn-dispatch serve`` does, see :mod:`engine.service`)::

    async with Journal.open(path) as journal, Engine.open(directory, journal=journal) as engine:
        await engine.submit_many(warnings); await engine.durable()   # then ack the intake
        batch = await engine.actions().receive_batch(); await sink.send(batch)
        engine.mark_sent([a.key for a in batch])

Why one loop: the machine is pure, so all the shell does is move messages and time. A single
task with one deadline heap (lazy deletion: an entry is live only while its sequence number is
the warning's current one) and batched draining of the inboxes costs a few microseconds per
event, where a task per warning would cost a task, a cancel scope and a timer each.
Time comes only from trio, so the same code runs under ``MockClock`` in tests and the simulator;
the engine adds a fixed offset taken from ``wall_clock`` at open, so every deadline and timeline
time is epoch seconds and stays valid across a restart (see :meth:`Engine.now`).

With a journal, every input the loop applies is written (once per loop turn, before the turn's
actions go out) with the ``now`` it used; :mod:`engine.durability` replays them at open.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

import msgspec
import trio

from engine import durability
from engine.directory import Directory
from engine.durability import (
    Accepted,
    EngineSnapshot,
    Fed,
    Sent,
    Ticked,
)
from engine.errors import WarnDispatchError
from engine.incidents import ALONE, Change, Correlator, Decision, RuleBook, apply, area_alert_action
from engine.journal.backend import JournalBackend
from engine.machine import (
    TICK,
    Event,
    Intake,
    WarningState,
    step,
    validate_arrival,
    validate_warning,
)
from engine.model import (
    Action,
    FeedbackEvent,
    InvalidFeedback,
    InvalidWarning,
    PhoneTarget,
    ResidentTarget,
    Responders,
    WarningInstruction,
    decode_feedback,
    decode_warning,
)
from engine.rules.escalation import EscalationRules, load_escalation
from engine.state_feed import StateFeed

log = logging.getLogger("engine.scheduler")

T = TypeVar("T")
In = TypeVar("In")

TIME_QUANTUM = 2.0**-20
"""The clock offset is a multiple of this (about 1 µs), so ``deadline - offset`` is exact for
epoch-sized deadlines and a wake-up at that trio time always finds the deadline due."""

BATCH = 512
"""Events handled per inbox per loop turn before yielding: big enough to amortise the trio
checkpoint, small enough that deadlines and the outbox are not starved."""


class DeadLetter(msgspec.Struct, frozen=True):
    """A message the engine could not use. ``message`` is kept in memory only, never logged.

    This is the seam for durable dead-lettering: pass ``on_dead_letter`` to :meth:`Engine.open`.
    """

    at: float
    source: Literal["warning", "feedback", "internal"]
    reason: str
    warning_id: str | None = None
    message: object = None


class EngineStats(msgspec.Struct):
    """Counters, for benchmarks and health checks."""

    intake: int = 0
    feedback: int = 0
    replayed: int = 0
    snapshots: int = 0
    ticks: int = 0
    actions: int = 0
    dead_letters: int = 0
    evicted: int = 0
    correlated: int = 0
    """Warnings that joined an earlier one's incident (same resident, phone or household)."""
    inhibited: int = 0
    """Per-resident warnings that joined an active area-wide warning instead of a push."""
    area_alerts: int = 0


class ReloadStats(msgspec.Struct):
    """Rule reloads (SIGHUP), for metrics: how many took, how many were refused and why."""

    ok: int = 0
    failed: int = 0
    last_ok_at: float | None = None
    last_failed_at: float | None = None
    last_error: str = ""


class _Mailbox(Generic[T]):
    """A bounded FIFO that the loop drains in batches without a checkpoint per item.

    Trio's memory channels cannot be waited on together with a second channel and a deadline;
    two deques and one parking lot for the loop can.
    """

    __slots__ = ("_engine", "capacity", "queue", "space")

    def __init__(self, capacity: int, engine: Engine) -> None:
        self.queue: deque[T] = deque()
        self.capacity = capacity
        self.space = trio.lowlevel.ParkingLot()
        self._engine = engine

    def put_nowait(self, item: T) -> None:
        if len(self.queue) >= self.capacity:
            raise trio.WouldBlock
        self.queue.append(item)
        self._engine._submitted += 1
        self._engine._wake()

    async def put(self, item: T) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self.queue) >= self.capacity:
            await self.space.park()
        self.queue.append(item)
        self._engine._submitted += 1
        self._engine._wake()
        await trio.lowlevel.cancel_shielded_checkpoint()


def _drain(box: _Mailbox[T], apply: Callable[[T, float], None], now: float) -> int:
    """Apply up to ``BATCH`` queued items at ``now`` and wake blocked senders; how many.

    ``apply`` handles its own failures (see :meth:`Engine._guarded`): one item never stops
    the loop, so it never stops every other warning."""
    q = box.queue
    k = min(len(q), BATCH)
    for _ in range(k):
        apply(q.popleft(), now)
    if k and box.space:
        box.space.unpark_all()
    return k


class ActionStream:
    """Async iterator over the outbox's actions, fed in batches.

    ``__anext__`` only waits (and checkpoints) when the current batch is used up; a batch is at
    most a few thousand actions, so a consumer cannot starve other tasks for long.
    """

    __slots__ = ("_batch", "_i", "_recv")

    def __init__(self, recv: trio.MemoryReceiveChannel[tuple[Action, ...]]) -> None:
        self._recv = recv
        self._batch: tuple[Action, ...] = ()
        self._i = 0

    def __aiter__(self) -> ActionStream:
        return self

    async def __anext__(self) -> Action:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> Action:
        """The next action; raises ``trio.EndOfChannel`` once the engine has closed."""
        if self._i >= len(self._batch):
            self._batch, self._i = await self._recv.receive(), 0
        action = self._batch[self._i]
        self._i += 1
        return action

    async def receive_batch(self) -> tuple[Action, ...]:
        """The rest of the current batch, or the next one; raises ``trio.EndOfChannel`` at
        the end."""
        if self._i < len(self._batch):
            rest, self._batch, self._i = self._batch[self._i :], (), 0
            await trio.lowlevel.checkpoint()
            return rest
        return await self._recv.receive()

    def receive_nowait(self) -> Action:
        """One action if one is ready, else ``trio.WouldBlock``."""
        if self._i >= len(self._batch):
            self._batch, self._i = self._recv.receive_nowait(), 0
        action = self._batch[self._i]
        self._i += 1
        return action


class Engine:
    """All warnings of one engine process. Create with :meth:`Engine.open`."""

    def __init__(
        self,
        directory: Directory,
        rules: EscalationRules,
        *,
        wall_clock: Callable[[], datetime] | None = None,
        inbox_capacity: int = 65536,
        outbox_capacity: int = 65536,
        retain_ended_s: float = 86400.0,
        county_centre: str = "county_centre",
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        journal: JournalBackend | None = None,
        snapshot_every: int = 50_000,
    ) -> None:
        self.directory = directory
        self.rules = rules
        """The rules in force (the newest generation; see :meth:`reload`)."""
        self.rulebook = RuleBook(rules)
        self.reloads = ReloadStats()
        self.county_centre = county_centre
        self.retain_ended_s = retain_ended_s
        self.stats = EngineStats()
        self.dead_letters: deque[DeadLetter] = deque(maxlen=1000)
        self.on_dead_letter = on_dead_letter
        """Told of every message the engine dropped *without* raising to its caller (feedback
        for an unknown warning, a step or a journal record that failed inside the loop), so a
        service can keep them where its transports keep dead letters. Rejections raised by
        ``submit``/``feedback`` go to the caller instead. ``dead_letters`` keeps the last 1,000
        of both kinds."""
        if wall_clock is None:
            wall0, t0 = datetime.now(UTC), trio.current_time()

            def wall_clock() -> datetime:
                return wall0 + timedelta(seconds=trio.current_time() - t0)

        self.wall_clock = wall_clock
        offset = wall_clock().timestamp() - trio.current_time()
        self._offset = round(offset / TIME_QUANTUM) * TIME_QUANTUM
        self._last_now = -math.inf
        self._journal = journal
        self._snapshot_every = max(1, snapshot_every)
        self._since_snapshot = 0
        self._snapshot_wanted = trio.Event()
        self._records: list[bytes] = []
        # Actions produced but not yet marked sent; only tracked with a journal (replay re-sends).
        self._unsent: dict[str, Action] | None = {} if journal is not None else None
        self.campaign_records = durability.CampaignRecords(
            self._write_record if journal is not None else None
        )
        """Campaigns the journal holds (accepted, ended, every id used): see CampaignRecords."""
        self._submitted = 0  # items put into the inboxes
        self._applied = 0  # items the loop has taken out and applied (and journaled)
        self._progress = trio.Event()
        self._closing = False
        self._states: dict[str, WarningState] = {}
        self.correlator = Correlator(rules.correlation)
        """Which warnings join another's incident, and when a grid gets an area alert."""
        self._ordinal = 0  # intake number of the last new warning (round robin on duty)
        self.feed = StateFeed()
        """Ids of the warnings each loop turn changed, for live watchers (the console)."""
        self._retired: set[str] = set()
        """Ids of warnings forgotten after ``retain_ended_s``: ids stay unique for good (an
        alert reusing one would otherwise start over under the same action keys). About 60 B
        each: a county's 100,000 warnings a year cost 6 MB a year, kept in the snapshot."""
        self._live: dict[str, int] = {}  # warning id -> seq of its live heap entry
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._active = 0
        self._intake: _Mailbox[WarningInstruction] = _Mailbox(inbox_capacity, self)
        self._feedback: _Mailbox[FeedbackEvent] = _Mailbox(inbox_capacity, self)
        self._idle = trio.lowlevel.ParkingLot()
        self._pending: list[Action] = []
        # The outbox carries one batch per loop turn: one trio wake-up per batch, not per action.
        batches = max(1, outbox_capacity // 64)
        self._out_send, self._out_recv = trio.open_memory_channel[tuple[Action, ...]](batches)
        self._stream = ActionStream(self._out_recv)

    # --- public API ---------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        directory: Directory,
        rules: EscalationRules | None = None,
        **options: object,
    ) -> AsyncIterator[Engine]:
        """Run an engine for the duration of the ``async with``; default rules are the shipped
        ``rules/escalation.toml``. Options are those of :class:`Engine`."""
        engine = cls(directory, rules if rules is not None else load_escalation(), **options)  # type: ignore[arg-type]
        if engine._journal is not None:
            engine._restore(engine._journal)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine._run)
            if engine._journal is not None:
                nursery.start_soon(engine._snapshotter)
            try:
                yield engine
            finally:
                nursery.cancel_scope.cancel()

    async def submit(self, warning: WarningInstruction | bytes | str) -> None:
        """Hand a warning instruction (or its JSON) to the engine; waits if the inbox is full.

        Raises :class:`InvalidWarning` naming the field for anything the engine cannot use;
        the engine itself is unaffected.
        """
        await self._intake.put(self._check_warning(warning))

    def submit_nowait(self, warning: WarningInstruction | bytes | str) -> None:
        """Like :meth:`submit` from synchronous code; raises ``trio.WouldBlock`` when full."""
        self._intake.put_nowait(self._check_warning(warning))

    async def submit_many(
        self, warnings: Iterable[WarningInstruction | bytes | str], *, report: bool = False
    ) -> list[tuple[int, Exception]]:
        """Submit a batch (e.g. one read from a stream) with one checkpoint, not one per item.

        By default stops at the first invalid one, raising :class:`InvalidWarning`; earlier
        ones are in. With ``report``, every item is tried and the refused ones are returned as
        ``(index, error)`` (a service dead-letters those and acks the rest).
        """
        return await self._put_many(self._intake, self._check_warning, warnings, report)

    async def _put_many(
        self,
        box: _Mailbox[T],
        check: Callable[[In], T],
        items: Iterable[In],
        report: bool,
    ) -> list[tuple[int, Exception]]:
        refused: list[tuple[int, Exception]] = []
        await trio.lowlevel.checkpoint_if_cancelled()
        for i, item in enumerate(items):
            try:
                checked = check(item)
            except Exception as exc:
                if not report:
                    raise
                refused.append((i, exc))
                continue
            try:
                box.put_nowait(checked)
            except trio.WouldBlock:
                await box.put(checked)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return refused

    async def feedback(self, event: FeedbackEvent | bytes | str) -> None:
        """Hand a feedback event (or its JSON) to the engine. Feedback for a warning the engine
        does not know is dead-lettered, not raised: it may simply be late."""
        await self._feedback.put(self._check_feedback(event))

    def feedback_nowait(self, event: FeedbackEvent | bytes | str) -> None:
        """Like :meth:`feedback` from synchronous code; raises ``trio.WouldBlock`` when full."""
        self._feedback.put_nowait(self._check_feedback(event))

    async def feedback_many(
        self, events: Iterable[FeedbackEvent | bytes | str], *, report: bool = False
    ) -> list[tuple[int, Exception]]:
        """Feedback in a batch, with one checkpoint; stops at the first invalid event, or with
        ``report`` returns the refused ones as :meth:`submit_many` does."""
        return await self._put_many(self._feedback, self._check_feedback, events, report)

    def actions(self) -> ActionStream:
        """The outbox: ``async for action in engine.actions()``. Ends when the engine closes.

        If nobody reads it, the engine stops when it is full (back-pressure, not data loss).
        Writers that batch (a Redis pipeline, say) can use ``receive_batch()`` instead.
        """
        return self._stream

    def status(self, warning_id: str) -> WarningState | None:
        """The warning's current state with its timeline; None if unknown (or long ended)."""
        return self._states.get(warning_id)

    def states(self) -> list[WarningState]:
        """Every state the engine holds, at this moment (for metrics and listings; a copy of
        the references, so the caller may iterate while the loop runs)."""
        return list(self._states.values())

    @property
    def known(self) -> int:
        """Warnings the engine holds a state for (active, and ended ones still retained)."""
        return len(self._states)

    def now(self) -> float:
        """The engine's time: epoch seconds (trio's clock plus the offset taken at open).

        Always a plain float: a numpy float deadline would otherwise leak into trio's clock
        under MockClock and from there into journal records msgpack cannot encode."""
        return float(trio.current_time()) + self._offset

    async def durable(self) -> None:
        """Return once everything submitted (warnings and feedback) before this call has been
        applied by the loop and, with a journal, is durable under its fsync policy.

        Acknowledge a transport's messages only after this: then a crash cannot lose them.
        """
        target = self._submitted
        while self._applied < target:
            await self._progress.wait()
        journal = self._journal
        if journal is not None and journal.policy.mode != "none":
            await journal.sync()
        else:
            await trio.lowlevel.checkpoint()

    def mark_sent(self, keys: Iterable[str]) -> None:
        """The outbox has handed these actions over: a restart will not send them again.

        Written to the journal without waiting (a lost ``Sent`` only causes a repeat with the
        same key). Without a journal this does nothing.
        """
        unsent = self._unsent
        if unsent is None or self._journal is None:
            return
        done = tuple(k for k in keys if unsent.pop(k, None) is not None)
        if done:
            self._journal.write_nowait((durability.encode(Sent(done)),))
            self._count_records(1)

    @property
    def unsent(self) -> int:
        """Actions produced and not yet marked sent (0 without a journal)."""
        return len(self._unsent) if self._unsent is not None else 0

    def close(self) -> None:
        """Stop after the inboxes are drained: the outbox then ends (``EndOfChannel``).

        For a clean shutdown: stop the intake first, ``await durable()``, then ``close()``,
        let the outbox reader finish, then ``await snapshot()``.
        """
        self._closing = True
        self._wake()

    async def snapshot(self) -> None:
        """Write a snapshot of every state and unsent action, compacting the journal."""
        journal = self._journal
        if journal is None:
            await trio.lowlevel.checkpoint()
            return
        self._since_snapshot = 0
        payload = self._encode_snapshot()
        await journal.snapshot(payload)  # no await between encoding and this call
        self.stats.snapshots += 1

    @property
    def pending(self) -> int:
        """Warnings that are still active (not closed, cancelled or expired)."""
        return self._active

    def reload(self, rules: EscalationRules) -> None:
        """Put new rules in force (already loaded and validated, e.g. by
        :func:`engine.rules.sources.load_rules`). Warnings already running keep the ladders
        they started with unless the rules say ``running_warnings = "adopt"``; rosters,
        silences and correlation apply to every warning from now on. Raises RuleError, with
        nothing changed, if the new rules cannot take over the running warnings."""
        self.rulebook.install(rules, self._states)
        self.rules = rules
        self.correlator.rules = rules.correlation
        self.reloads.ok += 1
        self.reloads.last_ok_at = self.now()
        log.info(
            "rules reloaded from %s (generation %d, %d held)",
            rules.source,
            self.rulebook.generation,
            self.rulebook.generations,
        )

    def reload_from(self, load: Callable[[], EscalationRules]) -> bool:
        """Load rules with ``load`` and put them in force; a bad file keeps the old rules, is
        logged (file, key, expectation) and counted. True if the new rules took."""
        try:
            self.reload(load())
        except WarnDispatchError as exc:
            self.reload_refused(exc)
            return False
        return True

    def reload_refused(self, exc: WarnDispatchError) -> None:
        """New rules were refused (a bad file): the old ones stay; logged and counted."""
        self.reloads.failed += 1
        self.reloads.last_failed_at = self.now()
        self.reloads.last_error = str(exc)
        log.error("rules reload refused, the old rules stay in force: %s", exc)

    # --- validation at the edge ------------------------------------------------------------

    def check_warning(self, warning: WarningInstruction) -> None:
        """Raise :class:`InvalidWarning` for a decoded warning this engine cannot act on: a kind
        or target the rules do not allow, or one that expired before it arrived or is issued
        too far ahead of the engine's clock (:func:`engine.machine.validate_arrival`)."""
        validate_warning(warning, self.rulebook.for_state(self._states.get(warning.id)))
        validate_arrival(warning, self.now())
        if warning.id in self._retired:
            raise InvalidWarning(
                "id",
                "a warning id not used before (a warning with this id ended and was retired; "
                "ids stay unique for good)",
            )

    def _check_warning(self, warning: WarningInstruction | bytes | str) -> WarningInstruction:
        try:
            if not isinstance(warning, WarningInstruction):
                if not isinstance(warning, bytes | str):
                    raise InvalidWarning("(message)", "a WarningInstruction or its JSON")
                warning = decode_warning(warning)
            self.check_warning(warning)
        except InvalidWarning as exc:
            wid = warning.id if isinstance(warning, WarningInstruction) else None
            self._dead_letter("warning", str(exc), wid, warning, raised=True)
            raise
        return warning

    def _check_feedback(self, event: FeedbackEvent | bytes | str) -> FeedbackEvent:
        try:
            if isinstance(event, bytes | str):
                return decode_feedback(event)
            if not isinstance(event, msgspec.Struct) or not hasattr(event, "warning_id"):
                raise InvalidFeedback("(message)", "a feedback event or its JSON")
        except InvalidFeedback as exc:
            self._dead_letter("feedback", str(exc), None, event, raised=True)
            raise
        return event

    def _dead_letter(
        self,
        source: Literal["warning", "feedback", "internal"],
        reason: str,
        wid: str | None,
        message: object,
        *,
        raised: bool = False,
    ) -> None:
        self.stats.dead_letters += 1
        log.warning("dead letter (%s, warning %s): %s", source, wid, reason)
        letter = DeadLetter(self.now(), source, reason, wid, message)
        self.dead_letters.append(letter)
        if not raised and self.on_dead_letter is not None:
            self.on_dead_letter(letter)

    # --- the loop ----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._idle:
            self._idle.unpark_all()

    def _resolve(self, warning: WarningInstruction) -> Responders:
        """Ask the directory once, at intake. A failing directory must not stop the engine."""
        target = warning.target
        try:
            if isinstance(target, PhoneTarget):
                rid = self.directory.resident_by_phone(target.phone)
                if rid is not None:
                    return self.directory.responders(ResidentTarget(rid))
            return self.directory.responders(target)
        except Exception as exc:
            log.warning("directory failed for warning %s: %s", warning.id, type(exc).__name__)
            return Responders(
                county_centre=self.county_centre,
                unresolved=f"directory error ({type(exc).__name__})",
            )

    def _apply(
        self,
        wid: str,
        event: Event,
        now: float,
        *,
        popped: bool = False,
        decision: Decision = ALONE,
    ) -> bool:
        """Step the warning and every warning its incident touches (:func:`engine.incidents.
        apply`), and (re)schedule them. ``popped``: ``wid``'s heap entry was just consumed, so
        it must be pushed again even if the deadline did not change. False: nothing changed
        (unknown warning, machine error), so there is nothing to journal."""
        try:
            old = self._states.get(wid)
            if (
                decision is ALONE
                and (old is None or (old.status == "active" and not old.sources))
                and (old is not None or isinstance(event, Intake))
            ):
                # The common case, one warning and no incident (every tick, most feedback, a
                # new warning that joins nothing): what apply() would do, one step, without its
                # call and overlay, which cost this loop ~15 % of its events per second.
                new, acts, due = step(old, event, now, self.rulebook.for_state(old))
                changes: list[Change] | None = None if new is None else [(wid, old, new, acts, due)]
            else:
                changes = apply(self._states, wid, event, now, self.rulebook, decision)
        except Exception as exc:  # a bug in the machine must not stop the other warnings
            log.exception("machine failed on warning %s", wid)
            self._dead_letter("internal", f"machine error: {type(exc).__name__}", wid, event)
            return False
        if changes is None:
            self._dead_letter("feedback", "feedback for an unknown warning", wid, event)
            return False
        touched = False  # wid among the changes (a flag: a generator per event costs)
        for w, before, after, actions, deadline in changes:
            self._states[w] = after
            self.feed.touch(w)
            self._active += (after.status == "active") - (
                before is not None and before.status == "active"
            )
            if actions:
                self._send(actions)
            touched = touched or w == wid
            self._schedule(w, before, deadline, now, popped=popped and w == wid)
        if popped and not touched:
            self._schedule(wid, None, self._states[wid].next_deadline, now, popped=True)
        return True

    def _send(self, actions: Sequence[Action]) -> None:
        self._pending.extend(actions)
        self.stats.actions += len(actions)
        if self._unsent is not None:
            for a in actions:
                self._unsent[a.key] = a

    def _schedule(
        self,
        wid: str,
        old: WarningState | None,
        deadline: float | None,
        now: float,
        *,
        popped: bool,
    ) -> None:
        if popped or old is None or deadline != old.next_deadline:
            if deadline is None:  # ended: keep for status() and dedup, then forget
                deadline = now + self.retain_ended_s
            if deadline == math.inf:
                self._live.pop(wid, None)
                return
            self._seq += 1
            self._live[wid] = self._seq
            heapq.heappush(self._heap, (deadline, self._seq, wid))

    def _encoded(self, record: durability.Record, wid: str, message: object) -> bytes | None:
        """The journal bytes of ``record``, made *before* the step is applied: a message the
        journal cannot hold is refused whole, never applied without being durable."""
        if self._journal is None:
            return b""
        try:
            return durability.encode(record)
        except Exception as exc:
            why = f"cannot be journaled ({type(exc).__name__})"
            self._dead_letter("internal", why, wid, message)
            return None

    def _failed(self, exc: Exception, wid: str | None, message: object) -> None:
        """Something unforeseen broke while one item was applied: dead-letter that item, keep
        the loop (and every other warning) going. The log has the error's kind, never its
        message (which may quote the item)."""
        log.error("applying an item of warning %s failed: %s", wid, type(exc).__name__)
        self._dead_letter("internal", f"could not be applied ({type(exc).__name__})", wid, message)

    def _on_intake(self, warning: WarningInstruction, now: float) -> None:
        try:
            self._intake_one(warning, now)
        except Exception as exc:
            self._failed(exc, warning.id, warning)

    def _intake_one(self, warning: WarningInstruction, now: float) -> None:
        self.stats.intake += 1
        old = self._states.get(warning.id)
        responders = old.responders if old is not None else self._resolve(warning)
        ordinal = old.ordinal if old is not None else self._ordinal + 1
        decision = self.correlator.decide(warning, responders, now, self._states)
        accepted = Accepted(
            now,
            warning,
            responders,
            decision.incident,
            decision.why,
            ordinal,
            decision.area_alert,
        )
        record = self._encoded(accepted, warning.id, warning)
        if record is None:
            return
        self._ordinal = max(self._ordinal, ordinal)
        generation = old.generation if old is not None else self.rulebook.generation
        event = durability.intake_event(warning, responders, ordinal, generation)
        if self._apply(warning.id, event, now, decision=decision):
            if decision.incident is not None and old is None:
                if decision.why == "inhibited":
                    self.stats.inhibited += 1
                else:
                    self.stats.correlated += 1
            if decision.area_alert:
                self.stats.area_alerts += 1
                self._send((area_alert_action(warning, responders, self.rules.correlation),))
            if self._journal is not None:
                self._records.append(record)

    def _on_due(self, seq: int, wid: str, now: float) -> None:
        if self._live.get(wid) != seq:
            return  # superseded: lazy deletion
        state = self._states[wid]
        journal = self._journal is not None
        if state.status != "active":  # retention ran out
            del self._states[wid], self._live[wid]
            self.feed.touch(wid)
            self._retired.add(wid)
            self.stats.evicted += 1
            if journal:
                self._records.append(durability.encode(Ticked(now, wid)))
            return
        self.stats.ticks += 1
        if self._apply(wid, TICK, now, popped=True) and journal:
            self._records.append(durability.encode(Ticked(now, wid)))

    def _on_feedback(self, ev: FeedbackEvent, now: float) -> None:
        try:
            self._feedback_one(ev, now)
        except Exception as exc:
            self._failed(exc, ev.warning_id, ev)

    def _feedback_one(self, ev: FeedbackEvent, now: float) -> None:
        self.stats.feedback += 1
        record = self._encoded(Fed(now, ev), ev.warning_id, ev)
        if record is None:
            return
        if self._apply(ev.warning_id, ev, now) and self._journal is not None:
            self._records.append(record)

    def _clock(self) -> float:
        """``now`` for one loop turn: never backwards, and a deadline whose trio wake-up time
        has come counts as due even if float rounding put ``now`` a hair before it."""
        t = float(trio.current_time())
        now = t + self._offset
        heap = self._heap
        if heap and heap[0][0] > now and heap[0][0] - self._offset <= t:
            now = heap[0][0]
        now = max(now, self._last_now)
        self._last_now = now
        return now

    def _write_record(self, record: bytes) -> None:
        """One record outside a loop turn (a campaign's acceptance or end)."""
        assert self._journal is not None
        self._journal.write_nowait((record,))
        self._count_records(1)

    def _count_records(self, n: int) -> None:
        self._since_snapshot += n
        if self._since_snapshot >= self._snapshot_every and not self._snapshot_wanted.is_set():
            self._snapshot_wanted.set()

    def _end_turn(self, applied: int) -> None:
        """Journal this turn's inputs (one write, before its actions go out), wake durable()
        and the watchers of :attr:`feed`."""
        self.feed.end_turn()
        if self._records:
            records, self._records = self._records, []
            assert self._journal is not None
            self._journal.write_nowait(records)
            self._count_records(len(records))
        if applied:
            self._applied += applied
            progress, self._progress = self._progress, trio.Event()
            progress.set()

    # --- durability ------------------------------------------------------------------------

    def _restore(self, journal: JournalBackend) -> None:
        """Rebuild states, deadlines and the unsent actions from the journal (before the loop
        starts). Overdue deadlines are simply at the top of the heap: they fire at once."""
        rebuilt = durability.rebuild(journal.snapshot_payload, journal.replay(), self.rules)
        self._states = rebuilt.states
        self._unsent = rebuilt.unsent
        self.campaign_records.restore(rebuilt)
        self._retired = rebuilt.retired
        self._ordinal = rebuilt.ordinal
        self.correlator.restore(self._states, rebuilt.last_at)
        self.rulebook.resume(self._states)
        self.stats.replayed = rebuilt.records
        self._since_snapshot = rebuilt.records
        self._last_now = rebuilt.last_at
        for wid, state in self._states.items():
            deadline = state.next_deadline
            if deadline is None:
                deadline = durability.ended_at(state) + self.retain_ended_s
            else:
                self._active += 1
            if deadline == math.inf:
                continue
            self._seq += 1
            self._live[wid] = self._seq
            self._heap.append((deadline, self._seq, wid))
        heapq.heapify(self._heap)
        # Re-send what was produced but never confirmed sent (same keys: adapters dedupe).
        self._pending.extend(self._unsent.values())
        if rebuilt.records or journal.snapshot_payload is not None:
            log.info(
                "restored %d warnings (%d active, %d actions to re-send) from %d records",
                len(self._states),
                self._active,
                len(self._unsent),
                rebuilt.records,
            )

    def _encode_snapshot(self) -> bytes:
        campaigns, campaign_ids = self.campaign_records.snapshot()
        snap = EngineSnapshot(
            version=durability.SNAPSHOT_VERSION,
            taken_at=self.now(),
            states=list(self._states.values()),
            unsent=list(self._unsent.values()) if self._unsent is not None else [],
            campaigns=campaigns,
            campaign_ids=campaign_ids,
            retired_warnings=sorted(self._retired),
        )
        return durability.encode(snap)

    async def _snapshotter(self) -> None:
        """Snapshot every ``snapshot_every`` records, off the loop (the loop keeps writing to
        the new segment while the snapshot is fsync'ed and installed)."""
        while True:
            await self._snapshot_wanted.wait()
            self._snapshot_wanted = trio.Event()
            await self.snapshot()

    async def _flush(self) -> None:
        batch = tuple(self._pending)
        self._pending.clear()
        try:
            try:
                self._out_send.send_nowait(batch)
            except trio.WouldBlock:
                await self._out_send.send(batch)
        except trio.BrokenResourceError:
            log.error("outbox closed by its reader: %d actions dropped", len(batch))

    async def _run(self) -> None:
        intake, feedback, heap = self._intake, self._feedback, self._heap
        try:
            while True:
                now = self._clock()
                applied = _drain(intake, self._on_intake, now) + _drain(
                    feedback, self._on_feedback, now
                )
                busy = applied > 0
                n = 0
                while heap and heap[0][0] <= now and n < BATCH:
                    _, seq, wid = heapq.heappop(heap)
                    try:
                        self._on_due(seq, wid, now)
                    except Exception as exc:
                        self._failed(exc, wid, None)
                    n += 1
                busy = busy or n > 0
                self._end_turn(applied)
                if self._pending:
                    await self._flush()
                if busy:
                    await trio.lowlevel.checkpoint()
                    continue
                if intake.queue or feedback.queue:
                    continue
                if self._closing:
                    return
                with trio.move_on_at(heap[0][0] - self._offset if heap else math.inf):
                    await self._idle.park()
        finally:
            self._out_send.close()
