"""Simulated officers and residents: they answer the engine's actions after seeded random delays.

Every reaction is a scheduled item (time, what) in one heap that the replay's driver drains in
time order: acknowledgements (lognormal delays, slower for officers with many contacts and at
night), call results (fraud victims' lines are often busy: they are on the phone with the
fraudster), chats read or left unread, neighbours who go and look, outcomes, and officers'
one-click confirmations of routine campaign tasks. Nothing here knows the engine's state: the
actors only see actions, as real people would.

Randomness is keyed, not streamed: every draw comes from a keyed hash of the action's
idempotency key (or the warning id, or the task id). So the same action always meets the same
reaction, whatever else happened, and a what-if run differs from its baseline only where the
engine acted differently (common random numbers); it also makes runs independent of the order
in which trio happens to run tasks that are ready at the same instant.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import struct
from collections.abc import Iterable
from datetime import datetime, timedelta

from engine.campaigns import ConfirmRequest
from engine.model import (
    Acknowledged,
    Action,
    CallResult,
    CallResultKind,
    FeedbackEvent,
    MessageRead,
    Outcome,
    OutcomeKind,
    VisitDone,
)
from simulator.traffic import ActorSpec

FEEDBACK = 0
CONFIRM = 1
_UNPACK = struct.Struct("<4I").unpack
_SCALE = 1.0 / 2**32


class Draws:
    """Three uniforms in (0, 1) and one standard normal, from a keyed hash of ``key``."""

    __slots__ = ("normal", "u1", "u2")

    def __init__(self, secret: bytes, key: str) -> None:
        a, b, c, d = _UNPACK(hashlib.blake2b(key.encode(), digest_size=16, key=secret).digest())
        self.u1 = (a + 0.5) * _SCALE
        self.u2 = (b + 0.5) * _SCALE
        # Box-Muller from the other two words.
        self.normal = math.sqrt(-2.0 * math.log((c + 0.5) * _SCALE)) * math.cos(
            2.0 * math.pi * (d + 0.5) * _SCALE
        )


class Actors:
    """Reactions to actions, queued by due time. ``officer_load`` maps officer keys to their
    contacts relative to the mean (1.0 for officers without contacts)."""

    def __init__(
        self,
        spec: ActorSpec,
        seed: int,
        officer_load: dict[str, float],
        wall: datetime,
    ) -> None:
        self.spec = spec
        self.secret = hashlib.blake2b(str(seed).encode(), digest_size=16).digest()
        self.load = officer_load
        self.wall = wall
        self.queue: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._reached: set[str] = set()
        self._ended: set[str] = set()
        self.broadcasts: list[Action] = []
        self.late = 0

    def _draw(self, key: str) -> Draws:
        return Draws(self.secret, key)

    def _push(self, at: float, what: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self.queue, (at, self._seq, what, payload))

    @property
    def next_due(self) -> float:
        return self.queue[0][0] if self.queue else math.inf

    def due(self, now: float) -> tuple[list[FeedbackEvent], list[str]]:
        """Pop everything due at ``now``: engine feedback, and task ids to confirm."""
        feedback: list[FeedbackEvent] = []
        confirms: list[str] = []
        q = self.queue
        while q and q[0][0] <= now:
            _, _, what, payload = heapq.heappop(q)
            if what == FEEDBACK:
                if payload.warning_id in self._ended:  # type: ignore[attr-defined]
                    self.late += 1  # nobody clicks on a warning that has been stood down
                    continue
                feedback.append(payload)  # type: ignore[arg-type]
            else:
                confirms.append(payload)  # type: ignore[arg-type]
        return feedback, confirms

    # --- reactions -----------------------------------------------------------------------

    def _night(self, now: float) -> bool:
        hour = (self.wall + timedelta(seconds=now)).hour
        return hour >= 23 or hour < 7

    def on_actions(self, actions: Iterable[Action], now: float) -> None:
        """React to a batch from the engine's outbox. Broadcasts are collected for the
        replay, which fans them out as urgent campaigns."""
        s = self.spec
        for a in actions:
            wid, kind = a.warning_id, a.action
            if kind == "notify_officer":
                d = self._draw(a.key)
                if d.u1 < s.ack_probability:
                    median = s.ack_median_s[a.level - 1] * self.load.get(a.to, 1.0)
                    if self._night(now):
                        median *= s.night_factor
                    delay = median * math.exp(s.ack_sigma * d.normal)
                    self._push(now + delay, FEEDBACK, Acknowledged(warning_id=wid, officer=a.to))
            elif kind == "call":
                d = self._draw(a.key)
                busy = s.busy_fraud if a.kind == "fraud" else s.busy_other
                result: CallResultKind
                if d.u1 < busy:
                    result, delay = "busy", 5.0
                elif d.u1 < busy + (1 - busy) * s.call_answer:
                    result, delay = "answered", s.call_delay_s * math.exp(0.5 * d.normal)
                else:
                    result, delay = "no_answer", 45.0
                event = CallResult(warning_id=wid, key=a.key, result=result)
                self._push(now + delay, FEEDBACK, event)
                if result == "answered":
                    self._reach(wid, a.kind, now + delay)
            elif kind == "chat":
                d = self._draw(a.key)
                if d.u1 < s.chat_read:
                    at = now + s.chat_read_median_s * math.exp(d.normal)
                    self._push(at, FEEDBACK, MessageRead(warning_id=wid, key=a.key))
                    self._reach(wid, a.kind, at)
            elif kind == "visit":
                d = self._draw(a.key)
                if d.u1 < s.visit_go:
                    at = now + s.visit_median_s * math.exp(0.6 * d.normal)
                    self._push(at, FEEDBACK, VisitDone(warning_id=wid, key=a.key))
                    self._reach(wid, a.kind, at)
            elif kind == "broadcast":
                self.broadcasts.append(a)
                # Area warnings have no resident to reach: the area is dealt with, then closed.
                d = self._draw(a.key)
                self._reach(wid, a.kind, now + 3 * s.outcome_median_s * math.exp(0.8 * d.normal))
            elif kind == "stand_down":
                self._ended.add(wid)

    def _reach(self, wid: str, kind: str, at: float) -> None:
        """The resident is reached at ``at``: schedule the outcome once per warning."""
        if wid in self._reached:
            return
        self._reached.add(wid)
        s = self.spec
        d = self._draw(f"{wid}/outcome")
        if d.u1 >= s.outcome_report:
            return
        u = d.u2
        outcome: OutcomeKind
        if kind == "fraud":
            dissuaded, defrauded, _ = s.fraud_outcomes
            total = sum(s.fraud_outcomes)
            outcome = (
                "dissuaded"
                if u < dissuaded / total
                else "defrauded"
                if u < (dissuaded + defrauded) / total
                else "false_alarm"
            )
        else:
            outcome = "false_alarm" if u < s.other_false_alarm else "resolved"
        delay = s.outcome_median_s * math.exp(0.8 * d.normal)
        self._push(at + delay, FEEDBACK, Outcome(warning_id=wid, outcome=outcome))

    def on_campaign(self, actions: Iterable[object], now: float) -> None:
        """Officers confirm routine send tasks (most do, after a while)."""
        s = self.spec
        for a in actions:
            if isinstance(a, ConfirmRequest):
                d = self._draw(f"confirm/{a.task_id}")
                if d.u1 < s.confirm_probability:
                    delay = s.confirm_median_s * math.exp(d.normal)
                    self._push(now + delay, CONFIRM, a.task_id)
