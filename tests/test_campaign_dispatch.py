"""The campaign service under trio's ``autojump_clock``: confirmation, pacing, quiet hours,
cancel and expiry, read receipts, bad input, and a property test over random operations.

Trio time 0 is 10:00 local (``wall``); quiet hours are 21:30-07:30; officers send 1 a second
with bursts of 3 (the test policy in ``test_campaign_support``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import msgspec
import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.campaigns.campaign import (
    Campaign,
    CampaignAction,
    CampaignClosed,
    CampaignExpired,
    ChatSend,
    ConfirmRequest,
    DuplicateCampaign,
    EmptyAudience,
    InvalidAudience,
    InvalidCampaign,
    SmsSend,
    TaskClosed,
    TaskNotYours,
    UnknownCampaign,
    UnknownTask,
)
from engine.campaigns.dispatch import CampaignService
from tests.props import examples
from tests.small_county import model_eval
from tests.test_campaign_support import (
    BASE,
    POLICY,
    ROWS,
    assert_caps_hold,
    build,
    campaigns,
    wall,
)

HOUR = 3600.0


class Outbox:
    """Reads the service's channel (capacity 0: a send completes when it is read here)."""

    def __init__(self) -> None:
        self.items: list[tuple[float, CampaignAction]] = []

    async def run(self, recv: trio.MemoryReceiveChannel[CampaignAction]) -> None:
        async for action in recv:
            self.items.append((trio.current_time(), action))

    def of(self, kind: type) -> list[tuple[float, CampaignAction]]:
        return [(t, a) for t, a in self.items if isinstance(a, kind)]

    def sends(self) -> list[tuple[float, ChatSend | SmsSend]]:
        return [(t, a) for t, a in self.items if isinstance(a, ChatSend | SmsSend)]


@asynccontextmanager
async def running(reg, policy=POLICY) -> AsyncIterator[tuple[CampaignService, Outbox]]:
    send, recv = trio.open_memory_channel[CampaignAction](0)
    out = Outbox()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(out.run, recv)
        async with CampaignService.open(reg, send, policy=policy, wall_clock=wall) as svc:
            yield svc, out
        nursery.cancel_scope.cancel()


def county():
    """P01: 10 contacts (01-11), P02: 5 (01-21), 3 residents without an officer (02-11)."""
    rows = [("01-11", True, frozenset({"elderly"}))] * 10
    rows += [("01-21", True, frozenset({"student"}))] * 5
    rows += [("02-11", False, frozenset({"elderly"}))] * 3
    return build(rows)[0]


def campaign(**kw: object) -> Campaign:
    base = dict(
        id="c1", title="提醒", text="谨防诈骗", audience="all", priority="routine", issuer="admin"
    )
    base.update(kw)
    return Campaign(**base)  # type: ignore[arg-type]


def local(t: float) -> str:
    return wall(t).strftime("%H:%M:%S")


async def test_urgent_goes_at_once_paced_per_officer_account(autojump_clock) -> None:
    async with running(county()) as (svc, out):
        p = await svc.issue(campaign(priority="urgent"))
        assert (p.resolved, p.tasks, p.sms, p.awaiting_confirmation) == (18, 2, 3, 0)
        await trio.sleep(60)
        assert not out.of(ConfirmRequest)
        by_officer = defaultdict(list)
        for t, a in out.of(ChatSend):
            by_officer[a.officer].append(t)
        assert by_officer["P01"] == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]  # burst of 3, then 1/s
        assert by_officer["P02"] == [0, 0, 0, 1, 2]
        assert [t for t, _ in out.of(SmsSend)] == [0, 0, 0]
        p = svc.progress("c1")
        assert (p.state, p.sent, p.pending, p.confirmed_tasks) == ("done", 18, 0, 2)
        keys = [a.key for _, a in out.sends()]
        assert len(set(keys)) == 18 and "campaign/c1/P01/0/1" in keys


