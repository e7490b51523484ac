"""The per-warning state machine: pure, deterministic, no I/O and no clock.

``step(state, event, now, rules) -> (new_state, actions, next_deadline)``. The scheduler owns
time and I/O; it calls :func:`step` with an :class:`Intake` (alert, update or cancel, responders
already resolved), a feedback event, or :data:`TICK` when a deadline is due, and sends the actions.

Two tracks run side by side (see ``rules/escalation.toml``): the *officer* ladder (until someone
acknowledges) and the *contact* ladder (until the resident is reached). The warning ends with an
outcome, a cancel, or at expiry. Every change of a track or of the warning is appended to the
timeline; phone numbers never enter it (see :func:`engine.model.describe_target`).
"""

from __future__ import annotations

import math
from typing import Final, Literal

import msgspec

from engine.model import (
    Acknowledged,
    Action,
    AreaTarget,
    CallResult,
    Cause,
    FeedbackEvent,
    InvalidWarning,
    MessageRead,
    Outcome,
    OutcomeKind,
    PhoneTarget,
    Responders,
    VisitDone,
    WarningInstruction,
    describe_target,
    target_type,
)
from engine.privacy import mask_phone
from engine.rules.escalation import EscalationRules
from engine.rules.roster import pick

INF: Final = math.inf

Status = Literal["active", "closed", "cancelled", "expired", "linked"]
"""``linked``: the warning joined another's incident (correlation or inhibition); that one's
ladder works both, and this one ends as that one ends."""
TrackStatus = Literal["off", "running", "done", "exhausted"]
"""``off``: nothing to do (no ladder or nobody to reach); ``done``: acked / resident reached.
An acked officer track keeps a deadline when the rules set an ack timeout (see ``_ack_timeout``)."""


class Track(msgspec.Struct, frozen=True, gc=False):
    """Progress on one ladder. ``key`` is the idempotency key of the action now awaited."""

    status: TrackStatus = "off"
    step: int = 0
    attempt: int = 0
    deadline: float = INF
    key: str = ""
    to: str = ""
    label: str = "off"


OFF: Final = Track()


