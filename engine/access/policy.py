"""Who may see and do what: roles and jurisdiction, as pure functions (issue 13's foundation).

Why pure functions over the engine's own structs: the same decision must hold for every door
(an HTTP endpoint, the live console, a CLI), and a function of ``(principal, state)`` can be
tested exhaustively with hypothesis without a server. The HTTP layer calls these and nothing
else to decide; it never filters by itself.

The roles, from the issue:

- ``centre`` (warning-centre duty staff): everything, county-wide.
- ``chief`` (a station chief): what concerns their station.
- ``officer`` (a grid officer or auxiliary): their own grids and residents. They may
  acknowledge and report outcomes only on warnings they were asked to act on (they are in the
  warning's ``notified`` list).
- ``admin`` (county admin): campaigns and statistics; no warnings, no residents.

A decision that says no never says why in terms of the data (no "that warning belongs to
station 03"): the HTTP layer answers 404 for what the caller may not see, so existence itself
does not leak.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.machine import WarningState
from engine.privacy import mask_name, mask_phone
from engine.registry.registry import Registry
from engine.registry.units import Officer

__all__ = [
    "ACT_KINDS",
    "ROLES",
    "ActKind",
    "Principal",
    "Role",
    "Scope",
    "may_act",
    "may_campaign",
    "may_confirm_task",
    "may_submit",
    "principal_for",
    "resident_fields",
    "resident_visible",
    "stats_scope",
    "warning_visible",
]

Role = Literal["centre", "chief", "officer", "admin"]
ROLES: tuple[Role, ...] = ("centre", "chief", "officer", "admin")

ActKind = Literal["ack", "call", "read", "visit", "outcome"]
ACT_KINDS: tuple[ActKind, ...] = ("ack", "call", "read", "visit", "outcome")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is asking: a role, and for scoped roles where they stand.

    ``subject``: the officer key (officer), the station key (chief), else None.
    ``station`` and ``grids``: the jurisdiction, resolved from the registry at sign-in, so a
    decision never needs the registry's officer table again.
    """

    role: Role
    subject: str | None = None
    station: str | None = None
    grids: frozenset[str] = frozenset()
    token_id: str = ""


class Scope(msgspec.Struct, frozen=True):
    """Which statistics rows a principal may read: the county, a station or one officer."""

    level: Literal["county", "station", "officer", "none"]
    key: str | None = None


def principal_for(
    role: Role, subject: str | None, registry: Registry, token_id: str = ""
) -> Principal:
    """Resolve a token's role and subject against the registry; ValueError if the subject does
    not fit the role (an officer key for ``officer``, a station key for ``chief``)."""
    if role in ("centre", "admin"):
        if subject is not None:
            raise ValueError(f"role {role} takes no subject, not {subject!r}")
        return Principal(role=role, token_id=token_id)
    if subject is None:
        raise ValueError(f"role {role} needs a subject ({_SUBJECT[role]})")
    if role == "chief":
        if subject not in registry.jurisdiction.index["station"]:
            raise ValueError(f"subject: no station {subject!r} in the registry")
        return Principal(role=role, subject=subject, station=subject, token_id=token_id)
    index = registry.officer_index.get(subject)
    if index is None:
        raise ValueError(f"subject: no officer {subject!r} in the registry")
    officer: Officer = registry.officers[index]
    return Principal(
        role=role,
        subject=subject,
        station=officer.station,
        grids=frozenset(officer.grids),
        token_id=token_id,
    )


_SUBJECT = {"chief": "a station key", "officer": "an officer key"}


def warning_visible(p: Principal, state: WarningState) -> bool:
    """May ``p`` see this warning (its state and timeline)?"""
    if p.role == "centre":
        return True
    if p.role == "admin":
        return False
    r = state.responders
    if p.role == "chief":
        return r.station is not None and r.station == p.station
    return (
        p.subject in state.notified
        or p.subject == state.acked_by
        or p.subject == r.grid_officer
        or (r.grid is not None and r.grid in p.grids)
    )


def may_act(p: Principal, state: WarningState, kind: ActKind) -> bool:
    """May ``p`` report ``kind`` on this warning? Officers: only once asked to act on it
    (notified); chiefs: on their station's warnings; the centre: always."""
    if p.role == "centre":
        return True
    if p.role == "chief":
        return warning_visible(p, state)
    if p.role == "officer":
        return p.subject in state.notified
    return False


def may_submit(p: Principal) -> bool:
    """Submitting warnings is the warning centre's."""
    return p.role == "centre"


def may_campaign(p: Principal) -> bool:
    """Issuing, confirming for others and cancelling campaigns: admins and the centre.
    (An officer confirms their own task through :func:`may_confirm_task`.)"""
    return p.role in ("admin", "centre")


def may_confirm_task(p: Principal, task_officer: str) -> bool:
    """An officer confirms their own routine task; admins and the centre any task."""
    return may_campaign(p) or (p.role == "officer" and p.subject == task_officer)


def resident_visible(p: Principal, registry: Registry, rid: int) -> bool:
    """May ``p`` look this resident up at all?"""
    if not registry.is_live(rid) or p.role == "admin":
        return False
    if p.role == "centre":
        return True
    j = registry.jurisdiction
    grid = int(registry.grid[rid])
    if p.role == "chief":
        return j.units["station"][int(j.grid_station[grid])].key == p.station
    return registry.view_for(p.subject or "").can_see(rid)


def resident_fields(
    p: Principal, registry: Registry, rid: int, *, acting_on: WarningState | None = None
) -> dict[str, str]:
    """A visible resident's name and phone, masked unless ``p`` is an officer who needs them
    to act: asked to act on ``acting_on``, a warning about this very resident."""
    name, phone = str(registry.name[rid]), str(registry.phone[rid])
    acting = (
        acting_on is not None
        and p.role == "officer"
        and acting_on.responders.resident == rid
        and p.subject in acting_on.notified
    )
    if acting:
        return {"name": name, "phone": phone}
    return {"name": mask_name(name), "phone": mask_phone(phone)}


def stats_scope(p: Principal) -> Scope:
    """The statistics ``p`` may read: county (centre, admin), station (chief), own row."""
    if p.role in ("centre", "admin"):
        return Scope("county")
    if p.role == "chief":
        return Scope("station", p.station)
    return Scope("officer", p.subject)
