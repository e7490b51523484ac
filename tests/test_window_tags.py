"""Window tags (warned_7d ...) hold exactly as long as their window after the last mark."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rules.taxonomy import Taxonomy
from engine.window_tags import RecentTags
from tests.props import examples
from tests.small_county import make_registry

DAY = 86400.0
KEYS = ("elderly", "warned_24h", "warned_7d", "broadcast_7d", "warn_frequent_30d", "plain_3d")
WINDOWS = {
    "warned_24h": ("warned", DAY),
    "warned_7d": ("warned", 7 * DAY),
    "broadcast_7d": ("broadcast", 7 * DAY),
}


def county(n: int = 40):
    tax = Taxonomy.from_keys(KEYS, dynamic=KEYS[1:5])
    reg = make_registry(taxonomy=tax)
    for i in range(n):
        reg.add_resident(f"R{i}", name="甲", phone="1", address="x", grid="01-11")
    return reg, RecentTags(reg)


def test_which_tags_are_maintained() -> None:
    _, recent = county()
    assert recent.maintained() == ["broadcast_7d", "warned_24h", "warned_7d"]
    # Not a window (a count), and not dynamic at all: left alone, and said so.
    assert recent.unmaintained == ["warn_frequent_30d"]


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("mark"),
            st.sampled_from(["warned", "broadcast", "unknown"]),
            st.lists(st.integers(0, 45), max_size=10),
        ),
        st.tuples(st.just("wait"), st.floats(0, 3 * DAY)),
        st.tuples(st.just("expire")),
    ),
    max_size=40,
)


@settings(max_examples=examples(150), deadline=None)
@given(OPS)
def test_tags_match_the_last_mark_within_the_window(ops: list[tuple]) -> None:
    reg, recent = county()
    now = 1_700_000_000.0
    last: dict[str, dict[int, float]] = {"warned": {}, "broadcast": {}}
    audience = {k: reg.audience(k) for k in WINDOWS}  # compiled once: must follow changes
    for op in ops:
        if op[0] == "mark":
            recent.mark(op[1], op[2], now)
            for r in op[2]:
                if op[1] in last and r < 40:  # ids beyond the registry are ignored
                    last[op[1]][r] = now
        elif op[0] == "wait":
            now += op[1]
        else:
            recent.expire(now)
            for key, (event, window) in WINDOWS.items():
                fresh = sorted(r for r, t in last[event].items() if t > now - window)
                assert audience[key].ids().tolist() == fresh, key
    recent.expire(now)
    for key, (event, window) in WINDOWS.items():
        fresh = {r for r, t in last[event].items() if t > now - window}
        assert set(reg.ids(key).tolist()) == fresh


def test_bulk_marks_are_cheap_and_reversible() -> None:
    reg, recent = county(4000)
    ids = list(range(0, 4000, 2))
    recent.mark("broadcast", ids, 0.0)
    assert reg.count("broadcast_7d") == 2000
    recent.mark("broadcast", [0], 6 * DAY)  # marked again: outlives the first batch
    assert recent.expire(7 * DAY) == 1999
    assert reg.ids("broadcast_7d").tolist() == [0]
    assert recent.expire(13 * DAY) == 1 and reg.count("broadcast_7d") == 0


def test_actions_of_a_warning_mark_the_resident_once_reached() -> None:
    from engine.model import Action

    tax = Taxonomy.from_keys(
        ("warned_7d", "fraud_alert_24h"), dynamic=("warned_7d", "fraud_alert_24h")
    )
    reg = make_registry(taxonomy=tax)
    a = reg.add_resident("A", name="甲", phone="1", address="x", grid="01-11")
    b = reg.add_resident("B", name="乙", phone="2", address="y", grid="01-11")
    recent = RecentTags(reg)

    def act(action: str, to: str, kind: str = "fraud", step: int = 0) -> Action:
        return Action(key="k", warning_id="w", action=action, to=to, kind=kind, level=1, step=step)

    recent.observe_actions(
        [
            act("notify_officer", "P01"),
            act("call", f"resident:{a}"),
            act("chat", f"resident:{b}", kind="road_hazard", step=1),  # not a first contact
            act("visit", f"resident:{b}"),  # a neighbour asked to go is not the one warned
        ],
        1_000.0,
    )
    assert reg.ids("warned_7d").tolist() == [a]
    assert reg.ids("fraud_alert_24h").tolist() == [a]
    recent.observe_actions([], 1_000.0 + DAY + 1)  # an hour later at least: expiry runs
    assert reg.ids("fraud_alert_24h").tolist() == []
    assert reg.ids("warned_7d").tolist() == [a]


def test_antifraud_campaign_sends_mark_antifraud_msg() -> None:
    from engine.campaigns.campaign import Campaign, ChatSend, SmsSend

    keys = ("broadcast_7d", "antifraud_msg_7d")
    reg = make_registry(taxonomy=Taxonomy.from_keys(keys, dynamic=keys))
    a, b = (
        reg.add_resident(k, name="甲", phone="1", address="x", grid="01-11", officer="P01")
        for k in ("A", "B")
    )
    recent = RecentTags(reg)

    def campaign(cid: str, category: str) -> Campaign:
        return Campaign(
            id=cid,
            title="t",
            text="x",
            audience="all",
            priority="urgent",
            issuer="county",
            category=category,
        )

    recent.observe_campaign_issued(campaign("fraud-1", "antifraud"))
    recent.observe_campaign_issued(campaign("road-1", "traffic"))
    sends = [
        ChatSend(
            key="k1",
            campaign_id="fraud-1",
            task_id="t",
            officer="P01",
            to=f"resident:{a}",
            priority="urgent",
            title="t",
            text="x",
        ),
        SmsSend(
            key="k2",
            campaign_id="road-1",
            to=f"resident:{b}",
            priority="urgent",
            title="t",
            text="x",
        ),
    ]
    recent.observe_campaign(sends, 5.0)
    assert reg.ids("broadcast_7d").tolist() == [a, b]
    assert reg.ids("antifraud_msg_7d").tolist() == [a]