class Transition(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One audit line: at (engine time: epoch seconds), which track, from, to, why (for people)
    and its cause (for code; last, with a default, so older journals still decode)."""

    at: float
    track: Literal["warning", "officer", "contact"]
    frm: str
    to: str
    reason: str
    cause: Cause = "new"


class WarningState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Everything the machine knows about one warning. ``plan_level`` is the level whose ladders
    are running: lowering a warning's level never slows an escalation already under way."""

    warning: WarningInstruction
    responders: Responders
    expires_at: float
    status: Status = "active"
    plan_level: int = 4
    revision: int = 0
    officer: Track = OFF
    contact: Track = OFF
    notified: tuple[str, ...] = ()
    acked_by: str | None = None
    outcome: OutcomeKind | None = None
    timeline: tuple[Transition, ...] = ()
    duplicates: int = 0
    ignored: int = 0
    ordinal: int = 0
    """The warning's intake number: round robin among officers on duty together."""
    reopened: int = 0
    """Bit ``i`` set: an ack at officer rung ``i`` has already timed out once."""
    sources: tuple[str, ...] = ()
    """Other warnings joined to this one's incident (correlated reports, inhibited pushes)."""
    incident: str | None = None
    """For a ``linked`` warning: the id of the warning whose ladder works it."""
    generation: int = 0
    """The rules generation the warning started under (a reload keeps its ladders for it)."""

    @property
    def next_deadline(self) -> float | None:
        """When the scheduler must next wake this warning; ``None`` once it has ended."""
        if self.status != "active":
            return None
        return min(self.officer.deadline, self.contact.deadline, self.expires_at)


class Intake(msgspec.Struct, frozen=True, gc=False):
    """An alert, update or cancel, with what the shell resolved: who answers for the target and
    the expiry on the engine's clock (epoch seconds); ``ordinal`` numbers intakes (round robin)."""

    warning: WarningInstruction
    responders: Responders
    expires_at: float
    ordinal: int = 0
    generation: int = 0


LinkWhy = Literal["correlated", "inhibited"]


class Link(msgspec.Struct, frozen=True, gc=False):
    """Sent to an incident's first warning: another warning joins it. The most urgent level
    wins (the ladders re-plan as for an update that raises the level)."""

    intake: Intake
    why: LinkWhy = "correlated"


class Joined(msgspec.Struct, frozen=True, gc=False):
    """A new warning that joins the incident of warning ``incident`` instead of its own ladder."""

    intake: Intake
    incident: str
    why: LinkWhy = "correlated"


class IncidentEnded(msgspec.Struct, frozen=True, gc=False):
    """The incident a ``linked`` warning joined has ended: it ends the same way."""

    incident: str
    status: Status
    outcome: OutcomeKind | None = None


class Tick(msgspec.Struct, frozen=True, gc=False):
    """A deadline may be due. Harmless when nothing is: escalation checks ``now`` itself."""


TICK: Final = Tick()

Event = Intake | FeedbackEvent | Tick | Link | Joined | IncidentEnded
StepResult = tuple["WarningState | None", tuple[Action, ...], "float | None"]


def validate_warning(warning: WarningInstruction, rules: EscalationRules) -> None:
    """What msgspec cannot check: the kind must be in the rules and accept this kind of target.

    Also re-checks the level, because a struct built in Python (not decoded) skips msgspec's
    constraints and a level outside 1..4 would otherwise fail deep inside the machine.
    """
    if not (isinstance(warning.level, int) and 1 <= warning.level <= 4):
        raise InvalidWarning("level", "an integer from 1 (most urgent) to 4")
    if not warning.id or not isinstance(warning.id, str) or "/" in warning.id:
        raise InvalidWarning("id", "a non-empty string without '/' (keys are '/'-separated)")
    policy = rules.kinds.get(warning.kind)
    if policy is None:
        known = ", ".join(sorted(rules.kinds))
        raise InvalidWarning("kind", f"a kind defined in the escalation rules ({known})")
    tt = target_type(warning.target)
    if tt not in policy.targets:
        allowed = ", ".join(sorted(policy.targets))
        raise InvalidWarning("target", f"a target of type {allowed} for kind {warning.kind!r}")


MAX_CLOCK_SKEW_S: Final = 300.0
"""How far ``issued_at`` may lie ahead of the engine's clock: the centre's clock and ours may
disagree by a few minutes, but a warning issued an hour from now is a wrong clock or a wrong
date, and accepting it would hide that."""


def validate_arrival(warning: WarningInstruction, now: float) -> None:
    """Reject, at the edge, a warning that could only ever be recorded, never acted on.

    An alert or update whose ``expires`` has passed when it arrives would be accepted and end at
    once with nothing sent, which the warning centre could only find in its timeline. A cancel
    is always taken (it ends what may still be running). ``now`` is the engine's clock (epoch s).
    """
    ahead = warning.issued_at.timestamp() - now
    if ahead > MAX_CLOCK_SKEW_S:
        raise InvalidWarning(
            "issued_at",
            f"a time at most {MAX_CLOCK_SKEW_S:g} s ahead of the engine's clock "
            f"(it is {ahead:,.0f} s ahead: check the sender's clock and date)",
        )
    if warning.msg_type == "cancel":
        return
    late = now - warning.expires.timestamp()
    if late >= 0:
        raise InvalidWarning(
            "expires",
            f"a time still to come when the engine receives the warning (it had passed "
            f"{late:,.0f} s before arrival, so nothing would be sent)",
        )


class _Step:
    """Scratch space for one call of :func:`step`: collects actions and timeline lines."""

    __slots__ = ("actions", "cause", "lines", "now", "policy", "rules", "s")

    def __init__(
        self, s: WarningState, now: float, rules: EscalationRules, cause: Cause = "new"
    ) -> None:
        self.s = s
        self.now = now
        self.rules = rules
        self.policy = rules.policy(s.warning.kind, s.plan_level)
        self.cause: Cause = cause
        """The cause of what this step writes, unless a line or action names its own."""
        self.actions: list[Action] = []
        self.lines: list[Transition] = []

    def line(
        self,
        track: Literal["warning", "officer", "contact"],
        frm: str,
        to: str,
        why: str,
        cause: Cause | None = None,
    ) -> None:
        self.lines.append(Transition(self.now, track, frm, to, why, cause or self.cause))

    def emit(
        self,
        action: str,
        to: str,
        step: int,
        attempt: int,
        key: str,
        reason: str,
        cause: Cause | None = None,
    ) -> Action:
        w = self.s.warning
        exercise = w.status == "exercise"
        if exercise:  # the real ladder, the exercise's people (see engine.model.WarningStatus)
            recipients = self.rules.correlation.exercise.recipients
            real = f"phone {mask_phone(to)}" if to.startswith("phone:") else to
            reason = f"exercise, in place of {real}: {reason}"
            to = recipients[(step + attempt - 1) % len(recipients)]
            if action in ("call", "chat", "visit", "broadcast"):
                action = "inform"  # never a resident's phone, chat or door
        a = Action(
            key=key,
            warning_id=w.id,
            action=action,  # type: ignore[arg-type]
            to=to,
            kind=w.kind,
            level=self.s.plan_level,
            step=step,
            attempt=attempt,
            reason=reason,
            cause=cause or self.cause,
            exercise=exercise,
        )
        self.actions.append(a)
        return a

    def notified(self, who: str) -> None:
        if who not in self.s.notified:
            self.s = msgspec.structs.replace(self.s, notified=(*self.s.notified, who))

    def finish(self) -> StepResult:
        s = self.s
        if self.lines:
            s = msgspec.structs.replace(s, timeline=s.timeline + tuple(self.lines))
        return s, tuple(self.actions), s.next_deadline


# --- officer ladder ---------------------------------------------------------------------------


def _officer_enter(c: _Step, index: int, attempt: int, why: str) -> Track:
    """Notify the first rung at or after ``index`` whose officer is known; skipped rungs are
    written to the timeline with the reason, so "why did the county get this?" has an answer."""
    s, steps = c.s, c.policy.officers
    old = s.officer
    frm = old.label
    while index < len(steps):
        rung = steps[index]
        if c.rules.rosters.rotations:
            who, note = _on_duty(c, rung.role, attempt)
        else:  # no rosters: the registry's answer (the hot path of most engines)
            who, note = s.responders.officer(rung.role), ""
        silence = (
            c.rules.silences.match(
                officer=who,
                role=rung.role,
                station=s.responders.station,
                grid=s.responders.grid,
                kind=s.warning.kind,
                at=c.now,
            )
            if who is not None and c.rules.silences.items
            else None
        )
        if silence is not None:
            c.line(
                "officer", frm, f"{rung.role}:silenced", f"{who} not paged: {silence.describe()}"
            )
            frm = f"{rung.role}:silenced"
            index, attempt = index + 1, 1
            continue
        if who is not None:
            if note:
                why = f"{why} ({note})"
            key = f"{s.warning.id}/{s.revision}/o{index}/{attempt}"
            to = c.emit("notify_officer", who, index, attempt, key, why).to
            c.notified(to)
            label = f"{rung.role}#{attempt}"
            c.line("officer", frm, label, why)
            return Track("running", index, attempt, c.now + rung.ack_within_s, key, to, label)
        unknown = note or s.responders.unresolved or "not in the directory"
        c.line(
            "officer",
            frm,
            f"{rung.role}:skipped",
            f"{rung.role} unknown for this target ({unknown})",
        )
        frm = f"{rung.role}:skipped"
        index, attempt = index + 1, 1
    why = "officer ladder exhausted; waiting for an ack or expiry"
    c.line("officer", frm, "exhausted", why, "exhausted")
    return Track("exhausted", old.step, old.attempt, INF, "", old.to, "exhausted")


def _on_duty(c: _Step, role: str, attempt: int) -> tuple[str | None, str]:
    """Who answers for ``role`` now: the roster's officer on duty when the station has a
    rotation for the role (round robin among those on together), else the registry's; with
    a note for the timeline."""
    r = c.s.responders
    rosters = c.rules.rosters
    on = (
        rosters.on_duty(r.station, role, c.now)
        if r.station is not None and rosters.rotations and role in rosters.roles
        else None
    )
    if on is not None:
        who = pick(on, c.s.ordinal, attempt)
        notes = "; ".join(on.notes)
        if who is None:
            return None, f"nobody on duty at station {r.station}, {on.shift} shift" + (
                f": {notes}" if notes else ""
            )
        return who, f"on duty: {on.shift} shift" + (f"; {notes}" if notes else "")
    return r.officer(role), ""


def _officer_timeout(c: _Step) -> Track:
    t = c.s.officer
    rung = c.policy.officers[t.step]
    why = f"no ack within {rung.ack_within_s:g} s"
    if t.attempt <= rung.repeats:
        c.cause = "repeat"
        return _officer_enter(c, t.step, t.attempt + 1, f"{why}: repeat")
    c.cause = "escalation"
    return _officer_enter(c, t.step + 1, 1, f"{why}: escalate")


def _ack_timeout(c: _Step) -> None:
    """Acknowledged, and no outcome by the deadline (PagerDuty's acknowledgement timeout): the
    officer ladder re-opens. Once per rung: the first time at the acked rung (whoever is on duty
    now), after that one rung up; so an acked warning re-opens at most twice per rung, and never
    once it has ended (ending clears every deadline)."""
    t = c.s.officer
    timeout = c.policy.ack_timeout_s
    bit = 1 << t.step
    again = not c.s.reopened & bit
    index = t.step if again else t.step + 1
    why = f"acknowledged but no outcome within {timeout:g} s: re-open the officer ladder"
    c.cause = "ack_timeout"
    c.s = msgspec.structs.replace(c.s, reopened=c.s.reopened | bit, revision=c.s.revision + 1)
    if index >= len(c.policy.officers):
        c.line("officer", t.label, "exhausted", f"{why}, but no rung is left", "ack_timeout")
        c.s = msgspec.structs.replace(
            c.s, officer=Track("exhausted", t.step, t.attempt, INF, "", t.to, "exhausted")
        )
        return
    c.s = msgspec.structs.replace(c.s, officer=msgspec.structs.replace(t, label="reopened"))
    officer = _officer_enter(c, index, 1, why)
    c.s = msgspec.structs.replace(c.s, officer=officer)


# --- contact ladder ---------------------------------------------------------------------------


def _contact_address(s: WarningState, channel: str, attempt: int) -> str | None:
    """Where a contact rung goes, or None when it cannot be done for this target."""
    r = s.responders
    if channel == "call":
        if r.resident is not None:
            return f"resident:{r.resident}"
        if isinstance(s.warning.target, PhoneTarget):
            return f"phone:{s.warning.target.phone}"
        return None
    if channel == "chat":
        return f"resident:{r.resident}" if r.resident is not None else None
    if r.visitors:
        return r.visitors[(attempt - 1) % len(r.visitors)]
    return None


def _contact_enter(c: _Step, index: int, attempt: int, why: str) -> Track | None:
    """Start a contact rung (skipping impossible ones). None means the warning was closed."""
    s, steps = c.s, c.policy.contact
    old = s.contact
    frm = old.label
    while index < len(steps):
        rung = steps[index]
        to = _contact_address(s, rung.channel, attempt)
        if to is not None:
            key = f"{s.warning.id}/{s.revision}/c{index}/{attempt}"
            sent = c.emit(rung.channel, to, index, attempt, key, why)
            if rung.channel == "visit" or sent.exercise:
                c.notified(sent.to)
            label = f"{rung.channel}#{attempt}"
            c.line("contact", frm, label, why)
            return Track("running", index, attempt, c.now + rung.within_s, key, to, label)
        c.line(
            "contact", frm, f"{rung.channel}:skipped", f"no {rung.channel} possible for this target"
        )
        frm = f"{rung.channel}:skipped"
        index, attempt = index + 1, 1
    if old.status == "off" and not steps:
        return OFF
    c.line(
        "contact", frm, "exhausted", "resident not reached: contact ladder exhausted", "exhausted"
    )
    if c.policy.contact_when_exhausted == "close":
        _end(c, "closed", "unreachable", "contact ladder exhausted; rules say close", "exhausted")
        return None
    officer = s.officer
    to = officer.to if officer.to else s.responders.county_centre
    key = f"{s.warning.id}/{s.revision}/unreachable"
    why = "resident unreachable: contact ladder exhausted"
    c.emit("report", to, index, 1, key, why, "exhausted")
    return Track("exhausted", old.step, old.attempt, INF, "", "", "exhausted")


def _contact_timeout(c: _Step, why: str, *, by_feedback: bool = False) -> Track | None:
    """No answer in time (or a busy / unanswered call reported): the same rung or the next."""
    t = c.s.contact
    rung = c.policy.contact[t.step]
    if t.attempt <= rung.repeats:
        c.cause = "feedback" if by_feedback else "repeat"
        return _contact_enter(c, t.step, t.attempt + 1, f"{why}: repeat")
    c.cause = "feedback" if by_feedback else "escalation"
    return _contact_enter(c, t.step + 1, 1, f"{why}: next channel")


def _contact_reached(c: _Step, why: str) -> None:
    t = c.s.contact
    c.line("contact", t.label, "reached", why)
    c.s = msgspec.structs.replace(
        c.s, contact=Track("done", t.step, t.attempt, INF, "", "", "reached")
    )


# --- ending -----------------------------------------------------------------------------------


def _end(c: _Step, status: Status, outcome: OutcomeKind | None, why: str, cause: Cause) -> None:
    """Terminal: no more deadlines; everyone asked to act is told to stand down."""
    s = c.s
    c.line("warning", s.status, status, why, cause)
    for who in s.notified:
        c.emit("stand_down", who, 0, 1, f"{s.warning.id}/end/{who}", why, cause)
    c.s = msgspec.structs.replace(
        s,
        status=status,
        outcome=outcome,
        officer=msgspec.structs.replace(s.officer, deadline=INF),
        contact=msgspec.structs.replace(s.contact, deadline=INF),
    )


# --- events -----------------------------------------------------------------------------------


def _start(ev: Intake, now: float, rules: EscalationRules, why: str) -> StepResult:
    w = ev.warning
    s = WarningState(
        warning=w,
        responders=ev.responders,
        expires_at=ev.expires_at,
        plan_level=w.level,
        ordinal=ev.ordinal,
        generation=ev.generation,
    )
    c = _Step(s, now, rules)
    c.line(
        "warning",
        "new",
        "active",
        f"{why}: {w.kind} level {w.level} for {describe_target(w.target)}",
    )
    if ev.expires_at <= now:
        _end(c, "expired", None, "already expired on arrival", "expiry")
        return c.finish()
    if c.policy.broadcast and isinstance(w.target, AreaTarget):
        c.emit("broadcast", w.target.area, 0, 1, f"{w.id}/0/b", "area-wide warning")
    officer = _officer_enter(c, 0, 1, "new warning")  # may add to c.s.notified: assign after
    c.s = msgspec.structs.replace(c.s, officer=officer)
    if c.policy.contact and not isinstance(w.target, AreaTarget):
        contact = _contact_enter(c, 0, 1, "new warning")
        if contact is not None:
            c.s = msgspec.structs.replace(c.s, contact=contact)
    return c.finish()


def _update(s: WarningState, ev: Intake, now: float, rules: EscalationRules) -> StepResult:
    new, old = ev.warning, s.warning
    c = _Step(s, now, rules, "update")
    if new.kind != old.kind or new.target != old.target:
        what = "kind" if new.kind != old.kind else "target"
        c.line("warning", s.status, s.status, f"update rejected: it changes the {what}")
        c.s = msgspec.structs.replace(c.s, ignored=s.ignored + 1)
        return c.finish()
    raised = new.level < s.plan_level
    c.s = s = msgspec.structs.replace(s, warning=new, expires_at=ev.expires_at)
    if not raised:
        if new.level != old.level:
            c.line(
                "warning",
                f"level {old.level}",
                f"level {new.level}",
                f"update to a level not above {s.plan_level}: running ladders are kept",
            )
        else:
            c.line("warning", "active", "active", "update: details or expiry changed")
        if ev.expires_at <= now:
            _end(c, "expired", _expiry_outcome(c.s), "update moved expiry into the past", "expiry")
        return c.finish()
    c.line(
        "warning", f"level {old.level}", f"level {new.level}", "update raised the level: re-plan"
    )
    if ev.expires_at <= now:
        c.s = msgspec.structs.replace(s, plan_level=new.level, revision=s.revision + 1)
        _end(c, "expired", _expiry_outcome(c.s), "update moved expiry into the past", "expiry")
        return c.finish()
    _replan(c, new.level, f"level raised to {new.level}")
    return c.finish()


def _replan(c: _Step, level: int, why: str) -> None:
    """Switch to ``level``'s ladders (more urgent than the running ones) at the same rungs,
    deadlines from now. An ack stands (an acked step never escalates): the acking officer is
    informed instead."""
    s = c.s = msgspec.structs.replace(c.s, plan_level=level, revision=c.s.revision + 1)
    w = s.warning
    c.policy = c.rules.policy(w.kind, level)
    if s.officer.status == "done":
        assert s.acked_by is not None
        c.emit("inform", s.acked_by, s.officer.step, 1, f"{w.id}/{s.revision}/inform", why)
    else:
        index = min(s.officer.step, len(c.policy.officers) - 1)
        officer = _officer_enter(c, index, 1, "level raised")
        c.s = msgspec.structs.replace(c.s, officer=officer)
    # Contact: re-plan from the same rung under the new ladder, unless already reached.
    area = isinstance(w.target, AreaTarget)
    if c.policy.contact and not area and c.s.contact.status in ("running", "off"):
        index = min(c.s.contact.step, len(c.policy.contact) - 1)
        contact = _contact_enter(c, index, 1, "level raised")
        if contact is not None:
            c.s = msgspec.structs.replace(c.s, contact=contact)
    elif not c.policy.contact and c.s.contact.status == "running":
        t = c.s.contact
        c.line("contact", t.label, "off", "the new level has no contact ladder")
        c.s = msgspec.structs.replace(c.s, contact=OFF)


def _expiry_outcome(s: WarningState) -> OutcomeKind | None:
    """At expiry, a resident we tried and never reached is recorded as unreachable."""
    return "unreachable" if s.contact.status in ("running", "exhausted") else None


def _tick(s: WarningState, now: float, rules: EscalationRules) -> StepResult:
    c = _Step(s, now, rules)
    if now >= s.expires_at:
        outcome = _expiry_outcome(s)
        _end(c, "expired", outcome, "expired without an outcome", "expiry")
        c.cause = "expiry"
        if c.policy.at_expiry == "report":
            key = f"{s.warning.id}/expired"
            c.emit(
                "report",
                s.responders.county_centre,
                0,
                1,
                key,
                "warning expired without an outcome",
            )
        return c.finish()
    if s.officer.status == "running" and now >= s.officer.deadline:
        officer = _officer_timeout(c)
        c.s = msgspec.structs.replace(c.s, officer=officer)
    elif s.officer.status == "done" and now >= s.officer.deadline:
        _ack_timeout(c)
    if c.s.contact.status == "running" and now >= c.s.contact.deadline:
        rung = c.policy.contact[c.s.contact.step]
        waited = {"call": "no call result", "chat": "message unread", "visit": "no visit report"}
        contact = _contact_timeout(c, f"{waited[rung.channel]} within {rung.within_s:g} s")
        if contact is not None:
            c.s = msgspec.structs.replace(c.s, contact=contact)
    return c.finish()


def _feedback(s: WarningState, ev: FeedbackEvent, now: float, rules: EscalationRules) -> StepResult:
    if s.status != "active":
        return msgspec.structs.replace(s, ignored=s.ignored + 1), (), None
    c = _Step(s, now, rules, "feedback")
    if isinstance(ev, Outcome):
        _end(c, "closed", ev.outcome, f"outcome reported: {ev.outcome}", "outcome")
    elif isinstance(ev, Acknowledged):
        if s.officer.status == "done":  # a second ack: the first stands, its timeout too
            return msgspec.structs.replace(s, ignored=s.ignored + 1), (), s.next_deadline
        t = s.officer
        timeout = c.policy.ack_timeout_s
        deadline = INF if timeout is None else now + timeout
        why = f"acknowledged by {ev.officer}"
        if timeout is not None:
            why += f"; an outcome is due within {timeout:g} s"
        c.line("officer", t.label, "acked", why)
        c.s = msgspec.structs.replace(
            s,
            acked_by=ev.officer,
            officer=Track("done", t.step, t.attempt, deadline, "", t.to, "acked"),
        )
    elif s.contact.status == "done":
        return msgspec.structs.replace(s, ignored=s.ignored + 1), (), s.next_deadline
    elif isinstance(ev, CallResult):
        t = s.contact
        if ev.result == "answered":
            _contact_reached(c, "call answered")
        elif (
            t.status == "running"
            and c.policy.contact[t.step].channel == "call"
            and (ev.key is None or ev.key == t.key)
        ):
            contact = _contact_timeout(c, f"call {ev.result.replace('_', ' ')}", by_feedback=True)
            if contact is not None:
                c.s = msgspec.structs.replace(c.s, contact=contact)
        else:  # a late result for a call we have already moved past
            return msgspec.structs.replace(s, ignored=s.ignored + 1), (), s.next_deadline
    elif isinstance(ev, MessageRead):
        _contact_reached(c, "message read")
    elif isinstance(ev, VisitDone):
        _contact_reached(c, "visit done")
    return c.finish()


# --- incidents (correlation, inhibition) --------------------------------------------------------


def _link(s: WarningState, ev: Link, now: float, rules: EscalationRules) -> StepResult:
    """Another warning joins this one's incident: linked, the expiry the later of the two, and
    the more urgent level re-plans the ladders; an officer who already acked is told."""
    if s.status != "active":
        return msgspec.structs.replace(s, ignored=s.ignored + 1), (), None
    w = ev.intake.warning
    c = _Step(s, now, rules, "linked")
    joined = "joins this incident" if ev.why == "correlated" else "is covered by this warning"
    c.line(
        "warning",
        s.status,
        s.status,
        f"warning {w.id} ({w.kind} level {w.level}, {describe_target(w.target)}) {joined}",
    )
    sources = s.sources if w.id in s.sources else (*s.sources, w.id)
    c.s = msgspec.structs.replace(
        s, sources=sources, expires_at=max(s.expires_at, ev.intake.expires_at)
    )
    if w.level < s.plan_level:
        _replan(c, w.level, f"linked warning {w.id} raised the level to {w.level}")
    elif s.officer.status == "done" and s.acked_by is not None:
        key = f"{s.warning.id}/{s.revision}/linked/{w.id}"
        c.emit("inform", s.acked_by, s.officer.step, 1, key, f"warning {w.id} {joined}")
    return c.finish()


def _joined(ev: Joined, now: float) -> StepResult:
    """A new warning that another warning's ladder will work: recorded, never laddered. The
    county centre gets one ``report`` saying which incident took it (its key names the
    incident, so statistics fed from the outbox can give it the incident's outcome)."""
    it = ev.intake
    w = it.warning
    how = "correlated with" if ev.why == "correlated" else "inhibited by the area warning"
    report = Action(
        key=f"{w.id}/0/joined/{ev.incident}",
        warning_id=w.id,
        action="report",
        to=it.responders.county_centre,
        kind=w.kind,
        level=w.level,
        reason=f"{how} {ev.incident}, whose ladder works it",
        cause="linked",
    )
    s = WarningState(
        warning=w,
        responders=it.responders,
        expires_at=it.expires_at,
        status="linked",
        plan_level=w.level,
        ordinal=it.ordinal,
        incident=ev.incident,
        timeline=(
            Transition(
                now,
                "warning",
                "new",
                "linked",
                f"{w.kind} level {w.level} for {describe_target(w.target)}: {how} "
                f"{ev.incident}, whose ladder works it",
                "linked",
            ),
        ),
    )
    return s, (report,), None


def _incident_ended(s: WarningState, ev: IncidentEnded, now: float) -> StepResult:
    if s.status != "linked" or s.incident != ev.incident:
        return msgspec.structs.replace(s, ignored=s.ignored + 1), (), s.next_deadline
    why = f"incident {ev.incident} {ev.status}" + (f": {ev.outcome}" if ev.outcome else "")
    line = Transition(now, "warning", "linked", ev.status, why, "linked")
    return (
        msgspec.structs.replace(
            s, status=ev.status, outcome=ev.outcome, timeline=(*s.timeline, line)
        ),
        (),
        None,
    )


def step(
    state: WarningState | None, event: Event, now: float, rules: EscalationRules
) -> StepResult:
    """Advance one warning by one event. Pure: same inputs, same outputs, nothing else touched.

    ``state`` is None for a warning not seen before. Returns the new state (None only when an
    event other than an intake arrives for an unknown warning), the actions to send, and when to
    call again with :data:`TICK` (None once the warning has ended).
    """
    if isinstance(event, Tick):
        if state is None or state.status != "active":
            return state, (), None
        return _tick(state, now, rules)
    if isinstance(event, Link | Joined | IncidentEnded):
        if isinstance(event, Joined):
            if state is not None:
                return msgspec.structs.replace(state, duplicates=state.duplicates + 1), (), None
            return _joined(event, now)
        if state is None:
            return None, (), None
        if isinstance(event, Link):
            return _link(state, event, now, rules)
        return _incident_ended(state, event, now)
    if isinstance(event, Intake):
        w = event.warning
        if state is None:
            if w.msg_type == "cancel":
                s = WarningState(
                    warning=w,
                    responders=event.responders,
                    expires_at=event.expires_at,
                    status="cancelled",
                    plan_level=w.level,
                    ordinal=event.ordinal,
                    timeline=(
                        Transition(
                            now, "warning", "new", "cancelled", "cancel before any alert", "cancel"
                        ),
                    ),
                )
                return s, (), None
            why = (
                "alert" if w.msg_type == "alert" else "update without a prior alert, taken as alert"
            )
            return _start(event, now, rules, why)
        if state.status == "linked" and w.msg_type == "cancel":
            why = f"cancelled by the warning centre (incident {state.incident} goes on)"
            line = Transition(now, "warning", "linked", "cancelled", why, "cancel")
            return (
                msgspec.structs.replace(
                    state, status="cancelled", timeline=(*state.timeline, line)
                ),
                (),
                None,
            )
        if state.status != "active" or w.msg_type == "alert":
            return (
                msgspec.structs.replace(state, duplicates=state.duplicates + 1),
                (),
                state.next_deadline,
            )
        if w.msg_type == "cancel":
            c = _Step(state, now, rules)
            _end(c, "cancelled", None, "cancelled by the warning centre", "cancel")
            return c.finish()
        return _update(state, event, now, rules)
    if state is None:
        return None, (), None
    return _feedback(state, event, now, rules)
