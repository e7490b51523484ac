"""Property tests of the pure machine: a hypothesis RuleBasedStateMachine drives several warnings
with random alerts, updates, cancels, feedback and the passage of time, the way the scheduler
would, and checks the invariants the issue asks for after every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.machine import TICK, Event, Intake, WarningState, step
from engine.model import (
    Acknowledged,
    Action,
    AreaTarget,
    CallResult,
    MessageRead,
    Outcome,
    PhoneTarget,
    ResidentTarget,
    Responders,
    VisitDone,
    WarningInstruction,
)
from engine.rules.escalation import load_escalation
from tests.props import examples

RULES = load_escalation()
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PHONE = "13912348765"
IDS = ("w0", "w1", "w2", "w3")
TARGETS = {
    "resident": ResidentTarget(7),
    "phone": PhoneTarget(PHONE),
    "area": AreaTarget("grid-3"),
}
RESPONDERS = (
    Responders(
        county_centre="cc",
        grid_officer="grid-1",
        duty_officer="duty-1",
        chief="chief-1",
        visitors=("nb-1", "nb-2"),
        resident=7,
    ),
    Responders(county_centre="cc", duty_officer="duty-1", resident=7),  # no grid officer
    Responders(county_centre="cc", unresolved="not in the directory"),  # unknown target
)
KIND_TARGETS = [(k, t) for k, p in sorted(RULES.kinds.items()) for t in sorted(p.targets)]
ESCALATING = {"notify_officer", "call", "chat", "visit"}


class MachineModel(RuleBasedStateMachine):
    """Several warnings at once, one clock, every action ever emitted remembered."""

    @initialize()
    def setup(self) -> None:
        self.now = 0.0
        self.states: dict[str, WarningState] = {}
        self.keys: set[str] = set()
        self.identities: set[tuple[object, ...]] = set()
        self.acked: set[str] = set()

    # --- driving ------------------------------------------------------------------------

    def apply(self, wid: str, event: Event) -> tuple[WarningState | None, tuple[Action, ...]]:
        old = self.states.get(wid)
        new, actions, deadline = step(old, event, self.now, RULES)
        # deterministic: the same call gives the same answer
        assert step(old, event, self.now, RULES) == (new, actions, deadline)
        if new is None:
            assert old is None and actions == ()
            return None, ()
        assert deadline == new.next_deadline
        if old is not None and old.status != "active":
            assert actions == (), "an ended warning must stay silent"
        for a in actions:
            assert a.warning_id == wid and a.key.startswith(f"{wid}/")
            assert a.key not in self.keys, f"key emitted twice: {a.key}"
            self.keys.add(a.key)
            identity = (wid, new.revision, a.action, a.to, a.step, a.attempt)
            assert identity not in self.identities, f"same action emitted again: {a}"
            self.identities.add(identity)
            if wid in self.acked:
                assert a.action != "notify_officer", "an acknowledged warning escalated"
        if isinstance(event, Acknowledged) and old is not None and old.status == "active":
            self.acked.add(wid)
        self.states[wid] = new
        return new, actions

    @rule(
        wid=st.sampled_from(IDS),
        kind_target=st.sampled_from(KIND_TARGETS),
        level=st.integers(1, 4),
        responders=st.sampled_from(RESPONDERS),
        msg_type=st.sampled_from(["alert", "alert", "update", "cancel"]),
        hours=st.sampled_from([0.5, 2.0, 30.0]),
    )
    def intake(
        self,
        wid: str,
        kind_target: tuple[str, str],
        level: int,
        responders: Responders,
        msg_type: str,
        hours: float,
    ) -> None:
        kind, ttype = kind_target
        old = self.states.get(wid)
        if old is not None:  # updates keep kind and target (changing them is tested elsewhere)
            kind, target = old.warning.kind, old.warning.target
        else:
            target = TARGETS[ttype]
        w = WarningInstruction(
            id=wid,
            kind=kind,
            level=level,
            target=target,
            issued_at=T0,
            expires=T0 + timedelta(hours=hours),
            msg_type=msg_type,  # type: ignore[arg-type]
        )
        expires_at = self.now + hours * 3600
        new, actions = self.apply(wid, Intake(w, responders, expires_at))
        assert new is not None
        if old is not None and msg_type == "alert":
            assert actions == () and new.duplicates == old.duplicates + 1
        if old is not None and old.status == "active" and msg_type == "cancel":
            assert new.status == "cancelled" and new.next_deadline is None
        if old is not None and old.status == "active" and msg_type == "update":
            if level < old.plan_level:
                assert new.revision == old.revision + 1 and new.plan_level == level
            else:
                assert new.plan_level == old.plan_level

    @precondition(lambda self: bool(self.states))
    @rule(data=st.data())
    def feedback(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.states)))
        old = self.states[wid]
        key = data.draw(st.sampled_from([None, old.contact.key, "stale-key"]))
        event = data.draw(
            st.sampled_from(
                [
                    Acknowledged(warning_id=wid, officer="duty-1", key=key),
                    CallResult(warning_id=wid, result="answered", key=key),
                    CallResult(warning_id=wid, result="busy", key=key),
                    CallResult(warning_id=wid, result="no_answer", key=key),
                    MessageRead(warning_id=wid, key=key),
                    VisitDone(warning_id=wid, key=key),
                    Outcome(warning_id=wid, outcome="dissuaded"),
                    Outcome(warning_id=wid, outcome="false_alarm"),
                ]
            )
        )
        new, actions = self.apply(wid, event)
        assert new is not None
        if old.status == "active":
            assert not any(a.action == "notify_officer" for a in actions), (
                "feedback never escalates the officer ladder"
            )
            if isinstance(event, Outcome):
                assert new.status == "closed" and new.outcome == event.outcome
            if isinstance(event, Acknowledged):
                assert new.officer.status == "done"

    @rule(dt=st.sampled_from([0.001, 1.0, 59.0, 60.0, 119.999, 120.0, 600.0, 3600.0, 20000.0]))
    def advance(self, dt: float) -> None:
        """Move the clock, ticking each warning exactly at its deadlines, in time order."""
        until = self.now + dt
        for _ in range(10_000):
            due = [
                (s.next_deadline, wid)
                for wid, s in self.states.items()
                if s.next_deadline is not None and s.next_deadline <= until
            ]
            if not due:
                break
            at, wid = min(due)
            assert at >= self.now, "a deadline was missed"
            self.now = at
            old = self.states[wid]
            new, actions = self.apply(wid, TICK)
            assert new is not None
            self.check_no_early_escalation(old, new, actions)
        else:
            raise AssertionError("deadlines do not advance")
        self.now = until

    @precondition(lambda self: bool(self.states))
    @rule(data=st.data(), before=st.sampled_from([1e-6, 0.5, 1.0, 30.0, 1e9]))
    def spurious_tick(self, data: st.DataObject, before: float) -> None:
        """A tick before any deadline (a stale heap entry, say) must change nothing."""
        wid = data.draw(st.sampled_from(sorted(self.states)))
        old = self.states[wid]
        if old.next_deadline is None:
            return
        at = max(self.now, old.next_deadline - before)
        if at >= old.next_deadline:
            return
        new, actions, deadline = step(old, TICK, at, RULES)
        assert (new, actions, deadline) == (old, (), old.next_deadline)

    def check_no_early_escalation(
        self, old: WarningState, new: WarningState, actions: tuple[Action, ...]
    ) -> None:
        if new.status != "active":
            assert self.now >= old.expires_at or new.outcome == "unreachable"
            return
        if new.officer != old.officer:
            assert old.officer.deadline <= self.now, "officer escalated before its deadline"
        if new.contact != old.contact:
            assert old.contact.deadline <= self.now, "contact moved before its deadline"
        if any(a.action in ESCALATING for a in actions):
            assert min(old.officer.deadline, old.contact.deadline) <= self.now

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def ended_or_pending(self) -> None:
        for s in self.states.values():
            if s.status == "active":
                assert s.next_deadline is not None and s.next_deadline > self.now
                assert s.next_deadline <= s.expires_at
            else:
                assert s.next_deadline is None
            if s.status == "closed":
                assert s.outcome is not None

    @invariant()
    def acked_never_escalates(self) -> None:
        for wid in self.acked:
            s = self.states[wid]
            assert s.officer.status == "done" and s.officer.deadline == float("inf")

    @invariant()
    def timeline_is_ordered_and_masks_phones(self) -> None:
        for s in self.states.values():
            times = [t.at for t in s.timeline]
            assert times == sorted(times)
            assert PHONE not in msgspec.json.encode(s.timeline).decode()


MachineModel.TestCase.settings = settings(
    max_examples=examples(300),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMachineModel = MachineModel.TestCase
