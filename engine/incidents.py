"""Incidents: warnings that join another's ladder (correlation, inhibition), and area alerts.

Why a layer between the pure machine and the shell: the machine sees one warning at a time, but
"three warnings about one resident within half an hour are one incident" is a fact about several.
:class:`Correlator` decides, at intake, whether a warning joins an incident (its index of open
incidents is rebuilt from the states after a restart). The decision is journaled with the intake
(:class:`engine.durability.Accepted`), and :func:`apply` turns one input into the steps of every
warning it touches (the joining one, the incident's first warning, and at the end every linked
one), so the live loop and the replay after a crash run the very same code.

Keys, from ``rules/correlation.toml``: ``resident`` (the registry id), ``phone`` (a digest of a
phone target's number) and ``household`` (a digest of the resident's phone, which a household
shares; the registry has no other household id). Phone and household keys meet: a call about a
number and a warning about the resident who has it are one incident. Exercises never join real
warnings, nor count toward area alerts.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import msgspec

from engine.machine import (
    Event,
    IncidentEnded,
    Intake,
    Joined,
    Link,
    LinkWhy,
    Tick,
    WarningState,
    step,
)
from engine.model import Action, AreaTarget, PhoneTarget, Responders, WarningInstruction
from engine.privacy import phone_digest
from engine.rules.correlation import CorrelationRules
from engine.rules.escalation import EscalationRules
from engine.rules.loading import RuleError

Change = tuple[str, "WarningState | None", WarningState, tuple[Action, ...], "float | None"]
"""One warning stepped: id, state before, state after, its actions, its next deadline."""

MAX_SOURCES: Final = 1000
"""Warnings one incident may absorb; more start incidents of their own (a runaway feed must not
grow one state without bound)."""


class Decision(msgspec.Struct, frozen=True, gc=False):
    """What intake decided for one warning (journaled with it)."""

    incident: str | None = None
    why: LinkWhy = "correlated"
    area_alert: bool = False


ALONE: Final = Decision()
_ALERT_ONLY: Final = Decision(area_alert=True)


Key = int | str
"""A correlation key: a resident id (an int: cheaper than a string, and never equal to one),
or ``p`` + a phone digest for a phone number or a household."""


def _alone(alert: bool) -> Decision:
    return _ALERT_ONLY if alert else ALONE


def _keys(rules: CorrelationRules, warning: WarningInstruction, r: Responders) -> tuple[Key, ...]:
    inc = rules.incidents
    if inc is None:
        return ()
    keys: list[Key] = []
    if "resident" in inc.by and r.resident is not None:
        keys.append(r.resident)
    if "phone" in inc.by and isinstance(warning.target, PhoneTarget):
        keys.append(f"p{phone_digest(warning.target.phone)}")
    if "household" in inc.by and r.household is not None:
        key = f"p{r.household}"
        if key not in keys:
            keys.append(key)
    return tuple(keys)


class Correlator:
    """The shell's index of open incidents and of recent warnings per grid. Deterministic: the
    same intakes at the same times give the same decisions."""

    def __init__(self, rules: CorrelationRules) -> None:
        self.rules = rules
        # key -> the first warning of its open incident; one expiry entry per warning (not
        # per key) for pruning: an index held for every warning of the last window_s.
        self._open: dict[Key, str] = {}
        self._expiry: deque[tuple[float, str, tuple[Key, ...]]] = deque()
        self._areas: dict[str, list[tuple[str, str]]] = {}  # grid -> [(area warning, kind)]
        self._recent: dict[str, deque[float]] = {}  # grid -> intake times (area alerts)
        self._alerted: dict[str, float] = {}  # grid -> last area alert

    def decide(
        self,
        warning: WarningInstruction,
        responders: Responders,
        now: float,
        states: Mapping[str, WarningState],
    ) -> Decision:
        """Decide for a warning about to be applied, and remember it for later ones."""
        old = states.get(warning.id)
        if old is not None:  # an update of a linked warning goes on to its incident
            if old.status == "linked" and old.incident and warning.msg_type == "update":
                return Decision(old.incident, "correlated")
            return ALONE
        if not self.rules.active or warning.msg_type == "cancel" or warning.status == "exercise":
            return ALONE
        rules = self.rules
        alert = self._count_for_area(warning, responders, now)
        if isinstance(warning.target, AreaTarget):
            if responders.grid is not None:
                self._areas.setdefault(responders.grid, []).append((warning.id, warning.kind))
            return _alone(alert)
        if rules.inhibit and responders.grid is not None:
            for wid, kind in self._live_areas(responders.grid, states):
                if rules.inhibits(kind, warning.kind) and _room(states, wid):
                    return Decision(wid, "inhibited", alert)
        inc = rules.incidents
        if inc is None or warning.kind not in inc.kinds:
            return _alone(alert)
        self._prune(now - inc.window_s)
        keys = _keys(rules, warning, responders)
        best: tuple[float, str] | None = None
        for key in keys:
            first = self._open.get(key)
            if first is None:
                continue
            s = states.get(first)
            if s is None or s.status != "active" or not s.timeline:
                continue
            started = s.timeline[0].at  # the intake: a state's first line
            if now - started > inc.window_s:
                continue
            if len(s.sources) < MAX_SOURCES and (best is None or started < best[0]):
                best = (started, first)
        if best is not None:
            return Decision(best[1], "correlated", alert)
        if keys:
            for key in keys:
                self._open[key] = warning.id
            self._expiry.append((now, warning.id, keys))
        return _alone(alert)

    def _live_areas(self, grid: str, states: Mapping[str, WarningState]) -> list[tuple[str, str]]:
        areas = self._areas.get(grid)
        if not areas:
            return []
        live = [
            (w, k) for w, k in areas if (s := states.get(w)) is not None and s.status == "active"
        ]
        if len(live) != len(areas):
            if live:
                self._areas[grid] = live
            else:
                del self._areas[grid]
        return live

    def _count_for_area(
        self, warning: WarningInstruction, responders: Responders, now: float
    ) -> bool:
        area = self.rules.area_alert
        grid = responders.grid
        if area is None or grid is None or warning.kind not in area.kinds:
            return False
        if isinstance(warning.target, AreaTarget):
            return False
        times = self._recent.setdefault(grid, deque())
        times.append(now)
        while times and times[0] <= now - area.window_s:
            times.popleft()
        if len(times) < area.threshold:
            return False
        last = self._alerted.get(grid)
        if last is not None and now - last < area.cooldown_s:
            return False
        self._alerted[grid] = now
        return True

    def _prune(self, before: float) -> None:
        q = self._expiry
        while q and q[0][0] < before:
            _, wid, keys = q.popleft()
            for key in keys:
                if self._open.get(key) == wid:
                    del self._open[key]

    def restore(self, states: Mapping[str, WarningState], now: float) -> None:
        """Rebuild the index from the states after a restart: open incidents whose first
        warning is active and began within the window, active area warnings, and recent
        intakes per grid (for area alerts)."""
        inc, area = self.rules.incidents, self.rules.area_alert
        started = sorted(
            (s.timeline[0].at if s.timeline else now, wid)
            for wid, s in states.items()
            if s.warning.status != "exercise" and s.warning.msg_type != "cancel"
        )
        for at, wid in started:
            s = states[wid]
            w, r = s.warning, s.responders
            recent = area is not None and at > now - area.window_s and w.kind in area.kinds
            if recent and r.grid is not None and not isinstance(w.target, AreaTarget):
                self._recent.setdefault(r.grid, deque()).append(at)
            if s.status != "active":
                continue
            if isinstance(w.target, AreaTarget):
                if r.grid is not None:
                    self._areas.setdefault(r.grid, []).append((wid, w.kind))
                continue
            if inc is not None and w.kind in inc.kinds and at > now - inc.window_s:
                keys = _keys(self.rules, w, r)
                for key in keys:
                    self._open.setdefault(key, wid)
                if keys:
                    self._expiry.append((at, wid, keys))

    @property
    def tracked(self) -> int:
        """Keys of open incidents held (for metrics and memory checks)."""
        return len(self._open)


def _active(states: Mapping[str, WarningState], wid: str) -> bool:
    s = states.get(wid)
    return s is not None and s.status == "active"


def _room(states: Mapping[str, WarningState], wid: str) -> bool:
    s = states.get(wid)
    return s is not None and s.status == "active" and len(s.sources) < MAX_SOURCES


def area_alert_action(
    warning: WarningInstruction, responders: Responders, rules: CorrelationRules
) -> Action:
    """The alert for the grid's officer (the county centre if the grid has none). Its key is
    per warning, so a replay after a crash repeats it with the same key."""
    area = rules.area_alert
    assert area is not None
    grid = responders.grid
    return Action(
        key=f"{warning.id}/area/{grid}",
        warning_id=warning.id,
        action="area_alert",
        to=responders.grid_officer or responders.county_centre,
        kind=warning.kind,
        level=warning.level,
        reason=(
            f"{area.threshold} or more {warning.kind} warnings in grid {grid} within "
            f"{area.window_s / 60:g} min"
        ),
        cause="linked",
    )


def area_campaign(action: Action, rules: CorrelationRules, now: float) -> bytes | None:
    """The urgent campaign an area alert starts (``[area_alert.campaign]``), as the JSON the
    campaigns stream takes, or None without one. Its id ``area-{grid}-{warning id}`` is the
    same when a replay repeats the alert, so the campaign is never issued twice."""
    area = rules.area_alert
    if action.action != "area_alert" or area is None or area.campaign is None:
        return None
    grid = action.key.rpartition("/area/")[2]
    if not grid or grid == "None":
        return None
    c = area.campaign
    expires = datetime.fromtimestamp(now + c.expires_after_s, UTC)
    return msgspec.json.encode(
        {
            "id": _area_campaign_id(grid, action.warning_id),
            "title": c.title,
            "text": c.text,
            "audience": f"({c.audience}) & grid:{grid}",
            "priority": "urgent",
            "issuer": "area-alert",
            "category": c.category,
            "expires_at": expires.isoformat(),
        }
    )


def _area_campaign_id(grid: str, warning_id: str) -> str:
    """A campaign id (64 printable characters at most, no '/') for the alert's grid and
    warning: readable when it fits, a digest of the warning id when it does not."""
    ident = _NOT_IN_IDS.sub("_", f"area-{grid}-{warning_id}")
    if len(ident) <= 64:
        return ident
    digest = hashlib.blake2b(warning_id.encode(), digest_size=8).hexdigest()
    return _NOT_IN_IDS.sub("_", f"area-{grid}")[:47] + "-" + digest


_NOT_IN_IDS: Final = re.compile(r"[^A-Za-z0-9_.:-]")
"""Characters a campaign id may not hold (:data:`engine.campaigns.campaign.CampaignId`)."""


class RuleBook:
    """The rules in force, and the ladders that running warnings started with.

    A reload (SIGHUP) installs a new generation. With ``running_warnings = "keep"`` (the
    default) a warning goes on with the ladders of the generation it started under; rosters,
    silences and correlation are always the newest (a silence added for an officer's leave is
    meant for the warnings running now). With ``"adopt"`` every warning takes the new ladders
    at its next step. Generations no running warning uses are dropped at the next reload.
    After a restart every warning runs the rules loaded at start (the journal holds inputs,
    not rules).
    """

    def __init__(self, rules: EscalationRules) -> None:
        self.current = rules
        self.generation = 0
        self._kept: dict[int, EscalationRules] = {0: rules}

    def for_state(self, state: WarningState | None) -> EscalationRules:
        """The rules that step this warning."""
        if state is None:
            return self.current
        return self._kept.get(state.generation, self.current)

    def install(self, new: EscalationRules, states: Mapping[str, WarningState]) -> None:
        """Make ``new`` the rules in force. Raises RuleError (nothing changed) if ``adopt``
        would leave a running warning with a kind the new rules do not define."""
        active = [s for s in states.values() if s.status == "active"]
        if new.running_warnings == "adopt":
            for s in active:
                if s.warning.kind not in new.kinds:
                    raise RuleError(
                        new.source,
                        f"kinds.{s.warning.kind}",
                        'a kind for every running warning (running_warnings = "adopt" moves '
                        "them to the new ladders)",
                    )
            kept: dict[int, EscalationRules] = {}
        else:
            shared = {"rosters": new.rosters, "silences": new.silences}
            kept = {
                g: msgspec.structs.replace(
                    self._kept.get(g, self.current), correlation=new.correlation, **shared
                )
                for g in {s.generation for s in active}
            }
        self.generation += 1
        kept[self.generation] = new
        self._kept = kept
        self.current = new

    def resume(self, states: Mapping[str, WarningState]) -> None:
        """After a restart: number on from the highest generation the states carry, so a
        later reload never reuses a number an older warning holds (those run the rules loaded
        at start)."""
        g = max((s.generation for s in states.values()), default=0)
        self.generation = g
        self._kept = {g: self.current}

    @property
    def generations(self) -> int:
        """Rule generations held (the current one and those running warnings still use)."""
        return len(self._kept)


def apply(
    states: Mapping[str, WarningState],
    wid: str,
    event: Event,
    now: float,
    rules: EscalationRules | RuleBook,
    decision: Decision = ALONE,
) -> list[Change] | None:
    """Every step one input causes, in order; ``states`` is not changed (the caller applies the
    changes). None: the input is for a warning nobody knows (late feedback)."""
    book = rules if isinstance(rules, RuleBook) else None
    changes: list[Change] = []
    overlay: dict[str, WarningState] = {}

    def run(w: str, ev: Event) -> WarningState | None:
        old = overlay.get(w) or states.get(w)
        r = book.for_state(old) if book is not None else rules
        new, actions, deadline = step(old, ev, now, r)  # type: ignore[arg-type]
        if new is None:
            return None
        overlay[w] = new
        changes.append((w, old, new, actions, deadline))
        return new

    if isinstance(event, Intake) and decision.incident is not None:
        if wid not in states:
            run(wid, Joined(event, decision.incident, decision.why))
        run(decision.incident, Link(event, decision.why))
        return changes
    target = wid
    if not isinstance(event, Intake | Tick):
        s = states.get(wid)
        if s is not None and s.status == "linked" and s.incident is not None:
            target = s.incident  # feedback about a joined warning works the incident
    if run(target, event) is None:
        return None
    # An incident's first warning ended: every warning linked to it ends the same way.
    for w, old, new, _, _ in list(changes):
        if old is not None and old.status == "active" and new.status != "active" and new.sources:
            ended = IncidentEnded(w, new.status, new.outcome)
            for src in new.sources:
                s = overlay.get(src) or states.get(src)
                if s is not None and s.status == "linked" and s.incident == w:
                    run(src, ended)
    return changes
