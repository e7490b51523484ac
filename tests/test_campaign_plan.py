"""Pure campaign planning, the ledger, the policy file and the pacing bucket: no trio here.

The state machine plans random campaigns over random small registries, then sends or drops
parts of them as time passes, and checks every decision against a plain-Python model: each
audience resident is sent once, capped or a duplicate, with the model's reason; nobody outside
the audience is planned; officers' tasks hold only their own contacts; caps hold throughout.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.campaigns.campaign import (
    Campaign,
    CampaignExpired,
    EmptyAudience,
    InvalidAudience,
    InvalidCampaign,
    Plan,
    Reason,
    decode_campaign,
)
from engine.campaigns.ledger import Ledger
from engine.campaigns.pacing import TokenBucket
from engine.campaigns.planning import apply_plan, plan_campaign
from engine.campaigns.policy import CampaignPolicy, QuietHours, load_campaign_policy
from engine.registry.registry import UnknownNameError
from engine.rules.loading import RuleError, default_rules_dir
from tests.props import examples
from tests.small_county import model_eval
from tests.test_campaign_support import (
    BASE,
    POLICY,
    ROWS,
    CapModel,
    assert_caps_hold,
    build,
    campaigns,
    wall,
)


def new_ledger(policy: CampaignPolicy = POLICY) -> Ledger:
    return Ledger(policy.cap_window_s, policy.routine_cap, policy.category_caps)


def check_plan(plan: Plan, expected_ids: set[int], officer_of: np.ndarray) -> None:
    """Structural promises of every plan."""
    assert plan.ids.tolist() == sorted(expected_ids)
    chat = plan.ids[plan.reason == Reason.CHAT]
    in_tasks = np.concatenate([t.ids for t in plan.tasks]) if plan.tasks else np.zeros(0, int)
    assert sorted(in_tasks.tolist()) == chat.tolist()  # each chat resident in exactly one task
    assert len({t.officer for t in plan.tasks}) == len(plan.tasks)
    for t in plan.tasks:
        assert t.count > 0
        assert np.all(np.diff(t.ids) > 0)
        assert np.array_equal(plan.ids[t.pos], t.ids)
        assert np.all(officer_of[t.ids] == t.officer_index)  # only the officer's own contacts
        assert t.id == f"{plan.campaign.id}/{t.officer}"
    assert plan.sms_ids.tolist() == plan.ids[plan.reason == Reason.SMS].tolist()
    assert np.all(officer_of[plan.sms_ids] == -1)


class Campaigns(RuleBasedStateMachine):
    """Any sequence of campaigns, sends, drops and waiting keeps every promise of planning."""

    @initialize(rows=ROWS)
    def setup(self, rows: list) -> None:
        self.reg, self.people = build(rows)
        self.ledger = new_ledger()
        self.model = CapModel(POLICY)
        self.now = 0
        self.serial = 0
        self.open: list[tuple[Campaign, list[int]]] = []  # campaign, residents not yet settled

    @rule(spec=campaigns())
    def issue(self, spec: tuple) -> None:
        campaign, tree = spec
        self.serial += 1
        campaign = msgspec_replace(campaign, id=f"c{self.serial}")
        expected = model_eval(tree, self.people)
        try:
            plan = plan_campaign(
                campaign, self.reg, self.ledger, POLICY, now=self.now, wall_now=wall(self.now)
            )
        except EmptyAudience:
            assert not expected
            return
        except CampaignExpired:  # routine, issued so late that quiet hours outlast expiry: never
            raise
        check_plan(plan, expected, self.reg.officer)
        for rid, reason in zip(plan.ids.tolist(), plan.reason.tolist(), strict=True):
            has_officer = self.people[rid].officer is not None
            assert reason == self.model.expected(campaign, rid, has_officer, self.now), rid
        apply_plan(plan, self.ledger)
        self.model.reserve(campaign, plan.sendable())
        self.open.append((campaign, plan.sendable().tolist()))

    def _pick(self, data: st.DataObject) -> tuple[Campaign, list[int], list[int]]:
        i = data.draw(st.integers(0, len(self.open) - 1))
        campaign, left = self.open[i]
        if not left or data.draw(st.booleans()):
            chosen = set(left)  # the common case: the whole campaign goes (or is dropped)
        else:
            chosen = data.draw(st.sets(st.sampled_from(left)))
        self.open[i] = (campaign, [r for r in left if r not in chosen])
        return campaign, left, sorted(chosen)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        campaign, _, chosen = self._pick(data)
        cat = campaign.category if campaign.priority == "routine" else None
        self.ledger.commit(np.array(chosen, dtype=np.int64), cat, self.now)
        for rid in chosen:
            self.model.commit(campaign, rid, self.now)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        campaign, _, chosen = self._pick(data)
        cat = campaign.category if campaign.priority == "routine" else None
        self.ledger.release(np.array(chosen, dtype=np.int64), campaign.content_key, cat)
        for rid in chosen:
            self.model.release(campaign, rid)

    @rule(seconds=st.sampled_from([1, 3600, 86400, 7 * 86400 - 1, 7 * 86400]))
    def wait(self, seconds: int) -> None:
        # Whole windows and a second either side: where an off-by-one in the caps would show.
        self.now += seconds

    @invariant()
    def caps_hold(self) -> None:
        if hasattr(self, "model"):
            assert_caps_hold(self.model.sent, POLICY)


def msgspec_replace(c: Campaign, **changes: object) -> Campaign:
    import msgspec

    return msgspec.structs.replace(c, **changes)


# Quiet hours would defer and never cap differently, but they make "now" matter for expiry;
# the machine's clock starts at 10:00 and the routine expiry is 3 days, so nothing expires.
TestCampaigns = Campaigns.TestCase
TestCampaigns.settings = settings(max_examples=examples(100), stateful_step_count=30, deadline=None)


# --- bad input -------------------------------------------------------------------------------


def campaign(**kw: object) -> Campaign:
    base = dict(
        id="c1", title="提醒", text="谨防诈骗", audience="elderly", priority="routine", issuer="a"
    )
    base.update(kw)
    return Campaign(**base)  # type: ignore[arg-type]


@pytest.fixture
def county():
    rows = [("01-11", True, frozenset({"elderly"})), ("02-11", False, frozenset({"elderly"}))]
    rows += [("01-21", True, frozenset({"student"}))]
    return build(rows)[0]


def plan_at(reg, c: Campaign, now: float = 0.0, ledger: Ledger | None = None) -> Plan:
    return plan_campaign(c, reg, ledger or new_ledger(), POLICY, now=now, wall_now=wall(now))


def test_unknown_tag_is_named_with_suggestions(county) -> None:
    with pytest.raises(InvalidAudience) as info:
        plan_at(county, campaign(audience="eldery & student"))
    assert isinstance(info.value.cause, UnknownNameError)
    assert "'eldery'" in info.value.detail and "elderly" in info.value.detail
    # The reason a service stores and logs names our suggestion, never what was typed.
    assert "eldery" not in str(info.value) and "elderly" in str(info.value)
    assert str(info.value) == "audience: unknown tag; did you mean elderly? at position 0"


def test_syntax_error_has_position(county) -> None:
    with pytest.raises(InvalidAudience, match="position"):
        plan_at(county, campaign(audience="elderly & (student"))


def test_empty_audience_is_refused(county) -> None:
    with pytest.raises(EmptyAudience, match="matches no resident"):
        plan_at(county, campaign(audience="veteran"))


def test_expired_campaign_is_refused(county) -> None:
    with pytest.raises(CampaignExpired):
        plan_at(county, campaign(expires_at=BASE - timedelta(minutes=1)))
    # Issued at 22:00 local, expiring at 23:00: routine content could only go at 07:30.
    with pytest.raises(CampaignExpired, match="quiet hours"):
        plan_at(county, campaign(expires_at=BASE + timedelta(hours=13)), now=12 * 3600)


def test_unknown_category_is_refused(county) -> None:
    with pytest.raises(InvalidCampaign, match="category"):
        plan_at(county, campaign(category="astrology"))


def test_bad_campaign_json_names_the_field() -> None:
    with pytest.raises(InvalidCampaign) as info:
        decode_campaign(
            b'{"id":"c 1","title":"t","text":"x","audience":"a","priority":"routine","issuer":"i"}'
        )
    assert info.value.field == "id"
    with pytest.raises(InvalidCampaign) as info:
        decode_campaign(
            b'{"id":"c1","title":"t","text":"x","audience":"a","priority":"soon","issuer":"i"}'
        )
    assert info.value.field == "priority"
    with pytest.raises(InvalidCampaign, match="expires_at"):
        decode_campaign(
            b'{"id":"c1","title":"t","text":"x","audience":"a","priority":"urgent","issuer":"i",'
            b'"starts_at":"2026-03-02T10:00:00+08:00","expires_at":"2026-03-02T09:00:00+08:00"}'
        )


def test_planning_changes_nothing(county) -> None:
    ledger = new_ledger()
    before = ledger.total.times.copy()
    plan = plan_at(county, campaign(), ledger=ledger)
    assert np.array_equal(ledger.total.times[: before.shape[0]], before)
    assert not ledger.contents
    apply_plan(plan, ledger)
    assert ledger.has_content(plan.content_key, plan.ids).all()


# --- quiet hours, grouping, growth -----------------------------------------------------------


def test_routine_is_deferred_out_of_quiet_hours_urgent_is_not(county) -> None:
    at_2200 = 12 * 3600.0
    routine = plan_at(county, campaign(), now=at_2200)
    assert routine.deferred
    assert wall(routine.not_before).strftime("%d %H:%M") == "03 07:30"
    urgent = plan_at(county, campaign(priority="urgent"), now=at_2200)
    assert not urgent.deferred and urgent.not_before == at_2200
    day = plan_at(county, campaign(), now=0.0)
    assert not day.deferred and day.not_before == 0.0


def test_start_time_in_quiet_hours_is_deferred_too(county) -> None:
    plan = plan_at(county, campaign(starts_at=BASE + timedelta(hours=13)))  # 23:00
    assert plan.start == 13 * 3600 and wall(plan.not_before).strftime("%H:%M") == "07:30"


def test_groups_by_officer_and_sms_for_the_rest(county) -> None:
    plan = plan_at(county, campaign(audience="elderly | student"))
    assert [(t.officer, t.ids.tolist()) for t in plan.tasks] == [("P01", [0]), ("P02", [2])]
    assert plan.sms_ids.tolist() == [1]


def test_ledger_grows_with_the_registry() -> None:
    ledger = new_ledger()
    ids = np.array([5, 70_000], dtype=np.int64)
    assert not ledger.capped(ids, "antifraud", 0.0)[0].any()
    ledger.reserve(ids, "k", "antifraud", 0.0)
    total, cat = ledger.capped(ids, "antifraud", 0.0)
    assert cat.all() and not total.any()  # antifraud cap 1, total cap 2
    ledger.commit(ids, "antifraud", 10.0)
    assert ledger.capped(ids, "antifraud", 10.0 + POLICY.cap_window_s)[1].all()
    assert not ledger.capped(ids, "antifraud", 11.0 + POLICY.cap_window_s)[1].any()
    assert ledger.has_content("k", np.array([70_000, 200_000])).tolist() == [True, False]


# --- policy file -----------------------------------------------------------------------------


def test_shipped_policy_is_the_documented_default() -> None:
    assert load_campaign_policy() == CampaignPolicy()


SHIPPED = (default_rules_dir() / "campaigns.toml").read_text()


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("window_days = 7", "window_days = -1", "caps.window_days", "> 0"),
        ("antifraud = 2", "antifraud = 5", "caps.category.antifraud", "routine_per_window"),
        ("antidrug = 1", "astrology = 1", "caps.category.astrology", "listed categories"),
        ('start = "21:30"', 'start = "9pm"', "quiet_hours.start", "HH:MM"),
        ("officer_burst = 10", "officer_burst = 0", "pacing.officer_burst", ">= 1"),
        ("officer_burst = 10", 'officer_burst = "10"', "pacing.officer_burst", "int"),
        ("sms_burst = 200", "sms_burst = 200\nsms_brust = 3", "pacing.sms_brust", "unknown"),
        ("routine_hours = 72\n", "", "expiry.routine_hours", "missing"),
        ("version = 1", "version = 2", "version", "1"),
    ],
)
def test_bad_policy_names_file_key_and_expectation(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    assert old in SHIPPED
    path = tmp_path / "campaigns.toml"
    path.write_text(SHIPPED.replace(old, new, 1))
    with pytest.raises(RuleError) as info:
        load_campaign_policy(path)
    assert info.value.file == str(path)
    assert info.value.key == key
    assert expected in info.value.expected


@pytest.mark.parametrize(
    ("local", "left"),
    [("21:29", 0), ("21:30", 10 * 3600), ("00:00", 7.5 * 3600), ("07:29", 60), ("07:30", 0)],
)
def test_quiet_hours_wrap_midnight(local: str, left: float) -> None:
    h, m = map(int, local.split(":"))
    assert QuietHours().remaining(BASE.replace(hour=h, minute=m)) == left


def test_no_quiet_hours_when_start_equals_end() -> None:
    assert QuietHours(600, 600).remaining(BASE) == 0


# --- pacing ----------------------------------------------------------------------------------


@settings(max_examples=examples(200), deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 1 / 3, 20.0]),
    burst=st.integers(1, 10),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=80),
)
def test_bucket_never_exceeds_rate_plus_burst(rate: float, burst: int, gaps: list[float]) -> None:
    bucket, now, times = TokenBucket(rate, burst), 0.0, []
    for gap in gaps:
        now += gap
        at = bucket.reserve(now)
        assert at >= now
        times.append(at)
    assert times == sorted(times)
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6
