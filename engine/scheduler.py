"""The imperative shell: one trio task owns every warning's state, its deadline and the outbox.

Embedding::

    async with Engine.open(directory, rules) as engine:
        nursery.start_soon(send_actions, engine.actions())   # async for action in ...
        await engine.submit(warning)          # raises InvalidWarning for garbage
        await engine.feedback(event)          # ack, call result, read, visit done, outcome
        engine.status(warning_id)             # WarningState (timeline included) or None

Why one loop: the machine is pure, so all the shell does is move messages and time. A single
task with one deadline heap (lazy deletion: an entry is live only while its sequence number is
the warning's current one) and batched draining of the inboxes costs a few microseconds per
event, where a task per warning would cost a task, a cancel scope and a timer each.
Time comes only from trio, so the same code runs under ``MockClock`` in tests and the simulator.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

import msgspec
import trio

from engine.directory import Directory, Responders
from engine.machine import TICK, Event, Intake, WarningState, step, validate_warning
from engine.model import (
    Action,
    FeedbackEvent,
    InvalidFeedback,
    InvalidWarning,
    PhoneTarget,
    ResidentTarget,
    WarningInstruction,
    decode_feedback,
    decode_warning,
)
from engine.rules.escalation import EscalationRules, load_escalation

log = logging.getLogger("engine.scheduler")

T = TypeVar("T")

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
    ticks: int = 0
    actions: int = 0
    dead_letters: int = 0
    evicted: int = 0


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
        self._engine._wake()

    async def put(self, item: T) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self.queue) >= self.capacity:
            await self.space.park()
        self.queue.append(item)
        self._engine._wake()
        await trio.lowlevel.cancel_shielded_checkpoint()


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
    ) -> None:
        self.directory = directory
        self.rules = rules
        self.county_centre = county_centre
        self.retain_ended_s = retain_ended_s
        self.stats = EngineStats()
        self.dead_letters: deque[DeadLetter] = deque(maxlen=1000)
        self._on_dead_letter = on_dead_letter or self.dead_letters.append
        if wall_clock is None:
            wall0, t0 = datetime.now(UTC), trio.current_time()

            def wall_clock() -> datetime:
                return wall0 + timedelta(seconds=trio.current_time() - t0)

        self.wall_clock = wall_clock
        self._states: dict[str, WarningState] = {}
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
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine._run)
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

    async def submit_many(self, warnings: Iterable[WarningInstruction | bytes | str]) -> None:
        """Submit a batch (e.g. one read from a stream) with one checkpoint, not one per item.

        Stops at the first invalid one, raising :class:`InvalidWarning`; earlier ones are in.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        for w in warnings:
            checked = self._check_warning(w)
            try:
                self._intake.put_nowait(checked)
            except trio.WouldBlock:
                await self._intake.put(checked)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def feedback(self, event: FeedbackEvent | bytes | str) -> None:
        """Hand a feedback event (or its JSON) to the engine. Feedback for a warning the engine
        does not know is dead-lettered, not raised: it may simply be late."""
        await self._feedback.put(self._check_feedback(event))

    def feedback_nowait(self, event: FeedbackEvent | bytes | str) -> None:
        """Like :meth:`feedback` from synchronous code; raises ``trio.WouldBlock`` when full."""
        self._feedback.put_nowait(self._check_feedback(event))

    async def feedback_many(self, events: Iterable[FeedbackEvent | bytes | str]) -> None:
        """Feedback in a batch, with one checkpoint; stops at the first invalid event."""
        await trio.lowlevel.checkpoint_if_cancelled()
        for e in events:
            checked = self._check_feedback(e)
            try:
                self._feedback.put_nowait(checked)
            except trio.WouldBlock:
                await self._feedback.put(checked)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def actions(self) -> ActionStream:
        """The outbox: ``async for action in engine.actions()``. Ends when the engine closes.

        If nobody reads it, the engine stops when it is full (back-pressure, not data loss).
        Writers that batch (a Redis pipeline, say) can use ``receive_batch()`` instead.
        """
        return self._stream

    def status(self, warning_id: str) -> WarningState | None:
        """The warning's current state with its timeline; None if unknown (or long ended)."""
        return self._states.get(warning_id)

    @property
    def pending(self) -> int:
        """Warnings that are still active (not closed, cancelled or expired)."""
        return self._active

    # --- validation at the edge ------------------------------------------------------------

    def _check_warning(self, warning: WarningInstruction | bytes | str) -> WarningInstruction:
        try:
            if not isinstance(warning, WarningInstruction):
                if not isinstance(warning, bytes | str):
                    raise InvalidWarning("(message)", "a WarningInstruction or its JSON")
                warning = decode_warning(warning)
            validate_warning(warning, self.rules)
        except InvalidWarning as exc:
            wid = warning.id if isinstance(warning, WarningInstruction) else None
            self._dead_letter("warning", str(exc), wid, warning)
            raise
        return warning

    def _check_feedback(self, event: FeedbackEvent | bytes | str) -> FeedbackEvent:
        try:
            if isinstance(event, bytes | str):
                return decode_feedback(event)
            if not isinstance(event, msgspec.Struct) or not hasattr(event, "warning_id"):
                raise InvalidFeedback("(message)", "a feedback event or its JSON")
        except InvalidFeedback as exc:
            self._dead_letter("feedback", str(exc), None, event)
            raise
        return event

    def _dead_letter(
        self,
        source: Literal["warning", "feedback", "internal"],
        reason: str,
        wid: str | None,
        message: object,
    ) -> None:
        self.stats.dead_letters += 1
        log.warning("dead letter (%s, warning %s): %s", source, wid, reason)
        self._on_dead_letter(DeadLetter(trio.current_time(), source, reason, wid, message))

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

    def _apply(self, wid: str, event: Event, now: float, *, popped: bool = False) -> None:
        """Step one warning and (re)schedule it. ``popped``: its heap entry was just consumed,
        so it must be pushed again even if the deadline did not change."""
        old = self._states.get(wid)
        try:
            new, actions, deadline = step(old, event, now, self.rules)
        except Exception as exc:  # a bug in the machine must not stop the other warnings
            log.exception("machine failed on warning %s", wid)
            self._dead_letter("internal", f"machine error: {type(exc).__name__}", wid, event)
            return
        if new is None:
            self._dead_letter("feedback", "feedback for an unknown warning", wid, event)
            return
        self._states[wid] = new
        self._active += (new.status == "active") - (old is not None and old.status == "active")
        if actions:
            self._pending.extend(actions)
            self.stats.actions += len(actions)
        if popped or old is None or deadline != old.next_deadline:
            if deadline is None:  # ended: keep for status() and dedup, then forget
                deadline = now + self.retain_ended_s
            if deadline == math.inf:
                self._live.pop(wid, None)
                return
            self._seq += 1
            self._live[wid] = self._seq
            heapq.heappush(self._heap, (deadline, self._seq, wid))

    def _on_intake(self, warning: WarningInstruction, now: float) -> None:
        self.stats.intake += 1
        old = self._states.get(warning.id)
        responders = old.responders if old is not None else self._resolve(warning)
        expires_at = now + (warning.expires - self.wall_clock()).total_seconds()
        self._apply(warning.id, Intake(warning, responders, expires_at), now)

    def _on_due(self, seq: int, wid: str, now: float) -> None:
        if self._live.get(wid) != seq:
            return  # superseded: lazy deletion
        state = self._states[wid]
        if state.status != "active":  # retention ran out
            del self._states[wid], self._live[wid]
            self.stats.evicted += 1
            return
        self.stats.ticks += 1
        self._apply(wid, TICK, now, popped=True)

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
                now = trio.current_time()
                busy = False
                if intake.queue:
                    busy = True
                    q = intake.queue
                    for _ in range(min(len(q), BATCH)):
                        self._on_intake(q.popleft(), now)
                    if intake.space:
                        intake.space.unpark_all()
                if feedback.queue:
                    busy = True
                    q2 = feedback.queue
                    for _ in range(min(len(q2), BATCH)):
                        ev = q2.popleft()
                        self.stats.feedback += 1
                        self._apply(ev.warning_id, ev, now)
                    if feedback.space:
                        feedback.space.unpark_all()
                n = 0
                while heap and heap[0][0] <= now and n < BATCH:
                    _, seq, wid = heapq.heappop(heap)
                    self._on_due(seq, wid, now)
                    n += 1
                busy = busy or n > 0
                if self._pending:
                    await self._flush()
                if busy:
                    await trio.lowlevel.checkpoint()
                    continue
                if intake.queue or feedback.queue:
                    continue
                with trio.move_on_at(heap[0][0] if heap else math.inf):
                    await self._idle.park()
        finally:
            self._out_send.close()
