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

import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec
import trio

from engine.campaigns import Campaign, CampaignError, CampaignService
from engine.campaigns.campaign import (
    CampaignControl,
    ConfirmTask,
    DuplicateCampaign,
    UnknownTask,
    decode_campaign,
    decode_control,
    is_control,
)
from engine.incidents import area_campaign
from engine.journal import JournalError
from engine.model import Action, FeedbackEvent, InvalidMessage, WarningInstruction
from engine.model import decode_feedback as _decode_feedback
from engine.model import decode_warning as _decode_warning
from engine.rules.escalation import EscalationRules
from engine.scheduler import DeadLetter as EngineDeadLetter
from engine.scheduler import Engine
from engine.transport.base import (
    DeadLetter,
    DeadLetterSink,
    Delivery,
    IntakeSource,
    OutboxSink,
)

log = logging.getLogger("engine.service")

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
MAX_MESSAGE = 1 << 20
"""Longest message taken from any transport (JSON lines frame at the same bound): a warning is a
few hundred bytes, a megabyte is garbage or an attack, and decoding it would hold the loop."""
TOO_LONG = f"(message): at most {MAX_MESSAGE} bytes"

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
    campaigns: int = 0
    started: float = field(default_factory=time.monotonic)


def _raw_of(message: object) -> bytes:
    """The message an engine-level rejection was about, as JSON bytes for the dead letter."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode()
    try:
        return msgspec.json.encode(message)
    except Exception:  # never let the record of a failure fail
        return b""


class DeadLetterRelay:
    """Takes the engine's own rejections (feedback for an unknown warning, a message the
    machine or the journal could not take) to the same dead-letter place as the transports'.

    The engine calls it synchronously from its loop; :meth:`flush` writes what is queued. The
    intake pumps flush after ``durable()`` and before ``ack``, so a message the engine refused
    is in the dead-letter place before its source forgets it.
    """

    def __init__(self, sink: DeadLetterSink | None, stats: ServiceStats) -> None:
        self._sink = sink
        self._stats = stats
        self._queue: deque[EngineDeadLetter] = deque()
        self._wanted = trio.Event()

    def __call__(self, letter: EngineDeadLetter) -> None:
        self._queue.append(letter)
        self._wanted.set()

    async def flush(self) -> None:
        while self._queue:
            letter = self._queue.popleft()
            self._stats.dead_letters += 1
            if self._sink is None:
                continue
            record = DeadLetter(
                reason=letter.reason,
                raw=_raw_of(letter.message),
                source=f"engine:{letter.source}",
                source_id=letter.warning_id or "",
                at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            )
            try:
                await self._sink.write(record)
            except Exception as exc:  # the dead-letter place failing must not stop the engine
                log.error("dead letter not stored (%s): %s", type(exc).__name__, record)
        await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        """Flush rejections that arrive outside an intake batch (deadlines, internal errors)."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            await self.flush()


def _reason(exc: Exception, stage: str) -> str:
    """Why a message was refused: a validation error's own words (value-free by construction,
    see :mod:`engine.errors`); for anything else, the stage and the kind of error, never the
    error's text, which may quote the message."""
    if isinstance(exc, InvalidMessage):
        return str(exc)
    return f"(message): could not be {stage} ({type(exc).__name__}); kept here for inspection"


async def _pump(
    engine: Engine,
    source: IntakeSource,
    decode: Callable[[bytes], object],
    submit: Callable[[list[object]], Awaitable[list[tuple[int, Exception]]]],
    stats: ServiceStats,
    counter: str,
    observers: Sequence[InputObserver] = (),
    relay: DeadLetterRelay | None = None,
) -> None:
    """Isolation by construction: whatever one message does while it is decoded, validated or
    submitted, it is dead-lettered with a reason and the rest of the batch goes on."""
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
                if len(d.raw) > MAX_MESSAGE:
                    bad.append((d, TOO_LONG))
                    continue
                try:
                    good.append(decode(d.raw))
                    ids.append(d.id)
                except InvalidMessage as exc:
                    bad.append((d, str(exc)))
                except Exception as exc:
                    log.error("%s#%s: decoding failed: %s", source.name, d.id, type(exc).__name__)
                    bad.append((d, _reason(exc, "decoded")))
            if good:  # the engine may still refuse one (its clock moved): keep the others
                refused = await submit(good)
                if refused:
                    gone = {i for i, _ in refused}
                    by_id = {d.id: d for d in batch}
                    bad.extend((by_id[ids[i]], _reason(exc, "submitted")) for i, exc in refused)
                    good = [g for i, g in enumerate(good) if i not in gone]
                    ids = [x for i, x in enumerate(ids) if i not in gone]
            for d, reason in bad:
                await source.dead_letter(d, reason)
            stats.dead_letters += len(bad)
            if good:
                await engine.durable()
                if relay is not None:
                    await relay.flush()
                await source.ack(ids)
                setattr(stats, counter, getattr(stats, counter) + len(good))
                for observe in observers:
                    observe(good, engine.now())  # type: ignore[arg-type]


