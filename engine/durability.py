"""What the engine writes to its journal, and how a restart rebuilds the engine from it.

The engine loop is the only writer. Every input it applies is recorded with the exact ``now``
it used (epoch seconds), so replaying the records in order through the pure
:func:`engine.machine.step` rebuilds every state exactly, timeline included:

- :class:`Accepted` — an alert, update or cancel, with the responders resolved at that moment
  (replay must not depend on later registry changes);
- :class:`Fed` — a feedback event;
- :class:`Ticked` — a deadline fired (or, for an ended warning, its retention ran out);
- :class:`Sent` — the outbox handed these actions over; actions produced by replayed steps and
  not covered by a ``Sent`` are sent again after a restart, with the same keys;
- :class:`CampaignIssued` / :class:`CampaignEnded` — a campaign accepted (its raw JSON) and its
  end; campaigns not ended are issued again after a restart (their send keys are deterministic,
  so residents already reached repeat with the same keys, which adapters drop).

A snapshot (:class:`EngineSnapshot`) holds every state and the unsent actions, and covers every
record written before it, so start-up reads only what came after the last one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from engine.incidents import ALONE, Decision, apply, area_alert_action
from engine.journal.disk import JournalError
from engine.machine import TICK, Event, Intake, LinkWhy, WarningState
from engine.model import Action, FeedbackEvent, Responders, WarningInstruction
from engine.rules.escalation import EscalationRules

log = logging.getLogger("engine.durability")

SNAPSHOT_VERSION = 1


class Accepted(msgspec.Struct, frozen=True, gc=False, tag="a", array_like=True):
    """A warning instruction the engine applied at ``at``, with whom it resolved to, and what
    correlation decided (later fields have defaults, so older journals still decode)."""

    at: float
    warning: WarningInstruction
    responders: Responders
    incident: str | None = None
    why: LinkWhy = "correlated"
    ordinal: int = 0
    area_alert: bool = False

    @property
    def decision(self) -> Decision:
        return Decision(self.incident, self.why, self.area_alert)


class Fed(msgspec.Struct, frozen=True, gc=False, tag="f", array_like=True):
    """A feedback event the engine applied at ``at``."""

    at: float
    event: FeedbackEvent


class Ticked(msgspec.Struct, frozen=True, gc=False, tag="t", array_like=True):
    """A deadline of ``warning_id`` fired at ``at`` (an ended warning is forgotten instead)."""

    at: float
    warning_id: str


class Sent(msgspec.Struct, frozen=True, gc=False, tag="s", array_like=True):
    """The outbox handed these actions over (written without waiting for durability)."""

    keys: tuple[str, ...]


class CampaignIssued(msgspec.Struct, frozen=True, gc=False, tag="c", array_like=True):
    """A campaign was accepted and acknowledged; ``raw`` is its JSON as received."""

    campaign_id: str
    raw: bytes


class CampaignEnded(msgspec.Struct, frozen=True, gc=False, tag="e", array_like=True):
    """A campaign finished, was cancelled or expired: a restart must not issue it again."""

    campaign_id: str


Record = Accepted | Fed | Ticked | Sent | CampaignIssued | CampaignEnded


class EngineSnapshot(msgspec.Struct, kw_only=True):
    """Every state and every action not yet handed to the outbox, at ``taken_at``."""

    version: int
    taken_at: float
    states: list[WarningState]
    unsent: list[Action]
    campaigns: list[CampaignIssued] = []
    campaign_ids: list[str] = []
    """Every campaign id ever accepted, ended ones included: ids stay unique for good."""
    retired_warnings: list[str] = []
    """Ids of warnings forgotten after their retention: an alert under one is refused."""


_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_snapshot_decoder = msgspec.msgpack.Decoder(EngineSnapshot)


class JournalFormatError(JournalError, ValueError):
    """A journal record or snapshot this version cannot read (another format, or not ours)."""


def encode(record: Record | EngineSnapshot) -> bytes:
    """msgpack bytes for a record or a snapshot."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> Record:
    """The inverse of :func:`encode` for records; :class:`JournalFormatError` if unreadable."""
    try:
        return _record_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise JournalFormatError(f"unreadable journal record: {exc}") from exc


def decode_snapshot(data: bytes) -> EngineSnapshot:
    """The inverse of :func:`encode` for snapshots; :class:`JournalFormatError` if unreadable."""
    try:
        snap = _snapshot_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise JournalFormatError(f"unreadable engine snapshot: {exc}") from exc
    if snap.version != SNAPSHOT_VERSION:
        raise JournalFormatError(f"engine snapshot version {snap.version} is not supported")
    return snap


def intake_event(
    warning: WarningInstruction, responders: Responders, ordinal: int = 0, generation: int = 0
) -> Intake:
    """The machine's intake event; expiry is the warning's own wall-clock time."""
    return Intake(warning, responders, warning.expires.timestamp(), ordinal, generation)


