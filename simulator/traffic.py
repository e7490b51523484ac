"""The month's traffic, generated up front from a seed: warnings, campaigns, one-to-one chats.

Pure and vectorised: everything is drawn as numpy arrays in a few calls, sorted by time, and
the replay walks them with pointers. Parameters live in :class:`TrafficSpec` (loadable from
TOML, with :class:`~engine.rules.loading.RuleError` naming the bad key).

Calibration. The county reported two totals for one month: about **752,600 messages sent**, of
which about **353,400 one-to-one chats** between officers and residents. Everything else here
is an assumption, chosen so that the rest of the volume (~399,200) comes out as described in
:func:`expected_totals` (routine prevention campaigns carry most of it, area broadcasts and
urgent alerts some, chats of the warning ladders a little). Each default says which it is.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np

from engine.campaigns import Campaign
from engine.campaigns.campaign import Priority
from engine.explain import explain
from engine.model import KNOWN_KINDS
from engine.registry.registry import Registry
from engine.rules.escalation import EscalationRules, KindPolicy
from engine.rules.loading import RuleError, load_toml

REPORTED_MESSAGES = 752_600
"""Given: messages sent in the reported month (chats, campaign chats and SMS, warning chats)."""
REPORTED_CHATS = 353_400
"""Given: of those, one-to-one chats between officers and their resident contacts."""

Rate = Annotated[float, msgspec.Meta(ge=0)]
Prob = Annotated[float, msgspec.Meta(ge=0, le=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Profile = Annotated[tuple[float, ...], msgspec.Meta(min_length=24, max_length=24)]
"""Relative weight of each hour of the local day (need not sum to 1)."""
LevelMix = Annotated[tuple[float, ...], msgspec.Meta(min_length=4, max_length=4)]
"""Share of levels 1..4."""

START = datetime(2026, 11, 1, tzinfo=timezone(timedelta(hours=8)))

# Hour-of-day profiles (assumptions, shaped after how the platform is used).
#: Telecom fraud calls peak in the evening, when people are home and relaxed.
FRAUD_HOURS: tuple[float, ...] = (
    1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1, 2, 3, 3.5, 3.5,
    3, 3, 3.5, 4, 4.5, 5, 6, 8, 9, 8, 5, 2,
)  # fmt: skip
#: Help requests follow waking hours with an evening bump.
HELP_HOURS: tuple[float, ...] = (
    1, 0.8, 0.6, 0.5, 0.5, 0.8, 1.5, 2.5, 3.5, 4, 4, 4,
    3.5, 3.5, 4, 4, 4, 4.5, 5, 5, 4.5, 3.5, 2.5, 1.5,
)  # fmt: skip
#: Missing persons are noticed in the afternoon and evening (a child not home from school).
MISSING_HOURS: tuple[float, ...] = (
    1, 0.5, 0.3, 0.3, 0.3, 0.5, 1, 1.5, 2, 2, 2, 2,
    2, 2, 2.5, 3, 4, 5, 6, 6, 5, 4, 2.5, 1.5,
)  # fmt: skip
#: Road hazards come with the commutes and the weather.
ROAD_HOURS: tuple[float, ...] = (
    0.5, 0.4, 0.3, 0.3, 0.5, 1, 3, 5, 4, 3, 2.5, 2.5,
    2.5, 2.5, 2.5, 3, 4, 5, 4, 3, 2, 1.5, 1, 0.7,
)  # fmt: skip
#: One-to-one chats: office hours plus the after-dinner hours.
CHAT_HOURS: tuple[float, ...] = (
    0.3, 0.15, 0.1, 0.1, 0.1, 0.2, 0.8, 2.5, 5, 6.5, 6.5, 5.5,
    4, 4.5, 5.5, 6, 5.5, 4.5, 4, 5, 5.5, 4.5, 2.5, 1,
)  # fmt: skip


DEFAULT_WARNINGS_PER_DAY: dict[str, Any] = {
    "fraud": 120.0,
    "help_request": 25.0,
    "missing_person": 1.5,
    "road_hazard": 3.0,
}


DEFAULT_HOURS: dict[str, Any] = {
    "fraud": FRAUD_HOURS,
    "help_request": HELP_HOURS,
    "missing_person": MISSING_HOURS,
    "road_hazard": ROAD_HOURS,
}


DEFAULT_LEVELS: dict[str, Any] = {
    "fraud": (0.25, 0.35, 0.3, 0.1),
    "help_request": (0.2, 0.4, 0.3, 0.1),
    "missing_person": (0.5, 0.3, 0.15, 0.05),
    "road_hazard": (0.1, 0.3, 0.4, 0.2),
}


DEFAULT_ROUTINE_CATEGORIES: dict[str, Any] = {
    "antifraud": 0.5,
    "traffic": 0.2,
    "antidrug": 0.1,
    "safety": 0.2,
}


class ActorSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How simulated officers and residents react. All assumptions (no county data given)."""

    ack_probability: Prob = 0.92
    """A notified officer acknowledges at some point (the rest are off shift or miss it)."""
    ack_median_s: Annotated[tuple[float, ...], msgspec.Meta(min_length=4, max_length=4)] = (
        50.0,
        150.0,
        900.0,
        5400.0,
    )
    """Median time to acknowledge by warning level 1..4 (lognormal)."""
    ack_sigma: Annotated[float, msgspec.Meta(ge=0)] = 0.9
    ack_load_exponent: Annotated[float, msgspec.Meta(ge=0)] = 0.6
    """Officers with more contacts are busier: the median scales with
    (contacts / ack_load_reference) ** this. This is what makes ``--officers`` (fewer officers,
    more contacts each) matter."""
    ack_load_reference: Annotated[float, msgspec.Meta(gt=0)] = 750_000 / 1_310
    """Contacts per officer at which ``ack_median_s`` holds: the county's 750,000 contacts
    (given) over the 1,310 officers who keep contacts in the generated county."""
    night_factor: Annotated[float, msgspec.Meta(ge=1)] = 2.5
    """Acks between 23:00 and 07:00 take this many times longer."""
    call_answer: Prob = 0.7
    """A call that is not busy is answered."""
    busy_fraud: Prob = 0.4
    """A fraud victim's line is busy: they are on the phone with the fraudster."""
    busy_other: Prob = 0.08
    call_delay_s: Seconds = 25.0
    chat_read: Prob = 0.55
    """A warning chat is read (the rest stay unread)."""
    chat_read_median_s: Seconds = 420.0
    visit_go: Prob = 0.8
    """A neighbour or village cadre asked to visit actually goes."""
    visit_median_s: Seconds = 1200.0
    outcome_median_s: Seconds = 900.0
    """From reaching the resident (or acking an area warning) to the reported outcome."""
    outcome_report: Prob = 0.9
    """An outcome is reported once the resident is reached (else the warning expires)."""
    fraud_outcomes: tuple[float, float, float] = (0.82, 0.06, 0.12)
    """Fraud: dissuaded, defrauded, false alarm."""
    other_false_alarm: Prob = 0.1
    confirm_probability: Prob = 0.9
    """An officer confirms a routine campaign's send task before it expires (72 h)."""
    confirm_median_s: Seconds = 2400.0


class DutySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The synthetic county's duty rosters (simulator/duty.py): each station's two duty officers
    alternate day and night shifts weekly; some days they are on leave (the other covers), and
    now and then a community officer takes a night in a swap. Used when the rules have no
    rotations of their own. All assumptions."""

    day_start: Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "08:00"
    night_start: Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "20:00"
    leave_days_per_month: Rate = 2.0
    """Days of leave per duty officer in 30 days (sick leave, holidays), whole days."""
    swaps_per_month: Rate = 1.0
    """Night shifts per station in 30 days that a community officer takes in a swap."""


class TrafficSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One simulated period of one county's traffic. Defaults: the reported month."""

    days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 30
    seed: int = 20261101
    start: datetime = START
    """Local start of day 0 (the wall clock the engine sees)."""
    chats_per_day: Rate = REPORTED_CHATS / 30
    """Given: 353,400 one-to-one chats in 30 days."""
    chat_hours: Profile = CHAT_HOURS
    warnings_per_day: dict[str, Rate] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_WARNINGS_PER_DAY)
    )
    """Assumption: a county of 1.3 M sees ~150 warning instructions a day, mostly fraud."""
    hours: dict[str, Profile] = msgspec.field(default_factory=lambda: dict(DEFAULT_HOURS))
    levels: dict[str, LevelMix] = msgspec.field(default_factory=lambda: dict(DEFAULT_LEVELS))
    expires_h: Annotated[tuple[float, ...], msgspec.Meta(min_length=4, max_length=4)] = (
        4.0,
        12.0,
        24.0,
        72.0,
    )
    """How long a warning of level 1..4 stays open without an outcome."""
    phone_share: Prob = 0.12
    """Fraud and help-request targets given as a phone number rather than a resident id."""
    unknown_phone_share: Prob = 0.3
    """Of those, numbers nobody in the registry has (the engine falls back to the station)."""
    high_risk_share: Prob = 0.6
    """Fraud targets drawn from residents tagged ``fraud_high_risk`` (the rest: anyone)."""
    missing_area_share: Prob = 0.5
    """Missing-person warnings for a village (area-wide message) rather than a resident."""
    update_share: Prob = 0.03
    """Warnings raised one level by an update 5-30 minutes later."""
    cancel_share: Prob = 0.02
    """Warnings cancelled by the warning centre 5-60 minutes later."""
    routine_campaigns_per_day: Rate = 2.0
    routine_audience: Annotated[float, msgspec.Meta(ge=1)] = 5000.0
    """Mean residents per routine campaign (whole villages), sized so routine sends carry the
    volume the two given totals leave after broadcasts and chats; see expected_totals."""
    routine_categories: dict[str, Rate] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_ROUTINE_CATEGORIES)
    )
    urgent_campaigns_per_day: Rate = 0.2
    urgent_audience: Annotated[float, msgspec.Meta(ge=1)] = 3000.0
    repeat_share: Prob = 0.1
    """Fraud and help requests reported again about the same resident or number 2-25 minutes
    later (a second source: the bank, a relative): what incidents correlate."""
    ring_bursts_per_day: Rate = 0.3
    """A fraud ring calling one grid: ``ring_size`` fraud warnings about residents of one grid
    within ``ring_window_s`` (what an area alert is for). Scales with the county."""
    ring_size: Annotated[int, msgspec.Meta(ge=2, le=100)] = 6
    ring_window_s: Seconds = 480.0
    actors: ActorSpec = ActorSpec()
    duty: DutySpec = DutySpec()

    def __post_init__(self) -> None:
        for name in ("warnings_per_day", "hours", "levels"):
            unknown = set(getattr(self, name)) - set(KNOWN_KINDS)
            if unknown:
                raise ValueError(f"`{name}` has unknown kind {sorted(unknown)[0]!r}")
        for kind in KNOWN_KINDS:
            if sum(self.levels.get(kind, (1,))) <= 0 or sum(self.hours.get(kind, (1,))) <= 0:
                raise ValueError(f"`levels` and `hours` of {kind!r} must not be all zero")