async def test_routine_waits_for_each_officer_to_confirm(autojump_clock) -> None:
    async with running(county()) as (svc, out):
        await svc.issue(campaign())
        await trio.sleep(100)
        asks = [a for _, a in out.of(ConfirmRequest)]
        assert sorted((a.officer, a.residents) for a in asks) == [("P01", 10), ("P02", 5)]
        assert not out.of(ChatSend)  # nothing from an officer's account without the click
        assert len(out.of(SmsSend)) == 3  # SMS needs no officer
        p = svc.progress("c1")
        assert (p.awaiting_confirmation, p.confirmed_tasks, p.sent) == (15, 0, 3)
        with pytest.raises(TaskNotYours):
            svc.confirm("c1/P01", officer="P02")
        with pytest.raises(UnknownTask):
            svc.confirm("c1/P09")
        assert svc.confirm("c1/P01", officer="P01")
        assert not svc.confirm("c1/P01")  # a double click is harmless
        await trio.sleep(100)
        assert {a.officer for _, a in out.of(ChatSend)} == {"P01"}
        assert [t for t, _ in out.of(ChatSend)][:4] == [100, 100, 100, 101]
        p = svc.progress("c1")
        assert (p.confirmed_tasks, p.confirmed, p.awaiting_confirmation, p.sent) == (1, 10, 5, 13)
        assert p.state == "running"


async def test_quiet_hours_defer_routine_not_urgent(autojump_clock) -> None:
    async with running(county()) as (svc, out):
        await trio.sleep(12 * HOUR)  # 22:00
        p = await svc.issue(campaign())
        assert p.deferred == 18 and local(p.deferred_until) == "07:30:00"
        assert "deferred by quiet hours until 07:30" in svc.explain("c1", 0).reason
        await svc.issue(campaign(id="alert", priority="urgent", text="山体滑坡，道路封闭"))
        await trio.sleep(60)
        assert {a.campaign_id for _, a in out.items} == {"alert"}  # the alert went at night
        await trio.sleep_until(21.5 * HOUR - 1)  # 07:29:59 next day
        assert not [a for _, a in out.items if a.campaign_id == "c1"]
        await trio.sleep(2)
        routine = [(t, a) for t, a in out.items if a.campaign_id == "c1"]
        assert routine and all(t == 21.5 * HOUR for t, _ in routine)
        assert len(out.of(ConfirmRequest)) == 2  # officers are asked in the morning, not at 22:00
        svc.confirm("c1/P01")
        svc.confirm("c1/P02")
        await trio.sleep(60)
        assert svc.progress("c1").sent == 18


async def test_pacing_stops_at_quiet_hours_and_resumes_in_the_morning(autojump_clock) -> None:
    async with running(county()) as (svc, out):
        await trio.sleep(11.5 * HOUR - 5)  # 21:29:55
        await svc.issue(campaign(audience="officer:P01"))
        svc.confirm("c1/P01")
        await trio.sleep(60)
        before = [local(t) for t, _ in out.of(ChatSend)]
        assert before == ["21:29:55"] * 3 + ["21:29:56", "21:29:57", "21:29:58", "21:29:59"]
        p = svc.progress("c1")
        assert (p.sent, p.deferred, local(p.deferred_until)) == (7, 3, "07:30:00")
        await trio.sleep(10 * HOUR)
        after = [local(t) for t, _ in out.of(ChatSend)][7:]
        assert after == ["07:30:00"] * 3
        assert svc.progress("c1").state == "done"


