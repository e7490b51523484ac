"""Correlation, inhibition and exercises (``rules/correlation.toml``): loaded and validated.

Why one file for three things: each decides, at intake, what a warning joins or where its
actions go, before any ladder runs; an operator tuning "how many calls from one fraud ring make
an area alert" reads the neighbouring rules too. Every problem raises
:class:`~engine.rules.loading.RuleError` with the file, the dotted key and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from engine.model import KIND_PATTERN
from engine.rules.loading import RuleError, convert, load_rule_file

Key = Literal["resident", "phone", "household"]
KindName = Annotated[str, msgspec.Meta(pattern=KIND_PATTERN)]
Window = Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)]


class Incidents(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Warnings of ``kinds`` about one resident, phone or household arriving within
    ``window_s`` of the first become one incident: one ladder, the most urgent level."""

    window_s: Window = 1800.0
    kinds: tuple[KindName, ...] = ("fraud", "help_request")
    by: tuple[Key, ...] = ("resident", "phone", "household")


class AreaCampaign(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The urgent campaign an area alert starts: to ``audience`` within the grid."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    audience: Annotated[str, msgspec.Meta(min_length=1, max_length=400)] = "all"
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "antifraud"
    expires_after_s: Window = 6 * 3600.0


class AreaAlert(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``threshold`` warnings of ``kinds`` in one grid within ``window_s`` (one fraud ring
    calling a village) alert the grid's officer once per ``cooldown_s``; with ``campaign``,
    an urgent campaign to the grid starts too."""

    threshold: Annotated[int, msgspec.Meta(ge=2, le=10_000)] = 5
    window_s: Window = 600.0
    cooldown_s: Window = 3600.0
    kinds: tuple[KindName, ...] = ("fraud",)
    campaign: AreaCampaign | None = None


class Inhibit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """While an area-wide warning of ``source_kind`` is active for a grid, a per-resident
    warning of ``target_kind`` in that grid joins it instead of pushing the same hazard again."""

    source_kind: KindName
    target_kind: KindName


class Exercise(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where an exercise's actions go instead of the real recipients (officer keys)."""

    recipients: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] = ("county_centre",)


class CorrelationRules(msgspec.Struct, frozen=True):
    """All of ``rules/correlation.toml``. ``incidents``/``area_alert`` None: switched off."""

    incidents: Incidents | None = Incidents()
    area_alert: AreaAlert | None = AreaAlert()
    inhibit: tuple[Inhibit, ...] = ()
    exercise: Exercise = Exercise()
    source: str = "<memory>"

    @property
    def active(self) -> bool:
        """Anything to decide at intake (incidents, area alerts or inhibition switched on)."""
        return self.incidents is not None or self.area_alert is not None or bool(self.inhibit)

    def inhibits(self, source_kind: str, target_kind: str) -> bool:
        """Does an active area warning of ``source_kind`` absorb a ``target_kind`` warning?"""
        return any(
            i.source_kind == source_kind and i.target_kind == target_kind for i in self.inhibit
        )


NO_CORRELATION: Final = CorrelationRules(incidents=None, area_alert=None)
"""Nothing correlated (an embedding that wants every warning on its own ladder)."""


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    incidents: dict[str, Any] | None = None
    area_alert: dict[str, Any] | None = None
    inhibit: list[dict[str, Any]] = []
    exercise: dict[str, Any] | None = None


def load_correlation(
    path: str | Path | None = None, *, kinds: frozenset[str] | None = None
) -> CorrelationRules:
    """Load and validate a correlation file (default: the shipped ``rules/correlation.toml``).

    ``kinds``: the kinds the escalation rules define; a kind named here must be one of them."""
    file, raw = load_rule_file(path, "correlation.toml", _File)
    incidents = (
        convert(raw.incidents, Incidents, file, "incidents") if raw.incidents is not None else None
    )
    area = (
        convert(raw.area_alert, AreaAlert, file, "area_alert")
        if raw.area_alert is not None
        else None
    )
    inhibit = tuple(
        convert(body, Inhibit, file, f"inhibit[{i}]") for i, body in enumerate(raw.inhibit)
    )
    exercise = (
        convert(raw.exercise, Exercise, file, "exercise")
        if raw.exercise is not None
        else Exercise()
    )
    if kinds is not None:
        named = [("incidents.kinds", k) for k in (incidents.kinds if incidents else ())]
        named += [("area_alert.kinds", k) for k in (area.kinds if area else ())]
        for i, rule in enumerate(inhibit):
            named += [(f"inhibit[{i}].source_kind", rule.source_kind)]
            named += [(f"inhibit[{i}].target_kind", rule.target_kind)]
        for key, kind in named:
            if kind not in kinds:
                known = ", ".join(sorted(kinds))
                raise RuleError(file, key, f"a kind of the escalation rules ({known})")
    return CorrelationRules(
        incidents=incidents, area_alert=area, inhibit=inhibit, exercise=exercise, source=str(file)
    )