def load_traffic_spec(path: str | Path) -> TrafficSpec:
    """A TOML file of TrafficSpec fields (all optional); RuleError names the bad key."""
    return load_toml(path, TrafficSpec)


def spec_with(spec: TrafficSpec, changes: dict[str, Any], source: str = "--set") -> TrafficSpec:
    """``spec`` with dotted-key changes (``{"actors.ack_probability": 0.8}``), re-validated."""
    raw = msgspec.to_builtins(spec)
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise RuleError(source, dotted, f"a known key ({p!r} is not a table)")
            node = node[p]
        if last not in node:
            raise RuleError(source, dotted, "a known key of the traffic spec")
        node[last] = value
    try:
        return msgspec.convert(raw, TrafficSpec)
    except msgspec.ValidationError as exc:
        key, what = explain(exc)
        if not key and what.startswith("`"):
            key = what.split("`")[1]
        raise RuleError(source, key, what) from exc


# --- expected totals, from the spec alone ------------------------------------------------------


class Expected(msgspec.Struct, frozen=True):
    """Messages the spec should produce, computed without running anything."""

    chats: float
    routine: float
    urgent: float
    broadcasts: float
    warning_chats: float

    @property
    def messages(self) -> float:
        return self.chats + self.routine + self.urgent + self.broadcasts + self.warning_chats


