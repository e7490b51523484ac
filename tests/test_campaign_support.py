"""Shared helpers for the campaign tests: small random registries, campaigns, a test policy and
a plain-Python model of what planning must decide. (No tests in this module.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
from hypothesis import strategies as st

from engine.audience.expr import All, Node, to_text
from engine.campaigns.campaign import Campaign, Reason
from engine.campaigns.policy import CampaignPolicy, QuietHours
from engine.registry.registry import Registry
from tests.small_county import EXPRESSIONS, GRID_OFFICERS, GRIDS, TAGS, Person, make_registry

GRID_KEYS = [g for g, _ in GRIDS]
CST = timezone(timedelta(hours=8))
#: trio time 0 is Monday 2 March 2026, 10:00 in the county (02:00 UTC).
BASE = datetime(2026, 3, 2, 10, 0, tzinfo=CST)
WEEK = 7 * 86400.0

POLICY = CampaignPolicy(
    categories=("antifraud", "traffic", "general"),
    cap_window_s=WEEK,
    routine_cap=2,
    category_caps={"antifraud": 1},
    quiet=QuietHours(21 * 60 + 30, 7 * 60 + 30, 8.0),
    officer_rate=1.0,  # one a second, bursts of 3: short tests, visible pacing
    officer_burst=3,
    sms_rate=10.0,
    sms_burst=5,
    routine_expiry_s=3 * 86400.0,
    urgent_expiry_s=12 * 3600.0,
    dedupe_s=30 * 86400.0,
)

Row = tuple[str, bool, frozenset[str]]
ROWS = st.lists(
    st.tuples(st.sampled_from(GRID_KEYS), st.booleans(), st.frozensets(st.sampled_from(TAGS))),
    max_size=40,
)
TEXTS = ("谨防电信诈骗", "拒绝毒品", "雨天路滑，减速慢行")


def wall(t: float) -> datetime:
    return BASE + timedelta(seconds=t)


def build(rows: list[Row]) -> tuple[Registry, dict[int, Person]]:
    reg = make_registry(1)
    people: dict[int, Person] = {}
    for i, (grid, with_officer, tags) in enumerate(rows):
        officer = GRID_OFFICERS[grid][0] if with_officer else None
        rid = reg.add_resident(
            f"R{i:05d}",
            name="张三丰",
            phone="13800000000",
            address="某路1号",
            grid=grid,
            officer=officer,
            tags=sorted(tags),
        )
        people[rid] = Person(grid, officer, set(tags))
    return reg, people


@st.composite
def campaigns(draw: st.DrawFn, ident: str = "c1") -> tuple[Campaign, Node]:
    # Half the campaigns go to everybody, so audiences overlap and caps and dedupe get tested.
    tree = draw(st.one_of(st.just(All()), EXPRESSIONS))
    campaign = Campaign(
        id=ident,
        title="提醒",
        text=draw(st.sampled_from(TEXTS)),
        audience=to_text(tree),
        priority=draw(st.sampled_from(["routine", "routine", "urgent"])),
        issuer="admin",
        category=draw(st.sampled_from(POLICY.categories)),
    )
    return campaign, tree


class CapModel:
    """Send history the obvious way: lists of times per resident, sets of held content."""

    def __init__(self, policy: CampaignPolicy) -> None:
        self.policy = policy
        self.pending: dict[tuple[int, str], int] = {}  # (resident, category) -> planned, unsent
        self.sent: dict[tuple[int, str], list[float]] = {}
        self.held: set[tuple[int, str]] = set()  # (resident, content)

    def used(self, rid: int, cat: str, now: float) -> int:
        times = self.sent.get((rid, cat), [])
        return self.pending.get((rid, cat), 0) + sum(
            t >= now - self.policy.cap_window_s for t in times
        )

    def expected(self, c: Campaign, rid: int, has_officer: bool, now: float) -> Reason:
        if (rid, c.content_key) in self.held:
            return Reason.DUPLICATE
        if c.priority == "routine":
            if self.used(rid, "*", now) >= self.policy.routine_cap:
                return Reason.CAPPED_TOTAL
            cap = self.policy.category_caps.get(c.category)
            if cap is not None and self.used(rid, c.category, now) >= cap:
                return Reason.CAPPED_CATEGORY
        return Reason.CHAT if has_officer else Reason.SMS

    def cats(self, c: Campaign) -> list[str]:
        if c.priority != "routine":
            return []
        return ["*"] + ([c.category] if c.category in self.policy.category_caps else [])

    def reserve(self, c: Campaign, rids: np.ndarray) -> None:
        for rid in rids.tolist():
            self.held.add((rid, c.content_key))
            for cat in self.cats(c):
                self.pending[rid, cat] = self.pending.get((rid, cat), 0) + 1

    def commit(self, c: Campaign, rid: int, t: float) -> None:
        for cat in self.cats(c):
            self.pending[rid, cat] -= 1
            self.sent.setdefault((rid, cat), []).append(t)

    def release(self, c: Campaign, rid: int) -> None:
        self.held.discard((rid, c.content_key))
        for cat in self.cats(c):
            self.pending[rid, cat] -= 1


def assert_caps_hold(sent: dict[tuple[int, str], list[float]], policy: CampaignPolicy) -> None:
    """Any cap+1 routine sends to one resident span more than the window."""
    for (rid, cat), times in sent.items():
        cap = policy.routine_cap if cat == "*" else policy.category_caps[cat]
        ts = sorted(times)
        for a, b in zip(ts, ts[cap:], strict=False):
            assert b - a > policy.cap_window_s, (rid, cat, ts)


__all__ = ["BASE", "CST", "POLICY", "ROWS", "UTC", "WEEK", "CapModel", "build", "campaigns", "wall"]
