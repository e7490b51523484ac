"""The jurisdiction tree (county > station > village/community > grid) and the officers in it."""

from __future__ import annotations

import difflib
from typing import Literal

import msgspec
import numpy as np

from engine.errors import WarnDispatchError

UnitKind = Literal["station", "village", "grid"]
Role = Literal["community_officer", "auxiliary", "duty_officer", "chief"]

#: Roles that have residents as chat contacts and answer for grids.
GRID_ROLES: frozenset[str] = frozenset({"community_officer", "auxiliary"})


class Unit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A station, village/community or grid. ``parent`` is the key of the enclosing unit."""

    key: str
    name: str
    parent: str = ""


class Officer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A police officer or auxiliary. Grid roles answer for ``grids``; others for the station."""

    key: str
    name: str
    role: Role
    station: str
    grids: tuple[str, ...] = ()


FAMILIES: tuple[str, ...] = ("tag", "station", "village", "grid", "officer")
"""The kinds of set the registry indexes residents by, in snapshot order."""


class RegistryError(WarnDispatchError, ValueError):
    """A registry operation was given something that does not exist or does not fit."""


def suggest(word: str, keys: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Closest keys to ``word``: prefix matches first, then similar spellings."""
    prefix = [k for k in keys if k.startswith(word)][:n] if word else []
    close = difflib.get_close_matches(word, keys, n=n, cutoff=0.6)
    return list(dict.fromkeys(prefix + close))[:n]


class Jurisdiction:
    """Stations, villages and grids, with dense integer indexes and parent maps as arrays.

    ``grid_village[g]`` and ``village_station[v]`` let a resident's grid index give its village
    and station in one vectorised step.
    """

    def __init__(
        self,
        stations: list[Unit],
        villages: list[Unit],
        grids: list[Unit],
        county: str = "county",
    ) -> None:
        self.county = county
        self.units: dict[UnitKind, list[Unit]] = {
            "station": list(stations),
            "village": list(villages),
            "grid": list(grids),
        }
        self.index: dict[UnitKind, dict[str, int]] = {}
        for kind, units in self.units.items():
            idx: dict[str, int] = {}
            for i, u in enumerate(units):
                if u.key in idx:
                    raise RegistryError(f"duplicate {kind} key {u.key!r}")
                idx[u.key] = i
            self.index[kind] = idx
        self.village_station = self._parents("village", "station")
        self.grid_village = self._parents("grid", "village")
        self.grid_station = self.village_station[self.grid_village]

    def _parents(self, kind: UnitKind, parent_kind: UnitKind) -> np.ndarray:
        parents = self.index[parent_kind]
        out = np.empty(len(self.units[kind]), dtype=np.int32)
        for i, u in enumerate(self.units[kind]):
            if u.parent not in parents:
                raise RegistryError(
                    f"{kind} {u.key!r} names parent {parent_kind} {u.parent!r}, which does not"
                    " exist"
                )
            out[i] = parents[u.parent]
        return out

    def find(self, kind: UnitKind, key: str) -> int:
        """Index of a unit; an unknown key raises with the closest keys."""
        try:
            return self.index[kind][key]
        except KeyError:
            close = suggest(key, list(self.index[kind]))
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RegistryError(f"unknown {kind} {key!r}{hint}") from None

    def __len__(self) -> int:
        return sum(len(v) for v in self.units.values())
