"""The engine as a service: transports in and out, the journal, and a clean shutdown.

Three kinds of task drive an :class:`~engine.scheduler.Engine`:

- :func:`run_intake` / :func:`run_feedback`: ``receive_batch`` -> decode and validate each
  message (bad ones are dead-lettered with the reason, which also acks them) -> ``submit_many``
  -> ``await engine.durable()`` -> ``ack``. A message is acknowledged only once the journal has
  it, so a crash can only cause a redelivery, which the machine counts as a duplicate.
- :func:`run_outbox`: ``receive_batch`` from ``engine.actions()`` -> ``sink.send`` (retried with
  backoff) -> ``engine.mark_sent``. Actions may leave before their record is durable; their
  keys are deterministic, so a crash can only cause a repeat with the same key.

:func:`serve` wires them up and shuts down in order on SIGINT/SIGTERM: stop taking intake,
drain, flush the outbox, snapshot, close. Logs carry ids, counts and reasons, never payloads.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from engine.machine import validate_warning
from engine.model import Action, FeedbackEvent, InvalidMessage, WarningInstruction
from engine.model import decode_feedback as _decode_feedback
from engine.model import decode_warning as _decode_warning
from engine.scheduler import Engine
from engine.transport.base import Delivery, IntakeSource, OutboxSink

log = logging.getLogger("engine.service")

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
BATCH_GRACE_S = 60.0
"""Longest a taken batch may take to be journaled and acked; past it the batch is abandoned
unacked (a durable source redelivers it)."""


Observer = Callable[[tuple[Action, ...], float], object]
"""Told of every batch of actions once sent, with the engine's time (statistics, window tags)."""
InputObserver = Callable[[list[WarningInstruction | FeedbackEvent], float], object]
"""Told of every batch of accepted warnings or feedback once acknowledged, with engine time."""


@dataclass
class ServiceStats:
    """Counters for the shutdown summary and health checks."""

    warnings: int = 0
    feedback: int = 0
    dead_letters: int = 0
    sent: int = 0
    send_retries: int = 0
    started: float = field(default_factory=time.monotonic)


async def _pump(
    engine: Engine,
    source: IntakeSource,
    decode: Callable[[bytes], object],
    submit: Callable[[list[object]], Awaitable[None]],
    stats: ServiceStats,
    counter: str,
    observers: Sequence[InputObserver] = (),
) -> None:
    while True:
        try:
            batch = await source.receive_batch()
        except trio.EndOfChannel:
            log.info("%s: end of input", source.name)
            return
        # A batch taken is finished even during shutdown (stopping only stops the next read):
        # otherwise a clean stop would leave journaled messages unacked, to be redelivered.
        # Bounded, so a stuck sink (outbox full, engine blocked) cannot stop a shutdown forever.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + BATCH_GRACE_S):
            good: list[object] = []
            ids: list[str] = []
            bad: list[tuple[Delivery, str]] = []
            for d in batch:
                try:
                    good.append(decode(d.raw))
                    ids.append(d.id)
                except InvalidMessage as exc:
                    bad.append((d, str(exc)))
            for d, reason in bad:
                await source.dead_letter(d, reason)
            stats.dead_letters += len(bad)
            if good:
                await submit(good)
                await engine.durable()
                await source.ack(ids)
                setattr(stats, counter, getattr(stats, counter) + len(good))
                for observe in observers:
                    observe(good, engine.now())  # type: ignore[arg-type]


async def run_intake(
    engine: Engine,
    source: IntakeSource,
    stats: ServiceStats,
    observers: Sequence[InputObserver] = (),
) -> None:
    """Warnings from ``source`` into the engine, acked once durable, until the source ends."""

    def decode(raw: bytes) -> WarningInstruction:
        w = _decode_warning(raw)
        validate_warning(w, engine.rules)
        return w

    await _pump(engine, source, decode, engine.submit_many, stats, "warnings", observers)  # type: ignore[arg-type]


async def run_feedback(
    engine: Engine,
    source: IntakeSource,
    stats: ServiceStats,
    observers: Sequence[InputObserver] = (),
) -> None:
    """Feedback events from ``source`` into the engine, acked once durable."""

    def decode(raw: bytes) -> FeedbackEvent:
        return _decode_feedback(raw)

    await _pump(engine, source, decode, engine.feedback_many, stats, "feedback", observers)  # type: ignore[arg-type]


async def run_outbox(
    engine: Engine, sink: OutboxSink, stats: ServiceStats, observers: Sequence[Observer] = ()
) -> None:
    """Every action to ``sink`` (at-least-once), until the engine closes its outbox."""
    stream = engine.actions()
    while True:
        try:
            batch = await stream.receive_batch()
        except trio.EndOfChannel:
            return
        delay = RETRY_FIRST_S
        while True:
            try:
                await sink.send(batch)
                break
            except Exception as exc:  # the sink's failure must not lose the batch
                stats.send_retries += 1
                log.warning(
                    "%s: send of %d actions failed (%s); retrying in %.2f s",
                    sink.name,
                    len(batch),
                    type(exc).__name__,
                    delay,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        stats.sent += len(batch)
        engine.mark_sent([a.key for a in batch])
        for observe in observers:
            observe(batch, engine.now())


async def serve(
    engine: Engine,
    intake: IntakeSource,
    outbox: OutboxSink,
    *,
    feedback: IntakeSource | None = None,
    stop: trio.Event | None = None,
    handle_signals: bool = True,
    observers: Sequence[Observer] = (),
    input_observers: Sequence[InputObserver] = (),
    task_status: trio.TaskStatus[ServiceStats] = trio.TASK_STATUS_IGNORED,
) -> ServiceStats:
    """Run until SIGINT/SIGTERM (or ``stop`` is set), then shut down cleanly: stop taking
    intake, wait until what was taken is applied and durable, let the outbox send everything,
    snapshot. Input ending (end of file) does not stop the service: deadlines still run."""
    stats = ServiceStats()
    stop = stop if stop is not None else trio.Event()
    async with trio.open_nursery() as nursery:
        if handle_signals:
            nursery.start_soon(_watch_signals, stop)
        inputs = trio.CancelScope()
        nursery.start_soon(_inputs, engine, intake, feedback, stats, inputs, input_observers)
        sender = trio.Event()

        async def outbox_task() -> None:
            try:
                await run_outbox(engine, outbox, stats, observers)
            finally:
                sender.set()

        nursery.start_soon(outbox_task)
        task_status.started(stats)
        await stop.wait()
        inputs.cancel()
        await engine.durable()
        engine.close()
        await sender.wait()
        await engine.snapshot()
        nursery.cancel_scope.cancel()
    return stats


async def _inputs(
    engine: Engine,
    intake: IntakeSource,
    feedback: IntakeSource | None,
    stats: ServiceStats,
    scope: trio.CancelScope,
    observers: Sequence[InputObserver] = (),
) -> None:
    with scope:
        async with trio.open_nursery() as n:
            n.start_soon(run_intake, engine, intake, stats, observers)
            if feedback is not None:
                n.start_soon(run_feedback, engine, feedback, stats, observers)


async def _watch_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()
            return