def expected_totals(
    spec: TrafficSpec,
    residents: int = 1_300_000,
    contacts: int = 750_000,
    villages: int = 600,
    grids: int = 2400,
) -> Expected:
    """Expected messages by source for a county of this shape (default: the real one).

    Routine campaigns go by chat to officer contacts (only if the officer confirms the task)
    and by SMS to everybody else; caps do not bind at these rates (about one routine message
    per resident in four months). Broadcasts: one urgent campaign per area warning, to a grid
    (road hazards) or a village (missing persons). Warning chats: the contact ladders of
    ``rules/escalation.toml`` send one when they reach their chat rung.
    """
    a, d = spec.actors, spec.days
    c = contacts / residents
    routine = spec.routine_campaigns_per_day * d * spec.routine_audience
    routine *= c * a.confirm_probability + (1 - c)
    urgent = spec.urgent_campaigns_per_day * d * spec.urgent_audience
    rate = spec.warnings_per_day
    broadcasts = d * (
        rate.get("road_hazard", 0) * residents / grids
        + rate.get("missing_person", 0) * spec.missing_area_share * residents / villages
    )
    # P(chat) per level: levels 1-2 call twice first, levels 3-4 of fraud chat first.
    known = 1 - spec.phone_share * spec.unknown_phone_share

    def fail(busy: float) -> float:
        return 1 - (1 - busy) * a.call_answer

    fraud = spec.levels["fraud"]
    p_fraud = (fraud[0] + fraud[1]) * fail(a.busy_fraud) ** 2 + fraud[2] + fraud[3]
    helps = spec.levels["help_request"]
    p_help = (helps[0] + helps[1] + helps[2]) * fail(a.busy_other) ** 2 + helps[3]
    mp = spec.levels["missing_person"]
    p_mp = (1 - spec.missing_area_share) * (mp[0] + mp[1] + mp[2]) * fail(a.busy_other) ** 2
    warning_chats = d * known * (
        rate.get("fraud", 0) * p_fraud / sum(fraud)
        + rate.get("help_request", 0) * p_help / sum(helps)
    ) + d * rate.get("missing_person", 0) * p_mp / sum(mp)
    return Expected(
        chats=spec.chats_per_day * d,
        routine=routine,
        urgent=urgent,
        broadcasts=broadcasts,
        warning_chats=warning_chats,
    )


# --- generation --------------------------------------------------------------------------------


class Traffic(msgspec.Struct, kw_only=True):
    """The generated period, every event array sorted by time (seconds from ``spec.start``).

    Warnings: ``w_*`` arrays, one row per warning; ``w_target`` is a resident id, a phone index
    into ``phones``, or an area (grid/village key index into ``areas``), by ``w_ttype``
    (0 resident, 1 phone, 2 area). Follow-ups (updates, cancels) are ``f_*``. Chats: ``c_*``.
    Campaigns: ``campaigns`` with their issue times ``k_time``.
    """

    w_time: np.ndarray
    w_kind: np.ndarray
    w_level: np.ndarray
    w_ttype: np.ndarray
    w_target: np.ndarray
    phones: list[str]
    areas: list[str]
    f_time: np.ndarray
    f_warning: np.ndarray
    f_cancel: np.ndarray
    c_time: np.ndarray
    c_officer: np.ndarray
    c_resident: np.ndarray
    k_time: np.ndarray
    campaigns: list[Campaign]

    @property
    def events(self) -> int:
        return int(self.w_time.size + self.f_time.size + self.c_time.size + self.k_time.size)


def _times(rng: np.random.Generator, n: int, days: int, profile: tuple[float, ...]) -> np.ndarray:
    p = np.asarray(profile, dtype=np.float64)
    hour = rng.choice(24, size=n, p=p / p.sum())
    day = rng.integers(0, days, size=n)
    return day * 86400.0 + hour * 3600.0 + rng.random(n) * 3600.0


def _villages_for(
    rng: np.random.Generator, pops: np.ndarray, target: float, keys: list[str]
) -> list[str]:
    """Whole villages in random order up to ``target`` residents. The village that crosses the
    target is kept with probability (what was missing) / (its size): unbiased, so the expected
    audience is exactly ``target`` (a "closest total" rule overshoots by ~10 %)."""
    chosen: list[str] = []
    total = 0.0
    for v in rng.permutation(pops.size):
        if total + pops[v] <= target:
            chosen.append(keys[v])
            total += pops[v]
            continue
        if rng.random() < (target - total) / pops[v] or not chosen:
            chosen.append(keys[v])
        break
    return chosen


_Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _correlated(
    spec: TrafficSpec,
    reg: Registry,
    w_time: np.ndarray,
    w_kind: np.ndarray,
    w_ttype: np.ndarray,
    w_target: np.ndarray,
    grid_keys: list[str],
    live: np.ndarray,
) -> tuple[np.ndarray, ...] | None:
    """Repeats (same kind, level and target a few minutes later) and fraud-ring bursts (one
    grid, minutes apart), from a generator of their own: the rest of the traffic is the same
    with and without them."""
    rng = np.random.default_rng([spec.seed, 14])
    fraud, helpk = KNOWN_KINDS.index("fraud"), KNOWN_KINDS.index("help_request")
    person = (w_ttype < 2) & ((w_kind == fraud) | (w_kind == helpk))
    again = np.flatnonzero(person & (rng.random(w_time.size) < spec.repeat_share))
    times = [w_time[again] + rng.uniform(120, 1500, again.size)]
    kinds, ttypes, targets = [w_kind[again]], [w_ttype[again]], [w_target[again]]
    levels = [np.zeros(again.size, np.int8)]  # 0: "the level of the original", filled below
    originals = [again]
    n_bursts = int(rng.poisson(spec.ring_bursts_per_day * spec.days))
    grids = reg.grid[: reg.n_ids]
    for _ in range(n_bursts):
        g = int(grids[live[rng.integers(0, live.size)]])  # a grid, weighted by residents
        members = live[grids[live] == g]
        k = min(spec.ring_size, members.size)
        if k < 2:
            continue
        start = float(_times(rng, 1, spec.days, FRAUD_HOURS)[0])
        times.append(start + np.sort(rng.uniform(0, spec.ring_window_s, k)))
        kinds.append(np.full(k, fraud, np.int8))
        levels.append(np.full(k, 1, np.int8))
        ttypes.append(np.zeros(k, np.int8))
        targets.append(rng.choice(members, size=k, replace=False).astype(np.int64))
        originals.append(np.full(k, -1, np.int64))
    t = np.concatenate(times)
    if not t.size:
        return None
    keep = t < spec.days * 86400.0
    return (
        t[keep],
        np.concatenate(kinds)[keep],
        np.concatenate(levels)[keep],
        np.concatenate(ttypes)[keep],
        np.concatenate(targets)[keep],
        np.concatenate(originals)[keep],
    )


