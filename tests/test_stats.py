"""engine.stats: hand-computed examples, and properties against numpy on the raw samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.campaigns import Campaign, ChatSend, ConfirmRequest, SmsSend
from engine.model import (
    Acknowledged,
    Action,
    AreaTarget,
    CallResult,
    Outcome,
    ResidentTarget,
    WarningInstruction,
)
from engine.stats import Stats, group_percentiles
from tests.props import examples

T = datetime(2026, 11, 1, tzinfo=UTC)


def make_stats() -> Stats:
    return Stats(
        officers=["P1", "P2"],
        officer_station=[0, 1],
        stations=["s0", "s1"],
        grids=["g0", "g1", "g2"],
        resident_grid=np.array([0, 0, 1, 2]),
        contacts=np.array([2, 1]),
    )


def warning(wid: str, kind: str, level: int, target: object) -> WarningInstruction:
    return WarningInstruction(
        id=wid,
        kind=kind,
        level=level,
        target=target,  # type: ignore[arg-type]
        issued_at=T,
        expires=T + timedelta(hours=4),
    )


def act(
    wid: str,
    action: str,
    to: str,
    step: int = 0,
    attempt: int = 1,
    reason: str = "",
    cause: str = "new",
) -> Action:
    return Action(
        key=f"{wid}/0/{action}{step}/{attempt}",
        warning_id=wid,
        action=action,  # type: ignore[arg-type]
        to=to,
        kind="fraud",
        level=1,
        step=step,
        attempt=attempt,
        reason=reason,
        cause=cause,  # type: ignore[arg-type]
    )


def chat_send(officer: str, rid: int, campaign: str, priority: str) -> ChatSend:
    return ChatSend(
        key=f"k{rid}",
        campaign_id=campaign,
        task_id="t",
        officer=officer,
        to=f"resident:{rid}",
        priority=priority,  # type: ignore[arg-type]
        title="t",
        text="x",
    )


def feed_example(s: Stats) -> None:
    s.observe_warning(warning("w1", "fraud", 1, ResidentTarget(id=0)), 0.0)
    s.observe_actions([act("w1", "notify_officer", "P1"), act("w1", "call", "resident:0")], 0.0)
    s.observe_feedback(CallResult(warning_id="w1", result="busy"), 30.0)
    s.observe_actions(
        [act("w1", "call", "resident:0", attempt=2, reason="call busy: repeat", cause="feedback")],
        30,
    )
    s.observe_feedback(CallResult(warning_id="w1", result="answered"), 80.0)
    why = "no ack within 120 s: escalate"
    s.observe_actions(
        [act("w1", "notify_officer", "P2", step=1, reason=why, cause="escalation")], 120.0
    )
    s.observe_feedback(Acknowledged(warning_id="w1", officer="P2"), 150.0)
    s.observe_feedback(Outcome(warning_id="w1", outcome="dissuaded"), 300.0)
    s.observe_feedback(Acknowledged(warning_id="w1", officer="P1"), 400.0)  # late: not counted
    s.observe_warning(warning("w2", "road_hazard", 3, AreaTarget(area="g2")), 1000.0)
    s.observe_actions([act("w2", "broadcast", "g2"), act("w2", "notify_officer", "P2")], 1000)
    s.observe_feedback(Acknowledged(warning_id="w2", officer="P2"), 1600.0)
    s.observe_actions([act("w2", "stand_down", "P2", reason="expired", cause="expiry")], 5000)
    s.observe_chat(np.array([0, 0, 1, -1]), np.array([0, 1, 2, 3]), 3600.5)
    c1 = Campaign(
        id="c1",
        title="t",
        text="x",
        audience="all",
        priority="routine",
        issuer="i",
        category="antifraud",
    )
    s.observe_campaign_issued(c1)
    sms = SmsSend(
        key="s", campaign_id="c1", to="resident:3", priority="routine", title="t", text="x"
    )
    confirm = ConfirmRequest(
        key="c", campaign_id="c1", task_id="t", officer="P1", title="t", residents=1
    )
    s.observe_campaign_many(
        [confirm, chat_send("P1", 0, "c1", "routine"), sms, chat_send("P2", 2, "c2", "urgent")],
        7200.0,
    )


def test_hand_computed_example() -> None:
    s = make_stats()
    feed_example(s)
    summary = s.summary()
    p1, p2, county_row = summary.officers
    assert (p1.key, p2.key) == ("P1", "P2")
    assert p1.counters.messages_sent == 3 and p1.counters.chats == 2
    assert p1.counters.campaign_messages == 1 and p1.counters.confirm_requests == 1
    assert p1.counters.warnings == 1 and p1.counters.deadlines_missed == 1
    assert p1.counters.time_to_ack.p50 == 150.0 and p1.counters.time_to_reach.p50 == 80.0
    assert p1.counters.calls == 2 and p1.counters.escalations == 1
    assert p2.counters.warnings_handled == 2 and p2.counters.messages_sent == 2
    assert p2.counters.time_to_ack.p50 == 600.0
    assert county_row.counters.messages_sent == 2 and county_row.counters.sms == 1
    county = summary.county
    assert county.messages_sent == 7 and county.chats == 4 and county.campaign_messages == 3
    assert county.contacts == 3 and county.warnings == 2
    assert county.time_to_ack.n == 2
    assert county.time_to_ack.p50 == pytest.approx(375.0)
    assert county.time_to_ack.p90 == pytest.approx(555.0)
    assert county.time_to_ack.p99 == pytest.approx(595.5)
    assert county.outcomes == {"dissuaded": 1, "expired": 1}
    assert county.escalations == 1 and county.deadlines_missed == 1
    grids = {g.key: g for g in summary.grids}
    assert (grids["g0"].prevention_messages, grids["g0"].antifraud_messages) == (1, 1)
    assert (grids["g2"].prevention_messages, grids["g2"].antifraud_messages) == (1, 1)
    assert grids["g1"].urgent_messages == 1 and grids["g1"].prevention_messages == 0
    assert (grids["g0"].warnings, grids["g0"].fraud_warnings, grids["g2"].warnings) == (1, 1, 1)
    stations = {st.key: st.counters.messages_sent for st in summary.stations}
    assert stations == {"s0": 3, "s1": 2, "county": 2}
    assert summary.messages_per_hour[1:3] == [4, 3]
    assert summary.deadlines_missed_by_level == {"1": 1, "2": 0, "3": 0, "4": 0}
    funnel = {f.label: f.warnings for f in summary.funnel}
    assert funnel["warnings"] == 2 and funnel["escalated to 2nd rung"] == 1
    assert funnel["acknowledged"] == 2 and funnel["resident reached"] == 1
    assert summary.open_warnings == 0
    assert b"NaN" not in msgspec.json.encode(summary)


def test_feedback_for_unknown_warnings_is_not_counted() -> None:
    s = make_stats()
    s.observe_feedback(Acknowledged(warning_id="nope", officer="P1"), 1.0)
    assert s.unknown_feedback == 1
    assert s.summary().county.warnings_handled == 0


@given(
    groups=st.lists(st.integers(0, 5), min_size=0, max_size=60),
    data=st.data(),
)
def test_group_percentiles_match_numpy(groups: list[int], data: st.DataObject) -> None:
    values = data.draw(
        st.lists(st.floats(0, 1e6, allow_nan=False), min_size=len(groups), max_size=len(groups))
    )
    g, v = np.array(groups, dtype=np.int64), np.array(values, dtype=np.float64)
    counts, out = group_percentiles(g, v, 6, (50, 90, 99))
    for k in range(6):
        samples = v[g == k]
        assert counts[k] == samples.size
        if samples.size:
            np.testing.assert_allclose(out[k], np.percentile(samples, [50, 90, 99]), rtol=1e-12)
        else:
            assert np.isnan(out[k]).all()


WARNINGS = st.lists(
    st.tuples(
        st.integers(0, 3),  # first officer notified (3: county centre)
        st.floats(1, 5000),  # ack delay
        st.booleans(),  # acked at all
        st.integers(0, 2),  # timeouts before the ack
        st.integers(0, 5),  # chats of officer 0..2 (bulk)
    ),
    max_size=25,
)


@settings(max_examples=examples(60), deadline=None)
@given(WARNINGS)
def test_officer_counts_sum_to_county_and_percentiles_match(
    warnings: list[tuple[int, float, bool, int, int]],
) -> None:
    keys = ["P0", "P1", "P2"]
    s = Stats(
        officers=keys,
        officer_station=[0, 0, 1],
        stations=["s0", "s1"],
        grids=["g0"],
        resident_grid=np.zeros(10, np.int64),
    )
    acks: dict[int, list[float]] = {}
    for i, (owner, delay, acked, timeouts, chats) in enumerate(warnings):
        wid = f"w{i}"
        who = keys[owner] if owner < 3 else "county_centre"
        s.observe_warning(warning(wid, "fraud", 1, ResidentTarget(id=i % 10)), 10.0 * i)
        s.observe_actions([act(wid, "notify_officer", who)], 10.0 * i)
        for k in range(timeouts):
            nxt = keys[(owner + k + 1) % 3]
            s.observe_actions(
                [act(wid, "notify_officer", nxt, step=k + 1, cause="escalation")],
                10.0 * i + k,
            )
        if acked:
            s.observe_feedback(Acknowledged(warning_id=wid, officer=who), 10.0 * i + delay)
            acks.setdefault(owner, []).append(delay)
        s.observe_chat(np.full(chats, i % 3), np.zeros(chats, np.int64), 10.0 * i)
    summary = s.summary()
    county = summary.county
    for field in ("messages_sent", "chats", "notifications", "warnings_handled", "warnings",
                  "deadlines_missed", "escalations"):  # fmt: skip
        by_officer = sum(getattr(o.counters, field) for o in summary.officers)
        by_station = sum(getattr(st.counters, field) for st in summary.stations)
        assert by_officer == by_station == getattr(county, field), field
    assert county.warnings == len(warnings)
    assert county.deadlines_missed == sum(w[3] for w in warnings)
    for owner, delays in acks.items():
        got = summary.officers[owner].counters.time_to_ack
        want = np.percentile(delays, [50, 90, 99])
        assert got.n == len(delays)
        np.testing.assert_allclose([got.p50, got.p90, got.p99], want, atol=2e-3)
    all_delays = [d for ds in acks.values() for d in ds]
    assert county.time_to_ack.n == len(all_delays)
    if all_delays:
        assert county.time_to_ack.p90 == pytest.approx(np.percentile(all_delays, 90), abs=2e-3)