async def test_cancel_drops_the_rest_and_frees_caps_and_content(autojump_clock) -> None:
    async with running(county()) as (svc, out):
        await svc.issue(campaign())
        svc.confirm("c1/P01")
        await trio.sleep(4.5)  # 3 SMS, and P01's at 0, 0, 0, 1, 2, 3, 4
        p = svc.cancel("c1")
        assert (p.state, p.sent, p.dropped, p.pending) == ("cancelled", 3 + 7, 3 + 5, 0)
        await trio.sleep(60)
        assert len(out.sends()) == 10  # nothing more after the cancel
        closed = sorted((a.officer, a.unsent, a.reason) for _, a in out.of(TaskClosed))
        assert closed == [("P01", 3, "cancelled"), ("P02", 5, "cancelled")]
        assert svc.explain("c1", 9).outcome == "dropped"
        with pytest.raises(CampaignClosed):
            svc.confirm("c1/P02")
        with pytest.raises(UnknownCampaign):
            svc.cancel("nope")
        assert svc.cancel("c1").state == "cancelled"  # idempotent
        # Dropped residents were released: the same content reaches them in a new campaign.
        p2 = await svc.issue(campaign(id="c2", priority="urgent"))
        assert (p2.duplicate, p2.to_send) == (10, 8)


async def test_expiry_drops_unconfirmed_tasks(autojump_clock) -> None:
    async with running(county()) as (svc, out):
        await svc.issue(campaign(expires_at=BASE + timedelta(hours=1)))
        await trio.sleep(2 * HOUR)
        p = svc.progress("c1")
        assert (p.state, p.sent, p.dropped, p.awaiting_confirmation) == ("expired", 3, 15, 0)
        assert {a.reason for _, a in out.of(TaskClosed)} == {"expired"}


async def test_read_receipts_are_counted_once(autojump_clock) -> None:
    async with running(county()) as (svc, _out):
        await svc.issue(campaign(priority="urgent"))
        assert not svc.read("c1", 9)  # not sent yet: burst of 3
        await trio.sleep(30)
        assert svc.read("c1", 9)
        assert not svc.read("c1", 9)
        assert not svc.read("c1", 10_000)
        p = svc.progress("c1")
        assert (p.sent, p.read) == (18, 1)
        assert svc.explain("c1", 9).outcome == "read"
        assert svc.explain("c1", 15).channel == "sms"
        with pytest.raises(UnknownCampaign):
            svc.read("nope", 1)


async def test_same_content_reaches_a_resident_once(autojump_clock) -> None:
    async with running(county()) as (svc, out):
        await svc.issue(campaign(id="a", priority="urgent", audience="elderly"))
        p = await svc.issue(campaign(id="b", priority="urgent", audience="all"))
        assert (p.duplicate, p.to_send) == (13, 5)
        await trio.sleep(60)
        per_resident = Counter(a.to for _, a in out.sends())
        assert len(per_resident) == 18 and set(per_resident.values()) == {1}
        assert svc.explain("b", 0).outcome == "duplicate"


async def test_caps_count_routine_and_ignore_urgent(autojump_clock) -> None:
    async with running(county()) as (svc, _out):
        for i in range(3):
            await svc.issue(campaign(id=f"u{i}", priority="urgent", text=f"警报{i}"))
        p1 = await svc.issue(campaign(id="r1", text="一", category="antifraud"))
        p2 = await svc.issue(campaign(id="r2", text="二", category="antifraud"))
        p3 = await svc.issue(campaign(id="r3", text="三", category="traffic"))
        p4 = await svc.issue(campaign(id="r4", text="四", category="traffic"))
        assert (p1.capped, p2.capped, p3.capped, p4.capped) == (0, 18, 0, 18)
        assert "category" in svc.explain("r2", 0).reason
        assert svc.explain("r4", 0).reason == "routine frequency cap reached"


async def test_bad_input_changes_nothing(autojump_clock) -> None:
    async with running(county()) as (svc, out):
        times = svc.ledger.total.times.copy()
        for bad, error in [
            (campaign(audience="eldery"), InvalidAudience),
            (campaign(audience="veteran"), EmptyAudience),
            (campaign(expires_at=BASE - timedelta(seconds=1)), CampaignExpired),
            (campaign(category="astrology"), InvalidCampaign),
            (b'{"id": "c1"}', InvalidCampaign),
        ]:
            with pytest.raises(error):
                await svc.issue(bad)
        with pytest.raises(UnknownCampaign):
            svc.progress("c1")
        await svc.issue(campaign(priority="urgent"))
        with pytest.raises(DuplicateCampaign):
            await svc.issue(campaign())
        await trio.sleep(60)
        assert len(out.sends()) == 18 and not out.of(ConfirmRequest)
        assert np.array_equal(svc.ledger.total.times[: times.shape[0]], times)


