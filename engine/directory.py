"""Who answers for a warning's target: the seam between the engine and the registry.

The machine is pure, so it cannot ask the registry. The scheduler asks a :class:`Directory` once
at intake and hands the answer (:class:`Responders`) to the machine inside the event. The real
``Directory`` is built over ``engine.registry``; :class:`StaticDirectory` serves tests and the
simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import msgspec

from engine.model import AreaTarget, PhoneTarget, ResidentTarget, Target, describe_target


class Responders(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Everyone the ladders may reach for one target. ``None`` means "not known for this target".

    ``unresolved`` says why something is missing (no personal data): the machine then skips the
    unknown rungs, goes to the station or county level and writes the reason into the timeline.
    """

    county_centre: str
    grid_officer: str | None = None
    duty_officer: str | None = None
    chief: str | None = None
    visitors: tuple[str, ...] = ()
    resident: int | None = None
    grid: str | None = None
    station: str | None = None
    unresolved: str | None = None

    def officer(self, role: str) -> str | None:
        """The officer key for a ladder role (``grid_officer`` ... ``county_centre``)."""
        return getattr(self, role)


@runtime_checkable
class Directory(Protocol):
    """What the engine needs from the registry. Must not raise for unknown targets."""

    def responders(self, target: Target) -> Responders:
        """Responders for a resident, an area, or a phone number nobody in the registry has."""
        ...

    def resident_by_phone(self, phone: str) -> int | None:
        """The resident who has this phone number, if any."""
        ...


class StaticDirectory:
    """A directory from plain mappings, for tests and the simulator.

    ``residents`` and ``areas`` map to ready-made :class:`Responders`; anything not found gets
    ``fallback`` (by default only the county centre) with ``unresolved`` set.
    """

    def __init__(
        self,
        *,
        county_centre: str = "county_centre",
        residents: Mapping[int, Responders] | None = None,
        areas: Mapping[str, Responders] | None = None,
        phones: Mapping[str, int] | None = None,
        fallback: Responders | None = None,
    ) -> None:
        self.county_centre = county_centre
        self.residents = dict(residents or {})
        self.areas = dict(areas or {})
        self.phones = dict(phones or {})
        self.fallback = fallback or Responders(county_centre=county_centre)

    def responders(self, target: Target) -> Responders:
        """Look the target up; unknown targets get the fallback and a reason."""
        found: Responders | None = None
        if isinstance(target, ResidentTarget):
            found = self.residents.get(target.id)
        elif isinstance(target, AreaTarget):
            found = self.areas.get(target.area)
        elif isinstance(target, PhoneTarget):
            rid = self.resident_by_phone(target.phone)
            found = self.residents.get(rid) if rid is not None else None
        if found is not None:
            return found
        return msgspec.structs.replace(
            self.fallback, unresolved=f"{describe_target(target)} not in the directory"
        )

    def resident_by_phone(self, phone: str) -> int | None:
        """Exact match on the stored string (normalising numbers is the registry's job)."""
        return self.phones.get(phone)
