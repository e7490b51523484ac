"""Example-based tests of the pure warning state machine (engine/machine.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.machine import (
    MAX_CLOCK_SKEW_S,
    TICK,
    Intake,
    WarningState,
    step,
    validate_arrival,
    validate_warning,
)
from engine.model import (
    Acknowledged,
    Action,
    AreaTarget,
    CallResult,
    InvalidWarning,
    MessageRead,
    Outcome,
    PhoneTarget,
    ResidentTarget,
    Responders,
    VisitDone,
    WarningInstruction,
    decode_warning,
    mask_phone,
)
from engine.rules.escalation import load_escalation

RULES = load_escalation()
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
FULL = Responders(
    county_centre="cc",
    grid_officer="grid-1",
    duty_officer="duty-1",
    chief="chief-1",
    visitors=("neighbour-1", "cadre-1"),
    resident=7,
)
PHONE = "13800005678"
DAY = 86400


def warning(
    wid: str = "w1",
    kind: str = "fraud",
    level: int = 1,
    target: object = None,
    msg_type: str = "alert",
    hours: float = 2,
) -> WarningInstruction:
    return WarningInstruction(
        id=wid,
        kind=kind,
        level=level,
        target=target if target is not None else ResidentTarget(7),  # type: ignore[arg-type]
        issued_at=T0,
        expires=T0 + timedelta(hours=hours),
        msg_type=msg_type,  # type: ignore[arg-type]
    )


def intake(w: WarningInstruction, responders: Responders = FULL) -> Intake:
    expires_at = (w.expires - T0).total_seconds()
    return Intake(w, responders, expires_at)


def run_until(state: WarningState, until: float) -> tuple[WarningState, list[tuple[float, Action]]]:
    """Drive the machine like the scheduler does: tick at each deadline up to ``until``."""
    out: list[tuple[float, Action]] = []
    while state.next_deadline is not None and state.next_deadline <= until:
        now = state.next_deadline
        state, actions, _ = step(state, TICK, now, RULES)  # type: ignore[assignment]
        out.extend((now, a) for a in actions)
    return state, out


def start(w: WarningInstruction | None = None, responders: Responders = FULL) -> WarningState:
    s, _, _ = step(None, intake(w or warning(), responders), 0.0, RULES)
    assert s is not None
    return s


def officer_notifies(actions: list[tuple[float, Action]]) -> list[tuple[float, str]]:
    return [(t, a.to) for t, a in actions if a.action == "notify_officer"]


def test_first_alert_notifies_grid_officer_and_calls_resident() -> None:
    s, actions, deadline = step(None, intake(warning()), 0.0, RULES)
    assert [(a.action, a.to, a.key) for a in actions] == [
        ("notify_officer", "grid-1", "w1/0/o0/1"),
        ("call", "resident:7", "w1/0/c0/1"),
    ]
    assert deadline == 60.0  # the call waits 60 s, the grid officer 120 s
    assert s is not None and s.status == "active"


def test_level1_fraud_officer_ladder_fires_exactly_at_configured_deadlines() -> None:
    s, actions = run_until(start(), 3000.0)
    # grid 120 s -> duty 120 s -> chief 300 s -> county 600 s, repeated twice
    assert officer_notifies(actions) == [
        (120.0, "duty-1"),
        (240.0, "chief-1"),
        (540.0, "cc"),
        (1140.0, "cc"),
        (1740.0, "cc"),
    ]
    assert s.officer.status == "exhausted"
    assert s.status == "active"  # still waiting for an ack, an outcome or expiry


def test_contact_ladder_call_then_chat_then_visits_rotate_visitors() -> None:
    _, actions = run_until(start(), 5000.0)
    contact = [(t, a.action, a.to) for t, a in actions if a.action in ("call", "chat", "visit")]
    assert contact == [
        (60.0, "call", "resident:7"),
        (120.0, "chat", "resident:7"),
        (420.0, "visit", "neighbour-1"),
        (2220.0, "visit", "cadre-1"),
    ]
    reports = [(t, a.to) for t, a in actions if a.action == "report"]
    assert reports == [(4020.0, "cc")]  # unreachable, told to the officer now on the ladder


def test_ack_stops_officer_escalation_but_contact_goes_on() -> None:
    s, _ = run_until(start(), 130.0)  # duty officer notified at 120
    s, actions, _ = step(s, Acknowledged(warning_id="w1", officer="duty-1"), 130.0, RULES)
    assert actions == ()
    assert s is not None and s.officer.status == "done" and s.acked_by == "duty-1"
    s, later = run_until(s, 7000.0)
    assert officer_notifies(later) == []
    assert any(a.action == "visit" for _, a in later)


def test_busy_call_moves_on_at_once_and_stale_results_are_ignored() -> None:
    s = start()
    first_key = s.contact.key
    s, actions, _ = step(s, CallResult(warning_id="w1", result="busy", key=first_key), 10.0, RULES)
    assert [(a.action, a.attempt) for a in actions] == [("call", 2)]  # repeats = 1
    assert s is not None and s.contact.deadline == 70.0
    # a second result for the first call must not skip the second call
    stale, actions, _ = step(
        s, CallResult(warning_id="w1", result="busy", key=first_key), 11.0, RULES
    )
    assert actions == () and stale is not None and stale.contact == s.contact and stale.ignored == 1
    s, actions, _ = step(s, CallResult(warning_id="w1", result="no_answer"), 12.0, RULES)
    assert [a.action for a in actions] == ["chat"]
    assert s is not None and s.contact.deadline == 12.0 + 300


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (CallResult(warning_id="w1", result="answered"), "call answered"),
        (MessageRead(warning_id="w1"), "message read"),
        (VisitDone(warning_id="w1", visitor="neighbour-1"), "visit done"),
    ],
)
def test_reaching_the_resident_stops_the_contact_ladder(event: object, why: str) -> None:
    s, _, _ = step(start(), event, 5.0, RULES)  # type: ignore[arg-type]
    assert s is not None and s.contact.status == "done"
    assert s.timeline[-1].reason == why
    s, later = run_until(s, 7000.0)
    assert [a for _, a in later if a.action in ("call", "chat", "visit")] == []
    assert s.outcome is None  # reached, but nobody reported how it ended


def test_outcome_closes_and_stands_down_everyone_notified() -> None:
    s, _ = run_until(start(), 500.0)  # grid, duty, chief notified; visit to neighbour-1 at 420
    s, actions, deadline = step(s, Outcome(warning_id="w1", outcome="dissuaded"), 501.0, RULES)
    assert deadline is None and s is not None and s.status == "closed"
    assert s.outcome == "dissuaded"
    assert {a.to for a in actions if a.action == "stand_down"} == {
        "grid-1",
        "duty-1",
        "chief-1",
        "neighbour-1",
    }
    again, actions, deadline = step(s, TICK, 10_000.0, RULES)
    assert (again, actions, deadline) == (s, (), None)


def test_duplicate_alert_is_idempotent() -> None:
    s = start()
    again, actions, deadline = step(s, intake(warning()), 30.0, RULES)
    assert actions == ()
    assert again is not None and deadline == s.next_deadline
    assert msgspec.structs.replace(again, duplicates=0) == s


def test_update_raising_level_replans_with_new_keys() -> None:
    s = start(warning(level=3))
    assert s.officer.deadline == 1800.0
    s, actions, _ = step(s, intake(warning(level=1, msg_type="update")), 100.0, RULES)
    assert s is not None and s.plan_level == 1 and s.revision == 1
    notify = [a for a in actions if a.action == "notify_officer"]
    assert [(a.to, a.key, a.level) for a in notify] == [("grid-1", "w1/1/o0/1", 1)]
    assert s.officer.deadline == 100.0 + 120  # re-planned from the update, level-1 deadline
    assert s.timeline[-3].reason == "update raised the level: re-plan"


def test_update_after_ack_informs_and_never_escalates() -> None:
    s = start(warning(level=2))
    s, _, _ = step(s, Acknowledged(warning_id="w1", officer="grid-1"), 10.0, RULES)
    s, actions, _ = step(s, intake(warning(level=1, msg_type="update")), 20.0, RULES)
    assert [(a.action, a.to) for a in actions if a.action != "call"] == [("inform", "grid-1")]
    assert s is not None
    s, later = run_until(s, 7000.0)
    assert officer_notifies(later) == []


def test_update_lowering_level_keeps_running_ladders() -> None:
    s = start(warning(level=1))
    s, actions, _ = step(s, intake(warning(level=4, msg_type="update")), 10.0, RULES)
    assert actions == ()
    assert s is not None and s.warning.level == 4 and s.plan_level == 1
    assert s.officer.deadline == 120.0


def test_update_that_changes_the_kind_is_rejected() -> None:
    s = start()
    new, actions, _ = step(s, intake(warning(kind="help_request", msg_type="update")), 10.0, RULES)
    assert actions == () and new is not None and new.warning.kind == "fraud"
    assert "rejected" in new.timeline[-1].reason


def test_cancel_ends_it_and_a_cancel_before_the_alert_blocks_the_alert() -> None:
    s, _ = run_until(start(), 130.0)
    s, actions, deadline = step(s, intake(warning(msg_type="cancel")), 131.0, RULES)
    assert deadline is None and s is not None and s.status == "cancelled"
    assert {a.to for a in actions if a.action == "stand_down"} == {"grid-1", "duty-1"}

    tomb, actions, deadline = step(None, intake(warning(msg_type="cancel")), 0.0, RULES)
    assert tomb is not None and tomb.status == "cancelled" and actions == () and deadline is None
    late, actions, deadline = step(tomb, intake(warning()), 1.0, RULES)
    assert late is not None and late.status == "cancelled" and actions == () and deadline is None


def test_unknown_phone_goes_to_county_and_says_why_without_the_number() -> None:
    unknown = Responders(county_centre="cc", unresolved="phone ***5678 not in the directory")
    s, actions, _ = step(None, intake(warning(target=PhoneTarget(PHONE)), unknown), 0.0, RULES)
    assert s is not None
    assert [(a.action, a.to) for a in actions] == [
        ("notify_officer", "cc"),
        ("call", f"phone:{PHONE}"),  # the adapter needs the number; the timeline must not have it
    ]
    reasons = [t.reason for t in s.timeline]
    assert "grid_officer unknown for this target (phone ***5678 not in the directory)" in reasons
    s, _ = run_until(s, 10_000.0)
    text = msgspec.json.encode(s.timeline).decode()
    assert PHONE not in text and mask_phone(PHONE) in text
    assert "no chat possible for this target" in text


def test_expiry_records_unreachable_and_reports_for_level_1() -> None:
    s, actions = run_until(start(), 7200.0)
    assert s.status == "expired" and s.outcome == "unreachable"
    assert (7200.0, "report", "cc") in [(t, a.action, a.to) for t, a in actions]


def test_expiry_after_reaching_the_resident_has_no_invented_outcome() -> None:
    s, _, _ = step(start(warning(level=3)), MessageRead(warning_id="w1"), 1.0, RULES)
    assert s is not None
    s, actions = run_until(s, 7200.0)
    assert s.status == "expired" and s.outcome is None
    assert not any(a.action == "report" for _, a in actions if a.key.endswith("/expired"))


def test_chat_only_ladder_closes_as_unreachable_when_exhausted() -> None:
    s = start(warning(level=4, hours=48))
    s, _ = run_until(s, 86400.0)
    assert s.status == "closed" and s.outcome == "unreachable"


def test_already_expired_on_arrival() -> None:
    w = warning()
    s, actions, deadline = step(None, Intake(w, FULL, 10.0), 20.0, RULES)
    assert s is not None and s.status == "expired" and actions == () and deadline is None


def test_road_hazard_broadcasts_to_the_area_and_has_no_contact_ladder() -> None:
    area = Responders(county_centre="cc", grid_officer="officer-9")
    w = warning(kind="road_hazard", level=2, target=AreaTarget("grid-9"))
    s, actions, _ = step(None, intake(w, area), 0.0, RULES)
    assert [(a.action, a.to) for a in actions] == [
        ("broadcast", "grid-9"),
        ("notify_officer", "officer-9"),
    ]
    assert s is not None and s.contact.status == "off"


def test_feedback_for_an_unknown_warning_returns_none() -> None:
    assert step(None, MessageRead(warning_id="nope"), 0.0, RULES) == (None, (), None)


def test_step_is_deterministic() -> None:
    s = start()
    ev = CallResult(warning_id="w1", result="busy")
    assert step(s, ev, 3.0, RULES) == step(s, ev, 3.0, RULES)
    assert step(s, TICK, 60.0, RULES) == step(s, TICK, 60.0, RULES)


def test_tick_before_deadline_changes_nothing() -> None:
    s = start()
    again, actions, deadline = step(s, TICK, 59.999, RULES)
    assert again == s and actions == () and deadline == 60.0


def test_validate_warning_names_the_field() -> None:
    with pytest.raises(InvalidWarning) as err:
        validate_warning(warning(kind="earthquake"), RULES)
    assert err.value.field == "kind" and "fraud" in err.value.expected
    with pytest.raises(InvalidWarning) as err:
        validate_warning(warning(kind="road_hazard", target=PhoneTarget("13800001234")), RULES)
    assert err.value.field == "target" and "area" in err.value.expected
    with pytest.raises(InvalidWarning) as err:  # a struct built in Python skips msgspec's checks
        validate_warning(warning(level=0), RULES)
    assert err.value.field == "level"
    with pytest.raises(InvalidWarning) as err:
        validate_warning(warning(wid="a/1"), RULES)
    assert err.value.field == "id" and "'/'" in err.value.expected


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"level": 0}, "level"),
        ({"level": 5}, "level"),
        ({"kind": "Fraud!"}, "kind"),
        ({"target": {"type": "phone", "phone": "call me"}}, "target.phone"),
        ({"target": {"type": "planet", "id": 1}}, "target.type"),
        ({"expires": "2026-03-01T07:00:00Z"}, "expires"),
        ({"issued_at": "2026-03-01T08:00:00"}, "issued_at"),
        ({"msg_type": "retract"}, "msg_type"),
        ({"id": ""}, "id"),
        ({"id": "w/1"}, "id"),  # '/' would make idempotency keys ambiguous
        ({"colour": "red"}, "(message)"),  # an unknown field's name is withheld: see below
    ],
)
def test_decode_warning_names_the_bad_field(patch: dict[str, object], field: str) -> None:
    good = {
        "id": "w1",
        "kind": "fraud",
        "level": 1,
        "target": {"type": "resident", "id": 7},
        "issued_at": "2026-03-01T08:00:00Z",
        "expires": "2026-03-01T10:00:00Z",
    }
    assert decode_warning(msgspec.json.encode(good)).level == 1
    with pytest.raises(InvalidWarning) as err:
        decode_warning(msgspec.json.encode({**good, **patch}))
    assert err.value.field == field
    for value in patch.values():  # the reason never repeats what was sent (it reaches logs)
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(err.value)
    assert "colour" not in str(err.value)


def test_phone_never_shown_in_repr() -> None:
    assert PHONE not in repr(PhoneTarget(PHONE))
    assert PHONE not in repr(warning(target=PhoneTarget(PHONE)))
    unknown = Responders(county_centre="cc")
    _, actions, _ = step(None, intake(warning(target=PhoneTarget(PHONE)), unknown), 0.0, RULES)
    call = next(a for a in actions if a.action == "call")
    assert call.to == f"phone:{PHONE}" and PHONE not in repr(call) and "5678" in repr(call)


@given(
    issued=st.integers(-2 * DAY, 2 * DAY),  # whole seconds: the boundaries are exact
    life=st.integers(1, 3 * DAY),
    msg_type=st.sampled_from(["alert", "update", "cancel"]),
)
def test_arrival_rejects_exactly_what_could_never_be_acted_on(
    issued: int, life: int, msg_type: str
) -> None:
    """Relative to the engine's clock: rejected iff issued too far ahead, or (not a cancel)
    already expired; the error names the field that is wrong."""
    now = T0.timestamp()
    w = msgspec.structs.replace(
        warning(msg_type=msg_type),
        issued_at=T0 + timedelta(seconds=issued),
        expires=T0 + timedelta(seconds=issued + life),
    )
    ahead = issued > MAX_CLOCK_SKEW_S
    expired = msg_type != "cancel" and issued + life <= 0
    if not (ahead or expired):
        validate_arrival(w, now)
        return
    with pytest.raises(InvalidWarning) as err:
        validate_arrival(w, now)
    assert err.value.field == ("issued_at" if ahead else "expires")


def test_every_action_and_line_carries_the_cause_code_reads() -> None:
    """Timeouts are ``repeat`` then ``escalation``; a busy call is ``feedback``; the end says
    whether it was an outcome, a cancel or the expiry. Statistics read these, not the prose."""
    s, first, _ = step(None, intake(warning(hours=48)), 0.0, RULES)
    assert s is not None and {a.cause for a in first} == {"new"}
    assert {t.cause for t in s.timeline} == {"new"}
    rung = RULES.policy("fraud", 1).officers[0]
    s, out = run_until(s, rung.ack_within_s * (rung.repeats + 1) + 1)
    officer = [a for _, a in out if a.action == "notify_officer"]
    assert [a.cause for a in officer][: rung.repeats + 1] == ["repeat"] * rung.repeats + [
        "escalation"
    ]
    call = next(a for _, a in out if a.action in ("call", "chat")) if out else None
    s2, busy, _ = step(s, CallResult(warning_id="w1", result="busy"), 1.0, RULES)
    assert s2 is not None and all(a.cause == "feedback" for a in busy)
    for event, cause in (
        (Outcome(warning_id="w1", outcome="dissuaded"), "outcome"),
        (Intake(warning(msg_type="cancel", hours=48), FULL, 48 * 3600.0), "cancel"),
    ):
        ended, actions, _ = step(s, event, 2.0, RULES)
        assert ended is not None and ended.timeline[-1].cause == cause
        assert actions and all(a.cause == cause for a in actions if a.action == "stand_down")
    expired, actions, _ = step(s, TICK, 48 * 3600.0, RULES)
    assert expired is not None and expired.status == "expired"
    assert {a.cause for a in actions} == {"expiry"} and call is not None
