"""A :class:`~engine.directory.Directory` from plain mappings, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from engine.model import (
    AreaTarget,
    PhoneTarget,
    ResidentTarget,
    Responders,
    Target,
    describe_target,
)


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
