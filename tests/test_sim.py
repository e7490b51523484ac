"""The load simulator: calibration, traffic generation, an end-to-end replay, reports."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import numpy as np
import pytest

from engine.registry.registry import Registry
from engine.registry.synthetic import CountySpec, generate_county
from engine.rules.escalation import load_escalation
from engine.rules.loading import RuleError
from engine.scheduler import Engine
from simulator.replay import SimResult, replay
from simulator.report import write_reports
from simulator.traffic import (
    REPORTED_CHATS,
    REPORTED_MESSAGES,
    Traffic,
    TrafficSpec,
    ack_deadline_rules,
    expected_totals,
    generate_traffic,
    load_traffic_spec,
    parse_duration,
    scaled,
    spec_with,
)


@pytest.fixture(scope="module")
def county() -> Registry:
    return generate_county(
        CountySpec(residents=20_000, contacts=11_500, officers=200, stations=6, villages=60)
    )


def small_spec(days: int = 2) -> TrafficSpec:
    """Per resident ~20x the real warning rate, so two days hold enough warnings to test."""
    spec = scaled(TrafficSpec(days=days, seed=5), 20_000)
    return msgspec.structs.replace(
        spec, warnings_per_day={k: v * 20 for k, v in spec.warnings_per_day.items()}
    )


# --- calibration and the spec -------------------------------------------------------------------


def test_default_spec_reproduces_the_reported_month() -> None:
    e = expected_totals(TrafficSpec())
    assert e.chats == pytest.approx(REPORTED_CHATS, rel=0.01)
    assert e.messages == pytest.approx(REPORTED_MESSAGES, rel=0.02)
    assert min(e.routine, e.urgent, e.broadcasts, e.warning_chats) > 0
    # The routine campaigns carry most of what is not one-to-one chat.
    assert e.routine > 0.6 * (e.messages - e.chats)


def test_expected_totals_follow_the_parameters() -> None:
    base = expected_totals(TrafficSpec())
    double = expected_totals(TrafficSpec(routine_campaigns_per_day=4.0))
    assert double.routine == pytest.approx(2 * base.routine)
    assert expected_totals(TrafficSpec(days=15)).chats == pytest.approx(base.chats / 2)


def test_spec_from_toml_and_errors_name_the_key(tmp_path: Path) -> None:
    good = tmp_path / "t.toml"
    good.write_text("days = 7\n[actors]\nack_probability = 0.5\n")
    spec = load_traffic_spec(good)
    assert spec.days == 7 and spec.actors.ack_probability == 0.5
    assert spec.chats_per_day == TrafficSpec().chats_per_day
    for text, key in (
        ("days = 0\n", "days"),
        ("dayz = 3\n", "dayz"),
        ("[actors]\nack_probability = 2.0\n", "actors.ack_probability"),
        ("[warnings_per_day]\narson = 1.0\n", "warnings_per_day"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(RuleError) as info:
            load_traffic_spec(bad)
        assert key in str(info.value), str(info.value)


def test_spec_with_dotted_changes() -> None:
    spec = spec_with(TrafficSpec(), {"days": 3, "actors.chat_read": 0.1})
    assert (spec.days, spec.actors.chat_read) == (3, 0.1)
    with pytest.raises(RuleError, match=r"actors\.nope"):
        spec_with(TrafficSpec(), {"actors.nope": 1})
    with pytest.raises(RuleError, match="days"):
        spec_with(TrafficSpec(), {"days": -1})


def test_parse_duration() -> None:
    assert parse_duration("5m") == 300 and parse_duration("90") == 90
    assert parse_duration("2h") == 7200 and parse_duration("1.5s") == 1.5
    for bad in ("soon", "0m", "-3s", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_ack_deadline_rules_change_only_the_first_rung() -> None:
    rules = load_escalation()
    changed = ack_deadline_rules(rules, 45.0)
    for kind, kp in rules.kinds.items():
        for old, new in zip(kp.levels, changed.kinds[kind].levels, strict=True):  # type: ignore[attr-defined]
            assert new.officers[0].ack_within_s == 45.0
            assert new.officers[1:] == old.officers[1:] and new.contact == old.contact


# --- traffic -------------------------------------------------------------------------------------


def test_traffic_is_seeded_sorted_and_has_a_daily_rhythm(county: Registry) -> None:
    spec = msgspec.structs.replace(small_spec(days=30), seed=11)
    a, b = generate_traffic(spec, county), generate_traffic(spec, county)
    for field in ("w_time", "w_kind", "w_target", "c_time", "c_resident", "k_time"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert np.all(np.diff(getattr(a, field)) >= 0) or field not in ("w_time", "c_time")
    assert [c.audience for c in a.campaigns] == [c.audience for c in b.campaigns]
    fraud_hour = (a.w_time[a.w_kind == 0] % 86400) // 3600
    evening = np.isin(fraud_hour, [19, 20, 21]).sum()
    small_hours = np.isin(fraud_hour, [2, 3, 4]).sum()
    assert evening > 5 * small_hours
    assert set(np.unique(a.w_kind)) == {0, 1, 2, 3}
    assert set(np.unique(a.w_level)) == {1, 2, 3, 4}
    # Chats go from an officer to one of their own contacts.
    np.testing.assert_array_equal(county.officer[a.c_resident], a.c_officer)
    assert all(c.priority in ("routine", "urgent") for c in a.campaigns)
    other = generate_traffic(msgspec.structs.replace(spec, seed=12), county)
    assert not np.array_equal(other.w_time[:50], a.w_time[:50])


# --- replay --------------------------------------------------------------------------------------


def test_small_county_replays_end_to_end(county: Registry) -> None:
    seen: dict[str, int] = {}

    def inspect(engine: Engine, traffic: Traffic) -> None:
        for i in range(traffic.w_time.size):
            state = engine.status(f"w{i:06d}")
            assert state is not None, i
            seen[state.status] = seen.get(state.status, 0) + 1
        seen["pending"] = engine.pending

    result = replay(county, small_spec(), engine_options={"retain_ended_s": 1e9}, on_finish=inspect)
    s = result.summary
    assert result.wall_s < 20
    assert result.warnings_submitted > 30
    # "linked": joined to an incident still open at the end (correlation is on by default).
    assert set(seen) <= {"active", "linked", "closed", "cancelled", "expired", "pending"}
    assert seen.get("closed", 0) > result.warnings_submitted / 2
    assert seen.get("active", 0) == seen["pending"] == result.pending
    assert result.duty.correlated > 0
    # The recorder, fed only from the engine's edges, agrees with the engine's own states:
    # a joined warning ends with its incident.
    assert s.warnings == result.warnings_submitted
    assert s.open_warnings == result.pending + seen.get("linked", 0)
    ended = sum(s.county.outcomes.values())
    assert ended == result.warnings_submitted - result.pending
    assert s.county.chats > 0 and s.county.campaign_messages > 0
    assert s.county.messages_sent == (
        s.county.chats + s.county.campaign_messages + s.county.warning_chats
    )
    assert result.campaigns_issued > 0 and result.broadcast_campaigns > 0
    assert s.county.time_to_ack.n > 0 and s.county.time_to_ack.p50 is not None
    assert result.events > s.county.messages_sent
    assert s.hours == 48 == len(s.messages_per_hour) == len(s.warnings_per_hour["fraud"])
    # The engine kept its window tags while replaying: residents reached are now tagged.
    assert 0 < county.count("warned_7d") <= result.warnings_submitted
    assert county.count("broadcast_7d") > 0


def test_replay_is_deterministic_with_and_without_the_journal(
    county: Registry, tmp_path: Path
) -> None:
    spec = small_spec(days=1)
    first = replay(county, spec)
    again = replay(county, spec)
    journaled = replay(county, spec, journal_dir=tmp_path / "journal")
    encode = msgspec.json.encode
    assert encode(first.summary) == encode(again.summary) == encode(journaled.summary)
    assert first.events == again.events == journaled.events
    assert sum(f.stat().st_size for f in (tmp_path / "journal").iterdir()) > 10_000


def test_shorter_ack_deadline_misses_more(county: Registry, tmp_path: Path) -> None:
    spec = small_spec()
    base = replay(county, spec)
    tight = replay(county, spec, rules=ack_deadline_rules(load_escalation(), 20.0), label="20s")  # type: ignore[arg-type]
    assert tight.summary.county.deadlines_missed > base.summary.county.deadlines_missed
    assert tight.summary.county.escalations >= base.summary.county.escalations
    # Same traffic and the same campaign draws: only the warnings' handling differs.
    assert tight.summary.county.chats == base.summary.county.chats
    _check_reports([base, tight], tmp_path)


def _check_reports(results: list[SimResult], out: Path) -> None:
    json_path, html_path = write_reports(results, out / "report")
    data = msgspec.json.decode(json_path.read_bytes())
    assert [d["label"] for d in data] == ["baseline", "20s"]
    typed = msgspec.json.decode(json_path.read_bytes(), type=list[SimResult])  # round trip
    assert typed[1].summary == results[1].summary
    assert data[0]["summary"]["county"]["messages_sent"] > 0
    page = html_path.read_text(encoding="utf-8")
    for chart in ("misses", "per-hour", "ack", "funnel", "busiest", "grids"):
        assert f"id='{chart}'><svg" in page, chart
    assert page.count("<svg") == 6
    assert "<script" not in page  # self-contained: nothing to run, nothing to fetch
    assert not re.search(r"""(src|href)=["']https?:""", page)
    for text in (page, json_path.read_text()):  # no phone numbers anywhere
        assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", text)


