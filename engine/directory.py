"""Who answers for a warning's target: the seam between the engine and the registry.

The machine is pure, so it cannot ask the registry. The scheduler asks a :class:`Directory` once
at intake and hands the answer (:class:`~engine.model.Responders`) to the machine inside the
event. The real ``Directory`` is :class:`engine.registry.responders.RegistryDirectory`;
:class:`engine.testing.directory.StaticDirectory` serves tests and benchmarks.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.model import Responders, Target


@runtime_checkable
class Directory(Protocol):
    """What the engine needs from the registry. Must not raise for unknown targets."""

    def responders(self, target: Target) -> Responders:
        """Responders for a resident, an area, or a phone number nobody in the registry has."""
        ...

    def resident_by_phone(self, phone: str) -> int | None:
        """The resident who has this phone number, if any."""
        ...
