"""The registry as the engine's :class:`~engine.directory.Directory`: who answers for a target.

For a resident: their own contact officer (the person they already chat with), else the
community officer of their grid; the duty officer and chief of their station; and up to three
people who can knock on the door (grid members, then village cadres, from the same grid, then
village). Areas (a grid, village or station key) get that unit's officers. Nothing here raises
for an unknown target: the answer then says why in ``unresolved``, without personal data.
"""

from __future__ import annotations

import numpy as np

from engine.audience.program import Audience
from engine.model import (
    AreaTarget,
    PhoneTarget,
    ResidentTarget,
    Responders,
    Target,
    describe_target,
)
from engine.privacy import phone_digest
from engine.registry.registry import Registry
from engine.registry.units import GRID_ROLES

#: Tags of residents who may be asked to visit a neighbour, in order of preference.
VISITOR_TAGS: tuple[str, ...] = ("grid_member", "village_cadre")
MAX_VISITORS = 3


class RegistryDirectory:
    """Answers :class:`~engine.directory.Directory` questions from a live :class:`Registry`."""

    def __init__(self, registry: Registry, county_centre: str = "county_centre") -> None:
        self.registry = registry
        self.county_centre = county_centre
        self._audiences: dict[tuple[str, str], Audience] = {}
        self._indexed = -1
        self._reindex()

    def _reindex(self) -> None:
        """Per grid its community officer, per station its duty officer and chief (cheap)."""
        reg = self.registry
        if self._indexed == len(reg.officers):
            return
        j = reg.jurisdiction
        self._grid_officer: dict[int, str] = {}
        self._duty: dict[int, str] = {}
        self._chief: dict[int, str] = {}
        for o in reg.officers:
            st = j.index["station"][o.station]
            if o.role == "duty_officer":
                self._duty.setdefault(st, o.key)
            elif o.role == "chief":
                self._chief.setdefault(st, o.key)
            elif o.role in GRID_ROLES:
                for g in o.grids:
                    gi = j.index["grid"][g]
                    # A community officer outranks an auxiliary for the same grid.
                    if o.role == "community_officer" or gi not in self._grid_officer:
                        self._grid_officer[gi] = o.key
        self._indexed = len(reg.officers)

    def _unit(self, grid: int | None, station: int) -> dict[str, object]:
        j = self.registry.jurisdiction
        return {
            "county_centre": self.county_centre,
            "grid_officer": self._grid_officer.get(grid) if grid is not None else None,
            "duty_officer": self._duty.get(station),
            "chief": self._chief.get(station),
            "grid": j.units["grid"][grid].key if grid is not None else None,
            "station": j.units["station"][station].key,
        }

    def _visitors(self, rid: int, grid: int) -> tuple[str, ...]:
        """Neighbours who can go and look: as ``resident:<id>`` keys, never names or phones."""
        reg = self.registry
        j = reg.jurisdiction
        village = j.units["village"][int(j.grid_village[grid])].key
        found: list[int] = []
        for unit in (f"grid:{j.units['grid'][grid].key}", f"village:{village}"):
            for tag in (t for t in VISITOR_TAGS if t in reg.taxonomy):
                audience = self._audiences.get((unit, tag))
                if audience is None:  # compiled once; its program follows later changes
                    audience = self._audiences[(unit, tag)] = reg.audience(f"{unit} & {tag}")
                for i in audience.ids()[: MAX_VISITORS + 1].tolist():
                    if i != rid and i not in found:
                        found.append(i)
                if len(found) >= MAX_VISITORS:
                    return tuple(f"resident:{i}" for i in found[:MAX_VISITORS])
        return tuple(f"resident:{i}" for i in found)

    def responders(self, target: Target) -> Responders:
        """Responders for a resident, a phone number or an area; never raises."""
        self._reindex()
        reg = self.registry
        if isinstance(target, PhoneTarget):
            rid = self.resident_by_phone(target.phone)
            if rid is None:
                return self._unresolved(target, "is not in the registry")
            target = ResidentTarget(id=rid)
        if isinstance(target, ResidentTarget):
            rid = target.id
            if not reg.is_live(rid):
                return self._unresolved(target, "is not a live resident")
            grid = int(reg.grid[rid])
            station = int(reg.jurisdiction.grid_station[grid])
            fields = self._unit(grid, station)
            contact = int(reg.officer[rid])
            if contact >= 0:
                fields["grid_officer"] = reg.officers[contact].key
            household = phone_digest(reg.phone[rid]) if reg.phone[rid] else None
            return Responders(
                resident=rid,
                visitors=self._visitors(rid, grid),
                household=household,
                **fields,  # type: ignore[arg-type]
            )
        assert isinstance(target, AreaTarget)
        j = reg.jurisdiction
        key = target.area.split(":", 1)[-1]
        if key in j.index["grid"]:
            grid = j.index["grid"][key]
            return Responders(**self._unit(grid, int(j.grid_station[grid])))  # type: ignore[arg-type]
        if key in j.index["village"]:
            village = j.index["village"][key]
            grid = int(np.flatnonzero(j.grid_village == village)[0])
            fields = self._unit(grid, int(j.village_station[village]))
            fields["grid"] = None  # the whole village: its first grid's officer answers
            return Responders(**fields)  # type: ignore[arg-type]
        if key in j.index["station"]:
            return Responders(**self._unit(None, j.index["station"][key]))  # type: ignore[arg-type]
        return self._unresolved(target, "is not a known grid, village or station")

    def _unresolved(self, target: Target, why: str) -> Responders:
        return Responders(
            county_centre=self.county_centre, unresolved=f"{describe_target(target)} {why}"
        )

    def resident_by_phone(self, phone: str) -> int | None:
        """The live resident with this number (the lowest id if a household shares it)."""
        found = self.registry.find_by_phone(phone)
        return found[0] if found else None