async def test_officer_change_after_planning_is_respected(autojump_clock) -> None:
    reg = county()
    async with running(reg) as (svc, out):
        await svc.issue(campaign(priority="urgent", audience="officer:P01"))
        reg.update_resident(9, officer=None)  # no longer P01's contact: P01 must not message
        reg.remove_resident(8)
        await trio.sleep(60)
        assert {a.to for _, a in out.sends()} == {f"resident:{r}" for r in range(8)}
        assert svc.progress("c1").dropped == 2


# --- property: random registries, campaigns and operations ------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), campaigns()),
        st.tuples(st.just("confirm_all"), st.none()),
        st.tuples(st.just("cancel"), st.integers(0, 9)),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 30.0, HOUR, 12 * HOUR, 3 * 86400.0])),
    ),
    max_size=12,
)


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rows=ROWS, ops=OPS)
async def test_everyone_sent_once_capped_duplicate_or_dropped(autojump_clock, rows, ops) -> None:
    reg, people = build(rows)
    audiences: dict[str, set[int]] = {}
    issued: dict[str, Campaign] = {}
    async with running(reg) as (svc, out):
        for op, arg in ops:
            if op == "issue":
                c, tree = arg
                c = msgspec.structs.replace(c, id=f"c{len(audiences)}")
                audiences[c.id] = model_eval(tree, people)
                try:
                    await svc.issue(c)
                    issued[c.id] = c
                except EmptyAudience:
                    assert not audiences[c.id]
                except CampaignExpired:
                    pass  # routine issued late at night with the 3-day expiry: cannot happen
            elif op == "confirm_all":
                for cid in issued:
                    for task in svc.task_ids(cid):
                        if svc.progress(cid).state in ("scheduled", "running"):
                            svc.confirm(task)
            elif op == "cancel" and issued:
                svc.cancel(list(issued)[arg % len(issued)])
            elif op == "wait":
                await trio.sleep(arg)
        for cid in issued:  # confirm what is left and let everything finish
            for task in svc.task_ids(cid):
                if svc.progress(cid).state in ("scheduled", "running"):
                    svc.confirm(task)
        await trio.sleep(4 * 86400)

        sends = out.sends()
        per_campaign: dict[str, Counter[int]] = defaultdict(Counter)
        per_content: Counter[tuple[str, str]] = Counter()
        routine_times: dict[tuple[int, str], list[float]] = defaultdict(list)
        for t, a in sends:
            rid = int(a.to.split(":")[1])
            per_campaign[a.campaign_id][rid] += 1
            c = issued[a.campaign_id]
            per_content[c.content_key, a.to] += 1
            if isinstance(a, ChatSend):  # from the resident's own contact officer only
                assert reg.officers[int(reg.officer[rid])].key == a.officer
            else:
                assert reg.officer[rid] == -1
            if c.priority == "routine":
                routine_times[rid, "*"].append(t)
                if c.category in POLICY.category_caps:
                    routine_times[rid, c.category].append(t)
        assert set(per_content.values()) <= {1}  # same content once, across campaigns
        assert_caps_hold(routine_times, POLICY)
        for cid in issued:
            p = svc.progress(cid)
            assert p.state in ("done", "cancelled", "expired")
            assert p.pending == 0 and p.resolved == p.capped + p.duplicate + p.sent + p.dropped
            got = per_campaign[cid]
            assert set(got) <= audiences[cid]  # nobody outside the audience
            assert set(got.values()) <= {1}  # nobody twice
            assert p.sent == len(got)
            for rid in audiences[cid]:
                d = svc.explain(cid, rid)
                expected = "sent" if rid in got else d.outcome
                assert d.outcome == expected and d.reason
                assert d.outcome in ("sent", "capped", "duplicate", "dropped")
                if d.outcome == "dropped":
                    assert p.state in ("cancelled", "expired")