@dataclass
class Rebuilt:
    """The engine's durable state after replay: states and actions still to send."""

    states: dict[str, WarningState] = field(default_factory=dict)
    unsent: dict[str, Action] = field(default_factory=dict)
    campaigns: dict[str, bytes] = field(default_factory=dict)
    """Campaigns accepted and not ended, in the order they were issued."""
    campaign_ids: set[str] = field(default_factory=set)
    """Every campaign id ever accepted (see :class:`CampaignRecords`)."""
    retired: set[str] = field(default_factory=set)
    """Ids of warnings that ended and were forgotten: never to be used again."""
    records: int = 0
    failed_steps: int = 0
    last_at: float = 0.0
    ordinal: int = 0
    """The highest intake number replayed: the live loop numbers on from there."""


def rebuild(
    snapshot_payload: bytes | None, records: Iterable[bytes], rules: EscalationRules
) -> Rebuilt:
    """Apply the snapshot, then each record in order, exactly as the live loop did."""
    out = Rebuilt()
    if snapshot_payload is not None:
        snap = decode_snapshot(snapshot_payload)
        out.states = {s.warning.id: s for s in snap.states}
        out.unsent = {a.key: a for a in snap.unsent}
        out.campaigns = {c.campaign_id: c.raw for c in snap.campaigns}
        out.campaign_ids = {*snap.campaign_ids, *out.campaigns}
        out.retired = set(snap.retired_warnings)
        out.last_at = snap.taken_at
    states, unsent = out.states, out.unsent
    for raw in records:
        rec = decode_record(raw)
        out.records += 1
        event: Event
        decision = ALONE
        if isinstance(rec, Sent):
            for key in rec.keys:
                unsent.pop(key, None)
            continue
        if isinstance(rec, CampaignIssued):
            out.campaigns[rec.campaign_id] = rec.raw
            out.campaign_ids.add(rec.campaign_id)
            continue
        if isinstance(rec, CampaignEnded):
            out.campaigns.pop(rec.campaign_id, None)
            continue
        if isinstance(rec, Ticked):
            wid = rec.warning_id
            old = states.get(wid)
            if old is None:
                continue
            if old.status != "active":  # retention ran out: the live loop forgot it here
                del states[wid]
                out.retired.add(wid)
                continue
            event = TICK
        elif isinstance(rec, Accepted):
            wid = rec.warning.id
            event = intake_event(rec.warning, rec.responders, rec.ordinal)
            decision = rec.decision
            out.ordinal = max(out.ordinal, rec.ordinal)
            if rec.area_alert:
                alert = area_alert_action(rec.warning, rec.responders, rules.correlation)
                unsent[alert.key] = alert
        else:
            wid = rec.event.warning_id
            event = rec.event
        out.last_at = max(out.last_at, rec.at)
        try:
            changes = apply(states, wid, event, rec.at, rules, decision)
        except Exception:  # the live loop dead-lettered this too
            out.failed_steps += 1
            continue
        for w, _, new, actions, _ in changes or ():
            states[w] = new
            for a in actions:
                unsent[a.key] = a
    return out


class CampaignRecords:
    """What the engine's journal says about campaigns: which were accepted and not ended (a
    restart issues them again) and every id ever accepted (a second campaign under a used id is
    refused, across restarts and snapshots: adapters deduplicate sends by keys built from it).

    Kept apart from :class:`~engine.scheduler.Engine`, which owns warnings: campaigns are
    planned and paced by the campaign service; the engine only makes their acceptance durable
    in the same journal. ``write`` appends one record (None: no journal, nothing is kept).
    """

    def __init__(self, write: Callable[[bytes], None] | None) -> None:
        self._write = write
        self.open: dict[str, bytes] = {}
        self.ids: set[str] = set()

    def restore(self, rebuilt: Rebuilt) -> None:
        self.open, self.ids = dict(rebuilt.campaigns), set(rebuilt.campaign_ids)

    def used(self, campaign_id: str) -> bool:
        """Was a campaign with this id accepted before (in this run or any earlier one)?"""
        return campaign_id in self.ids

    def record(self, campaign_id: str, raw: bytes) -> None:
        """A campaign was issued: journal it, so a restart issues it again until it ends.
        Durable after the engine's next ``await durable()``; acknowledge its source only then."""
        if self._write is None:
            return
        self.open[campaign_id] = raw
        self.ids.add(campaign_id)
        self._write(encode(CampaignIssued(campaign_id, raw)))

    def end(self, campaign_id: str) -> None:
        """A campaign finished, was cancelled or expired: a restart must not issue it again."""
        if self._write is None or self.open.pop(campaign_id, None) is None:
            return
        self._write(encode(CampaignEnded(campaign_id)))

    def pending(self) -> list[tuple[str, bytes]]:
        """Campaigns accepted and not ended, in issue order."""
        return list(self.open.items())

    def snapshot(self) -> tuple[list[CampaignIssued], list[str]]:
        """For the engine's snapshot: the open campaigns and every id."""
        return [CampaignIssued(c, raw) for c, raw in self.open.items()], sorted(self.ids)


def ended_at(state: WarningState) -> float:
    """When an ended warning ended: its last timeline line is the end (or its only line)."""
    return state.timeline[-1].at if state.timeline else state.expires_at
