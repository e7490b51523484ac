"""The statistics recorder: fed by the engine's shell, never by the simulator's own bookkeeping.

Whoever owns the outbox and the feedback path calls ``observe_*`` with what passed through it
(the simulator's replay does; a server can attach the same recorder to its outbox and feedback
stream). Everything is derived from the messages themselves:

- time to acknowledge: first ``notify_officer`` of a warning -> its first ``Acknowledged``;
- time to reach the resident: first contact action (call, chat, visit) -> answered call,
  read message or visit done;
- escalations: ``notify_officer`` entering a rung above the first (``step > 0``, attempt 1);
- deadlines missed: a notification caused by a timeout (``cause`` ``repeat`` or
  ``escalation``), charged to the officer notified before it;
- outcomes: reported by feedback, or (expired, cancelled, unreachable) from the ``cause`` of the
  engine's ``stand_down`` actions. Statistics read causes, never the prose of ``reason``.

Counters are numpy arrays indexed by officer and grid, so the cost is O(events) with no
per-resident Python objects; only warnings (thousands a month) get a row in a dict. One extra
officer row (the last) collects what has no officer: the county centre, SMS, unknown keys.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, TypeGuard

import numpy as np

from engine.model import (
    Acknowledged,
    Action,
    AreaTarget,
    CallResult,
    Cause,
    FeedbackEvent,
    MessageRead,
    Outcome,
    ResidentTarget,
    VisitDone,
    WarningInstruction,
)
from engine.registry.registry import Registry
from engine.stats.percentiles import group_percentiles
from engine.stats.summary import (
    OUTCOMES,
    Counters,
    ExerciseStats,
    FunnelStep,
    GridStats,
    Histogram,
    OfficerStats,
    Percentiles,
    StationStats,
    Summary,
)

if TYPE_CHECKING:  # engine.campaigns is in the same layer: types only (tests/test_layers.py)
    from engine.campaigns.campaign import Campaign, ChatSend, ConfirmRequest, SmsSend

QS = (50.0, 90.0, 99.0)
_OUTCOME_CODE = {k: i for i, k in enumerate(OUTCOMES)}
_COUNTERS = (
    "messages",
    "chats",
    "campaign_messages",
    "sms",
    "warning_chats",
    "confirm_requests",
    "notifications",
    "handled",
    "missed",
    "calls",
    "visits",
)
#: Warning columns: name -> (dtype, initial value).
_W_COLUMNS: dict[str, tuple[type, float]] = {
    "kind": (np.int16, -1),
    "level": (np.int8, 0),
    "grid": (np.int32, -1),
    "owner": (np.int32, -1),  # first officer notified: whose warning it is
    "last": (np.int32, -1),  # officer notified last (charged with a missed deadline)
    "max_step": (np.int8, -1),
    "escalations": (np.int16, 0),
    "missed": (np.int16, 0),
    "outcome": (np.int8, -1),
    "seen": (np.float64, np.nan),
    "notified": (np.float64, np.nan),
    "acked": (np.float64, np.nan),
    "contact": (np.float64, np.nan),
    "reached": (np.float64, np.nan),
}


class Stats:
    """Counters per officer, station, grid and county, fed with the engine's traffic.

    ``officers``/``officer_station``/``officer_role`` describe officer rows; ``resident_grid``
    maps resident ids to grid rows. ``start`` is the time (same clock as every ``now``) of
    hour 0 of the hourly series.
    """

    def __init__(
        self,
        *,
        officers: Sequence[str],
        officer_station: Sequence[int] | np.ndarray,
        officer_role: Sequence[str] | None = None,
        stations: Sequence[str],
        grids: Sequence[str],
        resident_grid: np.ndarray,
        contacts: np.ndarray | None = None,
        grid_residents: np.ndarray | None = None,
        start: float = 0.0,
    ) -> None:
        self.officer_keys = list(officers)
        n = len(self.officer_keys)
        self._officer = {k: i for i, k in enumerate(self.officer_keys)}
        self.n_officers = n
        self.officer_role = list(officer_role or ["officer"] * n)
        self.station_keys = list(stations)
        self.officer_station = np.append(np.asarray(officer_station, dtype=np.int64), -1)
        self.grid_keys = list(grids)
        self._grid = {k: i for i, k in enumerate(self.grid_keys)}
        self.resident_grid = np.asarray(resident_grid)
        self.start = start
        g = len(self.grid_keys)
        self.contacts = np.zeros(n + 1, np.int64) if contacts is None else np.append(contacts, 0)
        if grid_residents is None:
            grid_residents = np.bincount(self.resident_grid[self.resident_grid >= 0], minlength=g)
        self.grid_residents = np.asarray(grid_residents, dtype=np.int64)
        self.c = {name: np.zeros(n + 1, np.int64) for name in _COUNTERS}
        self.prevention = np.zeros(g, np.int64)
        self.antifraud = np.zeros(g, np.int64)
        self.urgent = np.zeros(g, np.int64)
        self.kinds: list[str] = ["fraud", "help_request", "missing_person", "road_hazard"]
        self._kind = {k: i for i, k in enumerate(self.kinds)}
        self._rows: dict[str, int] = {}
        self._w: dict[str, np.ndarray] = {
            name: np.full(64, init, dtype) for name, (dtype, init) in _W_COLUMNS.items()
        }
        self._msg_hour = np.zeros(24 * 31, np.int64)
        self._antifraud_campaigns: set[str] = set()
        self.campaigns = 0
        self.unknown_feedback = 0
        self._links: dict[int, str] = {}
        """Row of a warning joined to an incident -> the incident's warning id."""
        self._drills: set[str] = set()
        self._drill_actions: Counter[str] = Counter()
        self._drill_acked: set[str] = set()
        self._drill_outcomes: Counter[str] = Counter()
        self._drill_campaigns = 0
        self._drill_campaign_notices = 0

    @classmethod
    def from_registry(cls, registry: Registry, start: float = 0.0) -> Stats:
        """Officer, station and grid rows from a :class:`engine.registry.registry.Registry`."""
        reg = registry
        j = reg.jurisdiction
        stations = [u.key for u in j.units["station"]]
        officers = reg.officers
        n_ids = reg.n_ids
        alive = reg.alive[:n_ids]
        grid = np.where(alive, reg.grid[:n_ids], -1)
        officer_col = np.where(alive, reg.officer[:n_ids], -1)
        contacts = np.bincount(officer_col[officer_col >= 0], minlength=len(officers))
        return cls(
            officers=[o.key for o in officers],
            officer_station=[j.index["station"][o.station] for o in officers],
            officer_role=[o.role for o in officers],
            stations=stations,
            grids=[u.key for u in j.units["grid"]],
            resident_grid=grid,
            contacts=contacts[: len(officers)],
            start=start,
        )

    # --- helpers -------------------------------------------------------------------------

    def officer_index(self, key: str) -> int:
        """The officer's row; the county row for the county centre and unknown keys."""
        return self._officer.get(key, self.n_officers)

    def _hour(self, now: float) -> int:
        h = max(0, int((now - self.start) // 3600))
        if h >= self._msg_hour.size:
            self._msg_hour = np.concatenate([self._msg_hour, np.zeros(h + 1, np.int64)])
        return h

    def _row(self, wid: str, kind: str, level: int, now: float) -> int:
        row = self._rows.get(wid)
        if row is not None:
            return row
        row = len(self._rows)
        self._rows[wid] = row
        if row >= self._w["kind"].size:
            for name, (dtype, init) in _W_COLUMNS.items():
                col = self._w[name]
                self._w[name] = np.concatenate([col, np.full(col.size, init, dtype)])
        k = self._kind.get(kind)
        if k is None:
            k = self._kind[kind] = len(self.kinds)
            self.kinds.append(kind)
        w = self._w
        w["kind"][row], w["level"][row], w["seen"][row] = k, level, now
        return row

    def _grid_of(self, target: object) -> int:
        if isinstance(target, ResidentTarget):
            if 0 <= target.id < self.resident_grid.size:
                return int(self.resident_grid[target.id])
        elif isinstance(target, AreaTarget):
            return self._grid.get(target.area.split(":", 1)[-1], -1)
        return -1

    def _resident_grids(self, residents: np.ndarray) -> np.ndarray:
        ok = (residents >= 0) & (residents < self.resident_grid.size)
        grids = np.full(residents.size, -1, np.int64)
        grids[ok] = self.resident_grid[residents[ok]]
        return grids

    # --- observers -----------------------------------------------------------------------

    def observe_warning(
        self, warning: WarningInstruction, now: float, grid: int | None = None
    ) -> None:
        """A warning instruction accepted at intake (alerts only count once per id).

        ``grid`` overrides the grid taken from the target (phone targets have none here).
        """
        if warning.status == "exercise" or warning.id in self._drills:
            self._drills.add(warning.id)
            return
        row = self._row(warning.id, warning.kind, warning.level, now)
        if grid is None:
            grid = self._grid_of(warning.target)
        if grid >= 0 and self._w["grid"][row] < 0:
            self._w["grid"][row] = grid

    def observe_inputs(
        self, items: Iterable[WarningInstruction | FeedbackEvent], now: float
    ) -> None:
        """A batch accepted at intake (warnings) or from the feedback source: the shape of
        ``engine.service``'s input observers."""
        for item in items:
            if isinstance(item, WarningInstruction):
                self.observe_warning(item, now)
            else:
                self.observe_feedback(item, now)

    def observe_actions(self, actions: Iterable[Action], now: float) -> None:
        """A batch from the engine's outbox."""
        w, c = self._w, self.c
        for a in actions:
            kind = a.action
            if a.exercise or a.warning_id in self._drills:
                self._drill_actions[kind] += 1
                continue
            if kind == "report" and a.cause == "linked" and "/joined/" in a.key:
                # A warning joined another's incident: it ends as the incident does.
                row = self._row(a.warning_id, a.kind, a.level, now)
                self._links[row] = a.key.rpartition("/joined/")[2]
                continue
            if kind in ("inform", "report"):
                continue
            row = self._row(a.warning_id, a.kind, a.level, now)
            if kind == "notify_officer":
                oi = self.officer_index(a.to)
                c["notifications"][oi] += 1
                if np.isnan(w["notified"][row]):
                    w["notified"][row] = now
                    w["owner"][row] = oi
                if a.cause in ("repeat", "escalation"):  # nobody acked within the deadline
                    last = int(w["last"][row])
                    c["missed"][last if last >= 0 else self.n_officers] += 1
                    w["missed"][row] += 1
                if a.step > 0 and a.attempt == 1:
                    w["escalations"][row] += 1
                if a.step > w["max_step"][row]:
                    w["max_step"][row] = a.step
                w["last"][row] = oi
            elif kind in ("call", "chat", "visit"):
                if np.isnan(w["contact"][row]):
                    w["contact"][row] = now
                owner = int(w["owner"][row])
                oi = owner if owner >= 0 else self.n_officers
                if kind == "chat":
                    c["warning_chats"][oi] += 1
                    c["messages"][oi] += 1
                    self._msg_hour[self._hour(now)] += 1
                elif kind == "call":
                    c["calls"][oi] += 1
                else:
                    c["visits"][oi] += 1
            elif kind == "stand_down" and w["outcome"][row] < 0 and a.cause != "outcome":
                # A reported outcome is counted from the feedback event itself.
                w["outcome"][row] = self._ending(a.cause, row)

    def _ending(self, cause: Cause, row: int) -> int:
        """How the engine ended a warning, from its stand-down's cause."""
        if cause == "cancel":
            return _OUTCOME_CODE["cancelled"]
        tried = not np.isnan(self._w["contact"][row]) and np.isnan(self._w["reached"][row])
        if cause == "exhausted" or (cause == "expiry" and tried):
            return _OUTCOME_CODE["unreachable"]
        return _OUTCOME_CODE["expired"]

    def observe_feedback(self, event: FeedbackEvent, now: float) -> None:
        """One feedback event as handed to the engine. Late feedback (after the end) and
        feedback for warnings never seen are not counted."""
        if event.warning_id in self._drills:
            if isinstance(event, Acknowledged):
                self._drill_acked.add(event.warning_id)
            elif isinstance(event, Outcome):
                self._drill_outcomes[event.outcome] += 1
            return
        row = self._rows.get(event.warning_id)
        w = self._w
        if row is None:
            self.unknown_feedback += 1
            return
        if w["outcome"][row] >= 0:
            return
        if isinstance(event, Acknowledged):
            if np.isnan(w["acked"][row]):
                w["acked"][row] = now
                self.c["handled"][self.officer_index(event.officer)] += 1
        elif isinstance(event, CallResult):
            if event.result == "answered" and np.isnan(w["reached"][row]):
                w["reached"][row] = now
        elif isinstance(event, MessageRead | VisitDone):
            if np.isnan(w["reached"][row]):
                w["reached"][row] = now
        elif isinstance(event, Outcome):
            w["outcome"][row] = _OUTCOME_CODE[event.outcome]

    def observe_chat(
        self, officer_index: np.ndarray, resident: np.ndarray, now: np.ndarray | float
    ) -> None:
        """One-to-one chats (platform events, in bulk): officer rows (-1: none), residents,
        times (one per chat, or one for all)."""
        oi = np.asarray(officer_index, dtype=np.int64)
        oi = np.where((oi >= 0) & (oi < self.n_officers), oi, self.n_officers)
        counts = np.bincount(oi, minlength=self.n_officers + 1)
        self.c["chats"] += counts
        self.c["messages"] += counts
        self._add_hours(np.broadcast_to(np.asarray(now, dtype=np.float64), oi.shape))

    def _add_hours(self, times: np.ndarray) -> None:
        if not times.size:
            return
        hours = np.maximum(0, ((times - self.start) // 3600).astype(np.int64))
        self._hour(float(times.max()))
        self._msg_hour += np.bincount(hours, minlength=self._msg_hour.size)

    def observe_campaign_issued(self, campaign: Campaign) -> None:
        """A campaign was issued: remembers its category (an exercise is counted apart)."""
        if campaign.status == "exercise":
            self._drill_campaigns += 1
            return
        self.campaigns += 1
        if campaign.category == "antifraud":
            self._antifraud_campaigns.add(campaign.id)

    def observe_campaign(self, action: object, now: float) -> None:
        """One campaign action (ConfirmRequest, ChatSend, SmsSend, TaskClosed)."""
        self.observe_campaign_many((action,), now)

    def observe_campaign_many(self, actions: Sequence[object], now: float) -> None:
        """Campaign actions in a batch: one vectorised update per batch."""
        sends = [a for a in actions if _is_send(a) and not getattr(a, "exercise", False)]
        self._drill_campaign_notices += sum(1 for a in actions if getattr(a, "exercise", False))
        for a in actions:
            if _is_confirm(a):
                self.c["confirm_requests"][self.officer_index(a.officer)] += 1
        if not sends:
            return
        n = self.n_officers
        oi = np.array([self._officer.get(getattr(a, "officer", ""), n) for a in sends])
        rid = np.array([int(a.to[9:]) for a in sends], dtype=np.int64)
        sms = np.array([not hasattr(a, "officer") for a in sends])
        routine = np.array([a.priority == "routine" for a in sends])
        af = np.array([a.campaign_id in self._antifraud_campaigns for a in sends])
        counts = np.bincount(oi, minlength=n + 1)
        self.c["campaign_messages"] += counts
        self.c["messages"] += counts
        self.c["sms"] += np.bincount(oi[sms], minlength=n + 1)
        self._msg_hour[self._hour(now)] += len(sends)
        grids = self._resident_grids(rid)
        ok = grids >= 0
        g = len(self.grid_keys)
        self.prevention += np.bincount(grids[ok & routine], minlength=g)
        self.antifraud += np.bincount(grids[ok & routine & af], minlength=g)
        self.urgent += np.bincount(grids[ok & ~routine], minlength=g)

    # --- summary -------------------------------------------------------------------------

    @property
    def warnings(self) -> int:
        return len(self._rows)

    def summary(self, until: float | None = None) -> Summary:
        """Aggregate officer -> station -> county, with p50/p90/p99 and the report's series.

        ``until`` (same clock as ``now``) ends the hourly series; by default they end with the
        last hour that saw anything.
        """
        m = len(self._rows)
        w = {k: v[:m].copy() if k == "outcome" else v[:m] for k, v in self._w.items()}
        for row, incident in self._links.items():  # joined warnings end with their incident
            first = self._rows.get(incident)
            if first is not None and w["outcome"][row] < 0:
                w["outcome"][row] = w["outcome"][first]
        n, s = self.n_officers, len(self.station_keys)
        owner = np.where(w["owner"] >= 0, w["owner"], n)
        ack = w["acked"] - w["notified"]
        reach = w["reached"] - w["contact"]
        owner_station = self.officer_station[owner]
        owner_station = np.where(owner_station >= 0, owner_station, s)
        per_officer = self._per_group(owner, n + 1, ack, reach, w)
        per_station = self._per_group(owner_station, s + 1, ack, reach, w)
        station_of_row = np.where(self.officer_station >= 0, self.officer_station, s)
        counters = {k: v.copy() for k, v in self.c.items()}
        st_counters = {
            k: np.bincount(station_of_row, weights=v, minlength=s + 1).astype(np.int64)
            for k, v in counters.items()
        }
        st_contacts = np.bincount(station_of_row, weights=self.contacts, minlength=s + 1)
        everyone = np.zeros(m, np.int64)
        county_p = self._per_group(everyone, 1, ack, reach, w)

        def make(
            c: Mapping[str, np.ndarray], i: int, grp: _Group, gi: int, contacts: int
        ) -> Counters:
            return Counters(
                contacts=int(contacts),
                messages_sent=int(c["messages"][i]),
                chats=int(c["chats"][i]),
                campaign_messages=int(c["campaign_messages"][i]),
                sms=int(c["sms"][i]),
                warning_chats=int(c["warning_chats"][i]),
                confirm_requests=int(c["confirm_requests"][i]),
                warnings=int(grp.warnings[gi]),
                notifications=int(c["notifications"][i]),
                warnings_handled=int(c["handled"][i]),
                escalations=int(grp.escalations[gi]),
                deadlines_missed=int(c["missed"][i]),
                calls=int(c["calls"][i]),
                visits=int(c["visits"][i]),
                outcomes={
                    k: int(grp.outcomes[gi, j])
                    for j, k in enumerate(OUTCOMES)
                    if grp.outcomes[gi, j]
                },
                time_to_ack=_pct(grp.ack, gi),
                time_to_reach=_pct(grp.reach, gi),
            )

        officers = [
            OfficerStats(
                key=self.officer_keys[i],
                station=self.station_keys[int(self.officer_station[i])]
                if self.officer_station[i] >= 0
                else "county",
                role=self.officer_role[i],
                counters=make(counters, i, per_officer, i, int(self.contacts[i])),
            )
            for i in range(n)
        ]
        officers.append(
            OfficerStats(
                key="(county: centre, SMS, unknown)",
                station="county",
                role="county",
                counters=make(counters, n, per_officer, n, 0),
            )
        )
        officer_count = np.bincount(station_of_row[:n], minlength=s + 1)
        stations = [
            StationStats(
                key=self.station_keys[i] if i < s else "county",
                officers=int(officer_count[i]),
                counters=make(st_counters, i, per_station, i, int(st_contacts[i])),
            )
            for i in range(s + 1)
        ]
        totals = {k: v.sum(keepdims=True) for k, v in counters.items()}
        county = make(totals, 0, county_p, 0, int(self.contacts.sum()))
        g = len(self.grid_keys)
        wg = w["grid"]
        has_grid = wg >= 0
        warnings_grid = np.bincount(wg[has_grid], minlength=g)
        fraud = has_grid & (w["kind"] == self._kind["fraud"])
        fraud_grid = np.bincount(wg[fraud], minlength=g)
        grids = [
            GridStats(
                key=self.grid_keys[i],
                residents=int(self.grid_residents[i]) if i < self.grid_residents.size else 0,
                prevention_messages=int(self.prevention[i]),
                antifraud_messages=int(self.antifraud[i]),
                urgent_messages=int(self.urgent[i]),
                warnings=int(warnings_grid[i]),
                fraud_warnings=int(fraud_grid[i]),
            )
            for i in range(g)
        ]
        busy = np.flatnonzero(self._msg_hour)
        hours = int(busy[-1]) + 1 if busy.size else 1
        if m:
            hours = max(hours, int(np.nanmax((w["seen"] - self.start) // 3600)) + 1)
        if until is not None:
            hours = max(1, math.ceil((until - self.start) / 3600))
        wh = np.clip(((w["seen"] - self.start) // 3600), 0, hours - 1).astype(np.int64)
        per_hour = {
            kind: np.bincount(wh[w["kind"] == k], minlength=hours).tolist()
            for k, kind in enumerate(self.kinds)
        }
        msg_hour = np.zeros(hours, np.int64)
        msg_hour[: min(hours, self._msg_hour.size)] = self._msg_hour[:hours]
        acks = ack[~np.isnan(ack)]
        edges = [0.0, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400]
        counts = np.histogram(acks, bins=[*edges, np.inf])[0].tolist()
        funnel = [FunnelStep("warnings", m)]
        funnel.append(FunnelStep("officer notified", int((w["max_step"] >= 0).sum())))
        for k, label in enumerate(("2nd rung", "3rd rung", "4th rung"), start=1):
            funnel.append(FunnelStep(f"escalated to {label}", int((w["max_step"] >= k).sum())))
        funnel.append(FunnelStep("acknowledged", int((~np.isnan(w["acked"])).sum())))
        funnel.append(FunnelStep("resident reached", int((~np.isnan(w["reached"])).sum())))
        miss_level = self._missed_by_level()
        return Summary(
            hours=hours,
            warnings=m,
            open_warnings=int((w["outcome"] < 0).sum()),
            county=county,
            stations=stations,
            officers=officers,
            grids=grids,
            kinds={k: int((w["kind"] == i).sum()) for i, k in enumerate(self.kinds)},
            levels={str(lv): int((w["level"] == lv).sum()) for lv in (1, 2, 3, 4)},
            warnings_per_hour=per_hour,
            messages_per_hour=msg_hour.tolist(),
            ack_histogram=Histogram(edges, counts),
            funnel=funnel,
            deadlines_missed_by_level=miss_level,
            campaigns=self.campaigns,
            exercise=ExerciseStats(
                warnings=len(self._drills),
                actions=dict(sorted(self._drill_actions.items())),
                acknowledged=len(self._drill_acked),
                outcomes=dict(sorted(self._drill_outcomes.items())),
                campaigns=self._drill_campaigns,
                campaign_notices=self._drill_campaign_notices,
            ),
        )

    def _missed_by_level(self) -> dict[str, int]:
        """Missed ack deadlines (timeouts that caused a repeat or an escalation) per level."""
        m = len(self._rows)
        level, missed = self._w["level"][:m], self._w["missed"][:m]
        return {str(lv): int(missed[level == lv].sum()) for lv in (1, 2, 3, 4)}

    def _per_group(
        self,
        groups: np.ndarray,
        n_groups: int,
        ack: np.ndarray,
        reach: np.ndarray,
        w: Mapping[str, np.ndarray],
    ) -> _Group:
        _, ack_p = group_percentiles(groups, ack, n_groups, QS)
        ack_n = np.bincount(groups[~np.isnan(ack)], minlength=n_groups)
        _, reach_p = group_percentiles(groups, reach, n_groups, QS)
        reach_n = np.bincount(groups[~np.isnan(reach)], minlength=n_groups)
        outcomes = np.zeros((n_groups, len(OUTCOMES)), np.int64)
        ended = w["outcome"] >= 0
        np.add.at(outcomes, (groups[ended], w["outcome"][ended].astype(np.int64)), 1)
        return _Group(
            warnings=np.bincount(groups, minlength=n_groups),
            escalations=np.bincount(groups, weights=w["escalations"], minlength=n_groups),
            outcomes=outcomes,
            ack=(ack_n, ack_p),
            reach=(reach_n, reach_p),
        )


class _Group(NamedTuple):
    """Per-group columns of :meth:`Stats._per_group`, one row per group."""

    warnings: np.ndarray
    escalations: np.ndarray
    outcomes: np.ndarray  # (group, outcome code) counts
    ack: tuple[np.ndarray, np.ndarray]  # (counts, percentiles) of time to acknowledge
    reach: tuple[np.ndarray, np.ndarray]  # (counts, percentiles) of time to reach


# Campaign actions come as objects, and engine.campaigns is in the same layer (no run-time
# import, so no isinstance): the guards tell them apart by their fields.


def _is_send(action: object) -> TypeGuard[ChatSend | SmsSend]:
    """A message to a resident (chat or SMS): only those have a ``priority``."""
    return hasattr(action, "priority")


def _is_confirm(action: object) -> TypeGuard[ConfirmRequest]:
    """An officer's confirm prompt: it alone has ``residents`` (and no ``priority``)."""
    return not hasattr(action, "priority") and hasattr(action, "residents")


def _pct(pair: tuple[np.ndarray, np.ndarray], i: int) -> Percentiles:
    counts, p = pair
    if not counts[i]:
        return Percentiles()
    return Percentiles(int(counts[i]), *(round(float(x), 3) for x in p[i]))