async def run_intake(
    engine: Engine,
    source: IntakeSource,
    stats: ServiceStats,
    observers: Sequence[InputObserver] = (),
    relay: DeadLetterRelay | None = None,
) -> None:
    """Warnings from ``source`` into the engine, acked once durable, until the source ends."""

    async def submit(items: list[object]) -> list[tuple[int, Exception]]:
        # The engine validates each warning against its rules and clock (check_warning) as it
        # takes it, and reports what it refuses: validating here as well would do it twice.
        return await engine.submit_many(items, report=True)  # type: ignore[arg-type]

    await _pump(engine, source, _decode_warning, submit, stats, "warnings", observers, relay)


async def run_feedback(
    engine: Engine,
    source: IntakeSource,
    stats: ServiceStats,
    observers: Sequence[InputObserver] = (),
    relay: DeadLetterRelay | None = None,
) -> None:
    """Feedback events from ``source`` into the engine, acked once durable."""

    async def submit(items: list[object]) -> list[tuple[int, Exception]]:
        return await engine.feedback_many(items, report=True)  # type: ignore[arg-type]

    await _pump(engine, source, _decode_feedback, submit, stats, "feedback", observers, relay)


async def _send(sink: OutboxSink, batch: Sequence[object], stats: ServiceStats) -> None:
    """Send one batch, retrying with backoff: the sink's failure must not lose the batch."""
    delay = RETRY_FIRST_S
    while True:
        try:
            await sink.send(batch)  # type: ignore[arg-type]
            break
        except Exception as exc:
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
        # Whatever else is ready goes in the same send: the engine emits one batch per loop
        # turn, and under many small intakes (HTTP submits, one warning a turn) one send per
        # turn, each a thread hop, falls behind the loop.
        more: list[Action] = []
        while True:
            try:
                more.append(stream.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if more:
            batch = (*batch, *more)
        await _send(sink, batch, stats)
        engine.mark_sent([a.key for a in batch])
        for observe in observers:
            observe(batch, engine.now())


class CampaignFeed(NamedTuple):
    """Broadcast campaigns beside the warnings: where campaigns come in, the service that plans
    and paces them, and the channel its actions leave on (into the same outbox)."""

    source: IntakeSource | None
    service: CampaignService
    actions: trio.MemoryReceiveChannel[object]
    observers: Sequence[Callable[[list[object], float], object]] = ()
    on_issued: Callable[[Campaign], object] | None = None


async def run_campaigns(
    engine: Engine,
    campaigns: CampaignService,
    source: IntakeSource,
    stats: ServiceStats,
    on_issued: Callable[[Campaign], object] | None = None,
) -> None:
    """CampaignFeed from ``source``: issued (planned), journaled, then acked; a campaign that
    cannot be issued (bad JSON, unknown tag, empty audience, expired) is dead-lettered with
    the reason. With a journal, an acked campaign is issued again after a restart until it
    ends (send progress is not journaled: residents already reached repeat with the same
    keys, and caps restart from that campaign's own plan)."""
    while True:
        try:
            batch = await source.receive_batch()
        except trio.EndOfChannel:
            log.info("%s: end of input", source.name)
            return
        with trio.CancelScope(shield=True, deadline=trio.current_time() + BATCH_GRACE_S):
            ok: list[str] = []
            for d in batch:
                if len(d.raw) > MAX_MESSAGE:
                    await source.dead_letter(d, TOO_LONG)
                    stats.dead_letters += 1
                    continue
                if is_control(d.raw):
                    try:
                        _control(campaigns, decode_control(d.raw))
                    except CampaignError as exc:
                        await source.dead_letter(d, str(exc))
                        stats.dead_letters += 1
                    else:
                        ok.append(d.id)
                    continue
                try:
                    await accept_campaign(engine, campaigns, d.raw, on_issued)
                except CampaignError as exc:
                    await source.dead_letter(d, str(exc))
                    stats.dead_letters += 1
                except JournalError:
                    # Not the campaign's fault (the journal failed, or was fenced or stopped):
                    # left unacknowledged, for this engine's successor to take.
                    raise
                except Exception as exc:  # one campaign must not stop the others
                    log.error("%s#%s: campaign failed: %s", source.name, d.id, type(exc).__name__)
                    await source.dead_letter(d, _reason(exc, "issued"))
                    stats.dead_letters += 1
                else:
                    ok.append(d.id)
            if ok:
                await engine.durable()
                await source.ack(ok)
                stats.campaigns += len(ok)


class AreaCampaigns:
    """Starts the urgent campaign of an area alert (``[area_alert.campaign]`` in
    rules/correlation.toml): an action observer hands each area alert to a task that issues the
    campaign through :func:`accept_campaign`, so it is journaled like any other and re-issued
    after a restart. A replayed alert has the same campaign id and is not issued twice."""

    def __init__(
        self,
        engine: Engine,
        campaigns: CampaignService,
        on_issued: Callable[[Campaign], object] | None = None,
    ) -> None:
        self.engine, self.campaigns, self.on_issued = engine, campaigns, on_issued
        self._send, self._recv = trio.open_memory_channel[bytes](1024)
        self.started = 0
        self.refused = 0

    def observe_actions(self, actions: Sequence[Action], now: float) -> None:
        for a in actions:
            if a.action != "area_alert":
                continue
            raw = area_campaign(a, self.engine.rules.correlation, now)
            if raw is None:
                continue
            try:
                self._send.send_nowait(raw)
            except trio.WouldBlock:  # 1,024 alerts waiting: the cooldowns make this unreachable
                self.refused += 1
                log.warning("area campaign for %s not started: too many waiting", a.key)

    async def run(self) -> None:
        async for raw in self._recv:
            try:
                campaign = await accept_campaign(self.engine, self.campaigns, raw, self.on_issued)
            except DuplicateCampaign:
                continue  # the alert was replayed after a restart: its campaign runs already
            except CampaignError as exc:
                self.refused += 1
                log.warning("area campaign not started: %s", exc)
                continue
            self.started += 1
            await self.engine.durable()
            log.info("area campaign %s started (%s)", campaign.id, campaign.audience)


async def accept_campaign(
    engine: Engine,
    campaigns: CampaignService,
    raw: bytes,
    on_issued: Callable[[Campaign], object] | None = None,
) -> Campaign:
    """Decode, refuse a reused id, issue, and record a campaign for the journal (the caller
    awaits ``engine.durable()`` before acknowledging). Raises :class:`CampaignError` with the
    reason before anything changes. Shared by the campaigns stream and the HTTP API."""
    campaign = decode_campaign(raw)
    if engine.campaign_records.used(campaign.id):
        raise DuplicateCampaign(
            f"id: a campaign id not used before ({campaign.id} was accepted "
            "earlier; ids stay unique across restarts)"
        )
    await campaigns.issue(campaign)
    engine.campaign_records.record(campaign.id, raw)
    if on_issued is not None:
        on_issued(campaign)
    return campaign


def _control(campaigns: CampaignService, control: CampaignControl) -> None:
    """Confirm a task or cancel a campaign (a cancel is journaled through ``on_ended``; a
    confirmation is not: after a restart a re-issued routine task waits for it again)."""
    if isinstance(control, ConfirmTask):
        if not control.task_id.startswith(control.campaign_id + "/"):
            raise UnknownTask(
                f"task_id: {control.task_id!r} is not a task of {control.campaign_id}"
            )
        campaigns.confirm(control.task_id, control.officer)
    else:
        campaigns.cancel(control.campaign_id)


async def reissue_campaigns(engine: Engine, campaigns: CampaignFeed) -> int:
    """Issue again the campaigns the journal holds as accepted and not ended (after a
    restart); one that can no longer be issued (expired meanwhile) is ended. Returns how many
    were issued."""
    issued = 0
    for campaign_id, raw in engine.campaign_records.pending():
        try:
            campaign = decode_campaign(raw)
            await campaigns.service.issue(campaign)
        except Exception as exc:  # CampaignError (expired meanwhile) or anything unforeseen
            why = str(exc) if isinstance(exc, CampaignError) else type(exc).__name__
            log.warning("campaign %s not issued again: %s", campaign_id, why)
            engine.campaign_records.end(campaign_id)
            continue
        issued += 1
        if campaigns.on_issued is not None:
            campaigns.on_issued(campaign)
    if issued:
        log.info("issued %d campaigns again from the journal", issued)
    return issued


async def run_campaign_outbox(
    engine: Engine,
    recv: trio.MemoryReceiveChannel[object],
    sink: OutboxSink,
    stats: ServiceStats,
    observers: Sequence[Callable[[list[object], float], object]] = (),
) -> None:
    """Campaign actions to ``sink`` in batches, until the campaign service closes; observers
    get the engine's time, like the warning outbox's."""
    while True:
        try:
            batch = [await recv.receive()]
        except trio.EndOfChannel:
            return
        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
            while len(batch) < 1024:
                batch.append(recv.receive_nowait())
        await _send(sink, batch, stats)
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
    campaigns: CampaignFeed | None = None,
    dead_letters: DeadLetterSink | None = None,
    reload: Callable[[], EscalationRules] | None = None,
    task_status: trio.TaskStatus[ServiceStats] = trio.TASK_STATUS_IGNORED,
) -> ServiceStats:
    """Run until SIGINT/SIGTERM (or ``stop`` is set), then shut down cleanly: stop taking
    intake, wait until what was taken is applied and durable, let the outbox send everything,
    snapshot. Input ending (end of file) does not stop the service: deadlines still run.

    With ``campaigns``, campaigns are taken from their source too and their actions go to the
    same outbox; accepted campaigns not yet ended are issued again on the next start.

    ``dead_letters`` receives what the engine itself refuses inside its loop (feedback for an
    unknown warning, a message that could not be journaled or applied), beside what the
    transports dead-letter; without it those are only counted and logged.

    ``reload`` loads the rules again: on SIGHUP the engine puts them in force, or keeps the old
    ones if they do not load (:meth:`Engine.reload_from`)."""
    stats = ServiceStats()
    stop = stop if stop is not None else trio.Event()
    relay = DeadLetterRelay(dead_letters, stats)
    engine.on_dead_letter = relay
    if campaigns is not None:
        await reissue_campaigns(engine, campaigns)
    async with trio.open_nursery() as nursery:
        if handle_signals:
            nursery.start_soon(_watch_signals, stop)
            if reload is not None:
                nursery.start_soon(watch_reload, engine, reload)
        nursery.start_soon(relay.run)
        inputs = trio.CancelScope()
        nursery.start_soon(
            _inputs, engine, intake, feedback, stats, inputs, input_observers, campaigns, relay
        )
        if campaigns is not None:
            nursery.start_soon(
                run_campaign_outbox, engine, campaigns.actions, outbox, stats, campaigns.observers
            )
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
        await relay.flush()
        await engine.snapshot()
        nursery.cancel_scope.cancel()
    sources = (intake, feedback, campaigns.source if campaigns is not None else None)
    stats.dead_letters += sum(getattr(s, "dead_lettered", 0) for s in sources if s is not None)
    engine.on_dead_letter = None
    return stats


async def _inputs(
    engine: Engine,
    intake: IntakeSource,
    feedback: IntakeSource | None,
    stats: ServiceStats,
    scope: trio.CancelScope,
    observers: Sequence[InputObserver] = (),
    campaigns: CampaignFeed | None = None,
    relay: DeadLetterRelay | None = None,
) -> None:
    with scope:
        async with trio.open_nursery() as n:
            n.start_soon(run_intake, engine, intake, stats, observers, relay)
            if feedback is not None:
                n.start_soon(run_feedback, engine, feedback, stats, observers, relay)
            if campaigns is not None and campaigns.source is not None:
                n.start_soon(
                    run_campaigns,
                    engine,
                    campaigns.service,
                    campaigns.source,
                    stats,
                    campaigns.on_issued,
                )


async def watch_reload(engine: Engine, load: Callable[[], EscalationRules]) -> None:
    """Reload the rules on every SIGHUP, as Alertmanager does: validated first, a bad file
    keeps the old rules (logged and counted, see :attr:`Engine.reloads`)."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            log.info("received SIGHUP: reloading the rules")
            engine.reload_from(load)


async def _watch_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()
            return