def _merge(
    base: _Columns, extra: tuple[np.ndarray, ...], f_warning: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The extra warnings merged in time order; follow-ups keep pointing at their warning."""
    w_time, w_kind, w_level, w_ttype, w_target = base
    e_time, e_kind, e_level, e_ttype, e_target, e_orig = extra
    e_level = np.where(e_orig >= 0, w_level[np.maximum(e_orig, 0)], e_level).astype(np.int8)
    t = np.concatenate([w_time, e_time])
    order = np.argsort(t, kind="stable")
    where = np.empty(order.size, np.int64)
    where[order] = np.arange(order.size)
    cols = [
        np.concatenate([a, b])[order]
        for a, b in (
            (w_kind, e_kind),
            (w_level, e_level),
            (w_ttype, e_ttype),
            (w_target, e_target),
        )
    ]
    return (t[order], *cols, where[f_warning])


def generate_traffic(spec: TrafficSpec, registry: Registry) -> Traffic:
    """Draw the whole period for this county. Same spec and county: same traffic."""
    rng = np.random.default_rng(spec.seed)
    reg = registry
    n_ids = reg.n_ids
    alive = reg.alive[:n_ids]
    live = np.flatnonzero(alive)
    officer_col = reg.officer[:n_ids]
    contacts = np.flatnonzero(alive & (officer_col >= 0))
    j = reg.jurisdiction
    grid_keys = [u.key for u in j.units["grid"]]
    village_keys = [u.key for u in j.units["village"]]
    grid_pop = np.bincount(reg.grid[:n_ids][alive], minlength=len(grid_keys))
    village_pop = np.bincount(j.grid_village, weights=grid_pop, minlength=len(village_keys))
    risky = reg.ids("fraud_high_risk") if "fraud_high_risk" in reg.taxonomy else live[:0]
    risky = risky if risky.size else live
    areas: list[str] = []
    phones: list[str] = []

    kinds, times, levels, ttypes, targets = [], [], [], [], []
    for k, kind in enumerate(KNOWN_KINDS):
        rate = spec.warnings_per_day.get(kind, 0.0)
        n = int(rng.poisson(rate * spec.days))
        if not n:
            continue
        times.append(_times(rng, n, spec.days, spec.hours.get(kind, FRAUD_HOURS)))
        kinds.append(np.full(n, k, np.int8))
        mix = np.asarray(spec.levels.get(kind, (0.25, 0.25, 0.25, 0.25)))
        levels.append(rng.choice(4, size=n, p=mix / mix.sum()).astype(np.int8) + 1)
        ttype = np.zeros(n, np.int8)
        target = np.zeros(n, np.int64)
        if kind == "road_hazard":
            ttype[:] = 2
            # Uniform over grids (not by population): the expected audience is the mean grid.
            g = rng.integers(0, len(grid_keys), size=n)
            target[:] = [len(areas) + i for i in range(n)]
            areas.extend(grid_keys[i] for i in g)
        else:
            pool = risky if kind == "fraud" else live
            share = spec.high_risk_share if kind == "fraud" else 0.0
            pick = np.where(
                rng.random(n) < share,
                pool[rng.integers(0, pool.size, n)],
                live[rng.integers(0, live.size, n)],
            )
            target[:] = pick
            if kind == "missing_person":
                area = rng.random(n) < spec.missing_area_share
                v = rng.integers(0, len(village_keys), size=int(area.sum()))
                ttype[area] = 2
                target[area] = np.arange(len(areas), len(areas) + v.size)
                areas.extend(village_keys[i] for i in v)
            else:
                by_phone = np.flatnonzero(rng.random(n) < spec.phone_share)
                unknown = rng.random(by_phone.size) < spec.unknown_phone_share
                for i, unk in zip(by_phone.tolist(), unknown.tolist(), strict=True):
                    # Unknown numbers start with 199, which the generated county never uses.
                    number = (
                        f"199{rng.integers(0, 10**8):08d}" if unk else reg.phone[int(target[i])]
                    )
                    ttype[i] = 1
                    target[i] = len(phones)
                    phones.append(number)
        ttypes.append(ttype)
        targets.append(target)
    w_time = np.concatenate(times) if times else np.zeros(0)
    order = np.argsort(w_time, kind="stable")
    w_time = w_time[order]
    w_kind = np.concatenate(kinds)[order] if kinds else np.zeros(0, np.int8)
    w_level = np.concatenate(levels)[order] if levels else np.zeros(0, np.int8)
    w_ttype = np.concatenate(ttypes)[order] if ttypes else np.zeros(0, np.int8)
    w_target = np.concatenate(targets)[order] if targets else np.zeros(0, np.int64)

    # Follow-ups: an update raising the level, or a cancel.
    m = w_time.size
    u = np.flatnonzero((rng.random(m) < spec.update_share) & (w_level > 1))
    c = np.flatnonzero(rng.random(m) < spec.cancel_share)
    c = np.setdiff1d(c, u)
    f_warning = np.concatenate([u, c])
    f_cancel = np.concatenate([np.zeros(u.size, bool), np.ones(c.size, bool)])
    delay = np.concatenate([rng.uniform(300, 1800, u.size), rng.uniform(300, 3600, c.size)])
    f_time = w_time[f_warning] + delay
    fo = np.argsort(f_time, kind="stable")
    f_time, f_warning, f_cancel = f_time[fo], f_warning[fo], f_cancel[fo]

    # One-to-one chats: a random contact and their officer.
    nc = int(rng.poisson(spec.chats_per_day * spec.days)) if contacts.size else 0
    c_time = np.sort(_times(rng, nc, spec.days, spec.chat_hours))
    c_resident = contacts[rng.integers(0, max(contacts.size, 1), nc)] if nc else contacts[:0]
    c_officer = officer_col[c_resident].astype(np.int32)

    # Campaigns: routine in office hours (whole villages), urgent any time 07-22.
    campaigns: list[tuple[float, Campaign]] = []
    cats = list(spec.routine_categories)
    weights = np.asarray([spec.routine_categories[k] for k in cats], dtype=np.float64)
    plans: tuple[tuple[Priority, float, float], ...] = (
        ("routine", spec.routine_campaigns_per_day, spec.routine_audience),
        ("urgent", spec.urgent_campaigns_per_day, spec.urgent_audience),
    )
    for priority, rate, mean in plans:
        # Campaigns are planned, not random arrivals: exactly rate * days of them.
        n = round(rate * spec.days)
        lo, hi = (9, 17) if priority == "routine" else (7, 22)
        when = rng.integers(0, spec.days, n) * 86400.0 + rng.uniform(lo * 3600, hi * 3600, n)
        sizes = mean * rng.lognormal(-0.03125, 0.25, n)  # mean: mean (mu = -sigma^2 / 2)
        for i in range(n):
            villages = _villages_for(rng, village_pop, float(sizes[i]), village_keys)
            category = (
                cats[int(rng.choice(len(cats), p=weights / weights.sum()))]
                if priority == "routine" and cats
                else "safety"
            )
            campaigns.append(
                (
                    float(when[i]),
                    Campaign(
                        id=f"{priority[0]}{i:04d}",
                        title=f"{category} advice" if priority == "routine" else "urgent alert",
                        text=f"simulated {priority} campaign {i} ({category})",
                        audience=" | ".join(f"village:{v}" for v in villages),
                        priority=priority,
                        issuer="county",
                        category=category,
                    ),
                )
            )
    campaigns.sort(key=lambda tc: tc[0])
    extra = _correlated(spec, reg, w_time, w_kind, w_ttype, w_target, grid_keys, live)
    if extra is not None:
        w_time, w_kind, w_level, w_ttype, w_target, f_warning = _merge(
            (w_time, w_kind, w_level, w_ttype, w_target), extra, f_warning
        )
    return Traffic(
        w_time=w_time,
        w_kind=w_kind,
        w_level=w_level,
        w_ttype=w_ttype,
        w_target=w_target,
        phones=phones,
        areas=areas,
        f_time=f_time,
        f_warning=f_warning,
        f_cancel=f_cancel,
        c_time=c_time,
        c_officer=c_officer,
        c_resident=c_resident,
        k_time=np.asarray([t for t, _ in campaigns], dtype=np.float64),
        campaigns=[c for _, c in campaigns],
    )


def scaled(spec: TrafficSpec, residents: int, reference: int = 1_300_000) -> TrafficSpec:
    """The same traffic per resident for a county of another size: chats, warnings and
    campaign audiences scale with ``residents / reference``; rates of campaigns do not."""
    f = residents / reference
    return msgspec.structs.replace(
        spec,
        chats_per_day=spec.chats_per_day * f,
        warnings_per_day={k: v * f for k, v in spec.warnings_per_day.items()},
        ring_bursts_per_day=spec.ring_bursts_per_day * f,
        routine_audience=max(1.0, spec.routine_audience * f),
        urgent_audience=max(1.0, spec.urgent_audience * f),
        actors=msgspec.structs.replace(
            spec.actors, ack_load_reference=spec.actors.ack_load_reference * f
        ),
    )


def ack_deadline_rules(rules: EscalationRules, seconds: float) -> EscalationRules:
    """Escalation rules with the first rung's ack deadline of every ladder set to ``seconds``
    (the ``--ack-deadline`` what-if)."""
    kinds: dict[str, KindPolicy] = {}
    for name, kp in rules.kinds.items():
        levels = tuple(
            msgspec.structs.replace(
                lp,
                officers=(
                    msgspec.structs.replace(lp.officers[0], ack_within_s=seconds),
                    *lp.officers[1:],
                ),
            )
            for lp in kp.levels
        )
        kinds[name] = msgspec.structs.replace(kp, levels=levels)
    return msgspec.structs.replace(rules, kinds=kinds)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``2h``, ``1d`` -> seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    mult = units.get(text[-1:])
    number = text[:-1] if mult else text
    try:
        value = float(number) * (mult or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 90s, 5m, 2h") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return value