def test_keyed_draws_are_stable_and_well_spread() -> None:
    from simulator.actors import Draws

    secret = b"0123456789abcdef"
    assert Draws(secret, "w1/0/o0/1").normal == Draws(secret, "w1/0/o0/1").normal
    assert Draws(secret, "w1/0/o0/1").u1 != Draws(b"fedcba9876543210", "w1/0/o0/1").u1
    draws = [Draws(secret, f"w{i}/0/c0/1") for i in range(20_000)]
    u = np.array([d.u1 for d in draws])
    z = np.array([d.normal for d in draws])
    assert u.min() > 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    assert abs(np.corrcoef(u, [d.u2 for d in draws])[0, 1]) < 0.03


def test_fewer_officers_acknowledge_later(county: Registry) -> None:
    """Same residents and traffic, fewer officers: each has more contacts, so is busier."""
    fewer = generate_county(
        CountySpec(residents=20_000, contacts=11_500, officers=100, stations=6, villages=60)
    )
    spec = small_spec(days=3)
    base, busy = replay(county, spec), replay(fewer, spec, label="100 officers")
    assert busy.summary.warnings == base.summary.warnings
    assert busy.summary.county.time_to_ack.p50 > base.summary.county.time_to_ack.p50  # type: ignore[operator]
    assert busy.summary.county.deadlines_missed > base.summary.county.deadlines_missed
