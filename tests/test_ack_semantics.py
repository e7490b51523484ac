"""What an acknowledgement does, exactly (issue 14, item 2), and the on-call failure modes other
systems' users reported, each as a test.

The semantics:

- An ack stops the **officer** ladder only. The contact ladder goes on: the resident must still
  be reached (an officer taking the warning does not pick up the resident's phone).
- Who may ack is decided at the door (:func:`engine.access.policy.may_act`: the centre, the
  station's chief, an officer asked to act); the machine takes any ack it is given.
- A second ack changes nothing: the first stands with its deadline, and it is counted in
  ``ignored``.
- With an ack timeout (``ack_timeout_s`` per kind or per level), an ack with no outcome by the
  deadline re-opens the officer ladder: the first time at the acked rung, after that one rung
  up. An ended warning has no deadlines, so nothing re-opens after the end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from engine import durability
from engine.durability import Accepted, Fed
from engine.machine import TICK, Intake, WarningState, step
from engine.model import (
    Acknowledged,
    Action,
    Outcome,
    ResidentTarget,
    Responders,
    WarningInstruction,
)
from engine.rules.escalation import EscalationRules, load_escalation

RULES = load_escalation()
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
E0 = T0.timestamp()
FULL = Responders(
    county_centre="cc",
    grid_officer="grid-1",
    duty_officer="duty-1",
    chief="chief-1",
    visitors=("nb-1",),
    resident=7,
)
DAY = 86400.0


def with_ack_timeout(rules: EscalationRules, kind: str, seconds: float) -> EscalationRules:
    kp = rules.kinds[kind]
    levels = tuple(msgspec.structs.replace(p, ack_timeout_s=seconds) for p in kp.levels)
    kinds = {**rules.kinds, kind: msgspec.structs.replace(kp, levels=levels)}
    return msgspec.structs.replace(rules, kinds=kinds)


def warning(level: int = 1, hours: float = 24.0, **kw: object) -> WarningInstruction:
    return WarningInstruction(
        id="w1",
        kind="fraud",
        level=level,
        target=ResidentTarget(7),
        issued_at=T0,
        expires=T0 + timedelta(hours=hours),
        **kw,  # type: ignore[arg-type]
    )


def start(rules: EscalationRules = RULES, **kw: object) -> WarningState:
    w = warning(**kw)  # type: ignore[arg-type]
    s, _, _ = step(None, Intake(w, FULL, w.expires.timestamp()), E0, rules)
    assert s is not None
    return s


def run_until(
    s: WarningState, until: float, rules: EscalationRules = RULES
) -> tuple[WarningState, list[tuple[float, Action]]]:
    """Tick the warning at each of its deadlines up to ``until``; every action with its time."""
    out: list[tuple[float, Action]] = []
    while s.next_deadline is not None and s.next_deadline <= until:
        at = s.next_deadline
        new, actions, _ = step(s, TICK, at, rules)
        assert new is not None
        s = new
        out += [(at, a) for a in actions]
    return s, out


def ack(
    s: WarningState, at: float, who: str = "grid-1", rules: EscalationRules = RULES
) -> WarningState:
    new, actions, _ = step(s, Acknowledged(warning_id="w1", officer=who), at, rules)
    assert new is not None and actions == ()
    return new


# --- what an ack stops --------------------------------------------------------------------


def test_an_ack_stops_the_officer_ladder_and_not_the_contact_ladder() -> None:
    s = ack(start(), E0 + 30)
    assert s.officer.status == "done" and s.acked_by == "grid-1"
    assert s.contact.status == "running"
    s, sent = run_until(s, E0 + 3 * 3600)
    kinds = {a.action for _, a in sent}
    assert "notify_officer" not in kinds
    assert {"call", "chat", "visit"} & kinds, "the resident must still be reached"


def test_a_second_ack_changes_nothing_but_the_ignored_count() -> None:
    rules = with_ack_timeout(RULES, "fraud", 1800)
    s = ack(start(rules), E0 + 30, rules=rules)
    again, actions, deadline = step(
        s, Acknowledged(warning_id="w1", officer="duty-1"), E0 + 60, rules
    )
    assert actions == ()
    assert again is not None and again.acked_by == "grid-1"
    assert again.officer == s.officer, "the first ack's deadline stands"
    assert again.ignored == s.ignored + 1 and deadline == s.next_deadline


def test_an_ack_on_an_exhausted_officer_ladder_is_taken() -> None:
    s, _ = run_until(start(), E0 + 3600)
    assert s.officer.status == "exhausted"
    s = ack(s, E0 + 3600, who="cc")
    assert s.officer.status == "done" and s.acked_by == "cc"


# --- the ack timeout ----------------------------------------------------------------------


def test_without_an_ack_timeout_an_ack_stands_until_the_end() -> None:
    s = ack(start(hours=24 * 120), E0 + 30)
    assert s.officer.deadline == float("inf")


def test_an_ack_timeout_reopens_at_the_same_rung_then_one_up() -> None:
    rules = with_ack_timeout(RULES, "fraud", 1800)
    s = ack(start(rules), E0 + 30, rules=rules)
    assert s.officer.deadline == E0 + 30 + 1800
    s, sent = run_until(s, E0 + 1830, rules)
    officers = [(at, a) for at, a in sent if a.action == "notify_officer"]
    assert [(at, a.to, a.step, a.cause) for at, a in officers] == [
        (E0 + 1830, "grid-1", 0, "ack_timeout")
    ]
    assert s.officer.status == "running" and s.reopened == 0b1
    # acked again at the same rung, and again no outcome: now one rung up
    s = ack(s, E0 + 1900, rules=rules)
    s, sent = run_until(s, E0 + 1900 + 1800, rules)
    officers = [a for _, a in sent if a.action == "notify_officer"]
    assert [(a.to, a.step) for a in officers] == [("duty-1", 1)]
    keys = {a.key for _, a in sent}
    assert len(keys) == len(sent), "every re-opened notice has a new key"


def test_the_ack_timeout_is_per_kind_in_the_rules_file(tmp_path: Path) -> None:
    text = (Path(RULES.source)).read_text()
    text = text.replace(
        '[kinds.fraud]\ntargets = ["resident", "phone"]',
        '[kinds.fraud]\ntargets = ["resident", "phone"]\nack_timeout_s = 900',
    )
    text = text.replace(
        'levels.4 = { officers = "low", contact = "chat_only" }',
        'levels.4 = { officers = "low", contact = "chat_only", ack_timeout_s = 86400 }',
        1,
    )
    (tmp_path / "escalation.toml").write_text(text)
    rules = load_escalation(tmp_path / "escalation.toml")
    assert [p.ack_timeout_s for p in rules.kinds["fraud"].levels] == [900, 900, 900, 86400]
    assert all(p.ack_timeout_s is None for p in rules.kinds["help_request"].levels)


def test_an_outcome_before_the_ack_timeout_ends_it_for_good() -> None:
    rules = with_ack_timeout(RULES, "fraud", 1800)
    s = ack(start(rules), E0 + 30, rules=rules)
    s, _, deadline = step(s, Outcome(warning_id="w1", outcome="dissuaded"), E0 + 600, rules)
    assert s is not None and deadline is None
    assert s.officer.deadline == float("inf")
    s, sent = run_until(s, E0 + 365 * DAY, rules)
    assert sent == []


# --- failure modes from Grafana OnCall's tracker --------------------------------------------


def test_oncall_4654_an_ack_before_the_repeat_stops_the_pending_repeat() -> None:
    """grafana/oncall#4654: a user acked within the wait step and still got the remaining
    notifications of the chain. Here the grid officer's rung repeats after 120 s; an ack at
    30 s must cancel that repeat and every later rung."""
    s = start()
    assert s.officer.deadline == E0 + 120
    s = ack(s, E0 + 30)
    s, sent = run_until(s, E0 + 30 * DAY)
    assert not [a for _, a in sent if a.action == "notify_officer"]


def test_oncall_4760_paging_more_people_after_an_ack_does_not_page_the_acker_again() -> None:
    """grafana/oncall#4760: after a direct page was acked, the user kept being notified. Here
    the two ways more people get involved after an ack (an update that raises the level, and
    another warning about the same resident joining the incident) tell the acker once, as an
    ``inform``, and never restart the officer ladder."""
    from engine.machine import Link

    s = ack(start(level=2), E0 + 30)
    raised = warning(level=1, msg_type="update")
    s2, actions, _ = step(s, Intake(raised, FULL, raised.expires.timestamp()), E0 + 60, RULES)
    assert s2 is not None
    assert [(a.action, a.to) for a in actions if a.action in ("notify_officer", "inform")] == [
        ("inform", "grid-1")
    ]
    other = msgspec.structs.replace(warning(level=1), id="w2")
    s3, actions, _ = step(s2, Link(Intake(other, FULL, other.expires.timestamp())), E0 + 90, RULES)
    assert s3 is not None and s3.sources == ("w2",)
    assert [(a.action, a.to) for a in actions] == [("inform", "grid-1")]
    _, sent = run_until(s3, E0 + 2 * DAY)
    assert not [a for _, a in sent if a.action == "notify_officer"]


@pytest.mark.parametrize("timeout", [None, 1800.0])
def test_oncall_3111_an_old_acknowledged_warning_never_escalates_months_later(
    timeout: float | None,
) -> None:
    """grafana/oncall#3111: an alert acked in June paged someone in October. Here a warning
    that lives 120 days, acked on day one, is replayed from its journal after a restart and
    ticked for 120 days: without an ack timeout nothing is ever sent again; with one, the
    re-opens are bounded (two per rung) and all come within hours of the ack, none after."""
    rules = RULES if timeout is None else with_ack_timeout(RULES, "fraud", timeout)
    w = warning(hours=24 * 120)
    responders = FULL
    records = [
        durability.encode(Accepted(E0, w, responders)),
        durability.encode(Fed(E0 + 30, Acknowledged(warning_id="w1", officer="grid-1"))),
    ]
    rebuilt = durability.rebuild(None, records, rules)  # a restart, months of history later
    s = rebuilt.states["w1"]
    rungs = len(rules.policy("fraud", 1).officers)
    sent: list[tuple[float, Action]] = []
    for _ in range(10_000):  # every notice is acked at once, and nobody reports an outcome
        deadline = s.next_deadline
        if deadline is None or deadline >= s.expires_at:
            break
        new, actions, _ = step(s, TICK, deadline, rules)
        assert new is not None
        s = new
        sent += [(deadline, a) for a in actions]
        if any(a.action == "notify_officer" for a in actions):
            s = ack(s, deadline, rules=rules)
    officers = [(t, a) for t, a in sent if a.action == "notify_officer"]
    if timeout is None:
        assert officers == []
    else:
        assert 0 < len(officers) <= 2 * rungs
        assert max(t for t, _ in officers) <= E0 + 2 * rungs * (timeout + 600)
    assert all(t < s.expires_at for t, _ in sent)
