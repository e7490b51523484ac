"""The resident registry: who lives where, with which tags, and which officer has them as a contact.

Residents get dense integer ids in the order they are added; removal marks an id dead and never
shifts another. Ids given out grid by grid keep each grid's bitsets to a chunk or two (see
``engine.audience.bitset``), so bulk importers should add residents sorted by grid.

Every mutation validates all of its input before changing anything: a bad call changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from engine.audience.bitset import DEFAULT_CHUNK_WORDS, WORD_BITS, ChunkedBitset
from engine.audience.expr import AudienceError, Tag, Unit
from engine.audience.program import Audience, Disj, Evaluator, Leaf, PlanNode, compile_text
from engine.privacy import mask_name, mask_phone, normalize_phone
from engine.registry import snapshot
from engine.registry.columns import KeyIndex, StrColumn, encode_all, grown
from engine.registry.units import (
    GRID_ROLES,
    Jurisdiction,
    Officer,
    RegistryError,
    suggest,
)

if TYPE_CHECKING:
    from engine.rules.taxonomy import Taxonomy


class UnknownNameError(AudienceError):
    """An expression names a tag, unit or officer that does not exist; carries suggestions."""

    def __init__(self, kind: str, name: str, suggestions: list[str], expr: str, pos: int) -> None:
        self.kind = kind
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown {kind} {name!r}{hint}", expr, pos, safe=f"unknown {kind}{hint}")


class Resident(msgspec.Struct, frozen=True):
    """One resident as seen from outside. ``repr`` masks personal data so it is safe to log."""

    id: int
    ext_id: str
    name: str
    phone: str
    address: str
    grid: str
    village: str
    station: str
    officer: str | None
    tags: tuple[str, ...]

    def __repr__(self) -> str:
        return (
            f"Resident(id={self.id}, ext_id={self.ext_id!r}, name={mask_name(self.name)!r}, "
            f"phone={mask_phone(self.phone)!r}, grid={self.grid!r}, officer={self.officer!r}, "
            f"tags={self.tags!r})"
        )

    __str__ = __repr__


class Registry:
    """Residents, the jurisdiction tree, officers, and the audience bitsets over them."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        jurisdiction: Jurisdiction,
        officers: Iterable[Officer],
        *,
        chunk_words: int = DEFAULT_CHUNK_WORDS,
    ) -> None:
        self.taxonomy = taxonomy
        self.jurisdiction = jurisdiction
        self.chunk_words = chunk_words
        self.chunk_bits = chunk_words * WORD_BITS
        self.n_ids = 0
        self.alive = np.zeros(0, dtype=np.bool_)
        self.grid = np.zeros(0, dtype=np.int32)
        self.officer = np.zeros(0, dtype=np.int32)
        self.ext_id = StrColumn()
        self.name = StrColumn()
        self.phone = StrColumn()
        self.address = StrColumn()
        self._by_ext = KeyIndex(self.ext_id)
        self._by_phone = KeyIndex(self.phone)
        self.live = ChunkedBitset(chunk_words, 1)
        self.sets: dict[str, list[ChunkedBitset]] = {
            "tag": [self._new_set() for _ in taxonomy.keys],
            "station": [self._new_set() for _ in jurisdiction.units["station"]],
            "village": [self._new_set() for _ in jurisdiction.units["village"]],
            "grid": [self._new_set() for _ in jurisdiction.units["grid"]],
            "officer": [],
        }
        self.officers: list[Officer] = []
        self.officer_index: dict[str, int] = {}
        for officer in officers:
            self.add_officer(officer)
        self._evaluator = Evaluator(self.live)

    # -- structure ----------------------------------------------------------------------------
    def _new_set(self) -> ChunkedBitset:
        return ChunkedBitset(self.chunk_words, self.live.slot.size)

    def add_officer(self, officer: Officer) -> int:
        """Register an officer; their station and grids must exist and agree."""
        if officer.key in self.officer_index:
            raise RegistryError(f"duplicate officer key {officer.key!r}")
        station = self.jurisdiction.find("station", officer.station)
        for g in officer.grids:
            gi = self.jurisdiction.find("grid", g)
            if self.jurisdiction.grid_station[gi] != station:
                raise RegistryError(
                    f"officer {officer.key!r} is at station {officer.station!r} but grid {g!r}"
                    " belongs to another station"
                )
        if officer.role in GRID_ROLES and not officer.grids:
            raise RegistryError(f"officer {officer.key!r} has role {officer.role} but no grids")
        self.officer_index[officer.key] = len(self.officers)
        self.officers.append(officer)
        self.sets["officer"].append(self._new_set())
        return len(self.officers) - 1

    def find_officer(self, key: str) -> int:
        try:
            return self.officer_index[key]
        except KeyError:
            close = suggest(key, list(self.officer_index))
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RegistryError(f"unknown officer {key!r}{hint}") from None

    def _covers(self, officer: int, grid: int) -> bool:
        """Whether an officer's jurisdiction includes a grid."""
        o = self.officers[officer]
        if o.grids:
            return self.jurisdiction.units["grid"][grid].key in o.grids
        station = self.jurisdiction.index["station"][o.station]
        return bool(self.jurisdiction.grid_station[grid] == station)

    def _all_sets(self) -> Iterable[ChunkedBitset]:
        yield self.live
        for family in self.sets.values():
            yield from family

    def _ensure_ids(self, n: int) -> None:
        """Room for ids below ``n`` in columns and bitsets (amortised doubling)."""
        self.alive = grown(self.alive, n, False)
        self.grid = grown(self.grid, n, -1)
        self.officer = grown(self.officer, n, -1)
        for col in (self.ext_id, self.name, self.phone, self.address):
            col.reserve(n)
        chunks = -(-n // self.chunk_bits)
        if chunks > self.live.slot.size:
            new_size = max(chunks, 2 * self.live.slot.size)
            for s in self._all_sets():
                s.grow(new_size)

    # -- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Live residents."""
        return int(np.count_nonzero(self.alive[: self.n_ids]))

    def is_live(self, rid: int) -> bool:
        return 0 <= rid < self.n_ids and bool(self.alive[rid])

    def _check(self, rid: int) -> None:
        if not self.is_live(rid):
            raise RegistryError(f"no live resident with id {rid}")

    def lookup(self, ext_id: str) -> int:
        """Dense id of the live resident with this external id."""
        found = self._by_ext.find(ext_id.encode("utf-8"), self.alive)
        if not found:
            raise RegistryError(f"no live resident with external id {ext_id!r}")
        return found[0]

    def find_by_phone(self, phone: str) -> list[int]:
        """Live residents with this phone number (a household may share one)."""
        return self._by_phone.find(normalize_phone(phone).encode(), self.alive)

    def tags_of(self, rid: int) -> tuple[str, ...]:
        self._check(rid)
        keys = self.taxonomy.keys
        return tuple(keys[i] for i, s in enumerate(self.sets["tag"]) if rid in s)

    def has_tag(self, rid: int, key: str) -> bool:
        return rid in self.sets["tag"][self._tag(key)]

    def resident(self, rid: int) -> Resident:
        self._check(rid)
        units = self.jurisdiction.units
        g = int(self.grid[rid])
        v = int(self.jurisdiction.grid_village[g])
        st = int(self.jurisdiction.village_station[v])
        o = int(self.officer[rid])
        return Resident(
            id=rid,
            ext_id=self.ext_id[rid],
            name=self.name[rid],
            phone=self.phone[rid],
            address=self.address[rid],
            grid=units["grid"][g].key,
            village=units["village"][v].key,
            station=units["station"][st].key,
            officer=self.officers[o].key if o >= 0 else None,
            tags=self.tags_of(rid),
        )

    # -- writing ------------------------------------------------------------------------------
    def _tag(self, key: str) -> int:
        i = self.taxonomy.get(key)
        if i is None:
            close = self.taxonomy.suggest(key)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RegistryError(f"unknown tag {key!r}{hint}")
        return i

    def _officer_for(self, key: str | None, grid: int) -> int:
        if key is None:
            return -1
        o = self.find_officer(key)
        if self.officers[o].role not in GRID_ROLES:
            raise RegistryError(f"officer {key!r} ({self.officers[o].role}) keeps no contacts")
        if not self._covers(o, grid):
            grid_key = self.jurisdiction.units["grid"][grid].key
            raise RegistryError(f"officer {key!r} does not answer for grid {grid_key!r}")
        return o

    def _place(self, rid: int, grid: int, on: bool) -> None:
        """Add to (or drop from) the grid, village and station sets of ``grid``."""
        v = int(self.jurisdiction.grid_village[grid])
        st = int(self.jurisdiction.village_station[v])
        for family, i in (("grid", grid), ("village", v), ("station", st)):
            s = self.sets[family][i]
            s.add(rid) if on else s.discard(rid)

    def add_resident(
        self,
        ext_id: str,
        *,
        name: str,
        phone: str,
        address: str,
        grid: str,
        officer: str | None = None,
        tags: Iterable[str] = (),
    ) -> int:
        """Add one resident and return their dense id."""
        if not ext_id:
            raise RegistryError("a resident needs a non-empty external id")
        if self._by_ext.find(ext_id.encode("utf-8"), self.alive):
            raise RegistryError(f"external id {ext_id!r} is already registered")
        g = self.jurisdiction.find("grid", grid)
        o = self._officer_for(officer, g)
        tag_ids = [self._tag(t) for t in tags]
        rid = self.n_ids
        self._ensure_ids(rid + 1)
        self.n_ids = rid + 1
        self.ext_id[rid] = ext_id
        self._by_ext.note(rid, self.ext_id.raw(rid))
        self._occupy(rid, name, phone, address, g, o, tag_ids)
        return rid

    def revive_resident(
        self,
        rid: int,
        *,
        name: str,
        phone: str,
        address: str,
        grid: str,
        officer: str | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        """Bring a removed resident back on their old dense id (their ext_id stays theirs):
        a registry change replayed after the removal must land on the same id everywhere."""
        if not 0 <= rid < self.n_ids or self.alive[rid]:
            raise RegistryError(f"resident {rid} is not a removed resident")
        g = self.jurisdiction.find("grid", grid)
        o = self._officer_for(officer, g)
        self._occupy(rid, name, phone, address, g, o, [self._tag(t) for t in tags])

    def _occupy(
        self, rid: int, name: str, phone: str, address: str, g: int, o: int, tag_ids: list[int]
    ) -> None:
        """Fill a fresh or removed id's columns and put it in its sets."""
        self.name[rid] = name
        self.phone[rid] = normalize_phone(phone)
        self.address[rid] = address
        self._by_phone.note(rid, self.phone.raw(rid))
        self.alive[rid] = True
        self.grid[rid] = g
        self.officer[rid] = o
        self.live.add(rid)
        self._place(rid, g, True)
        if o >= 0:
            self.sets["officer"][o].add(rid)
        for t in tag_ids:
            self.sets["tag"][t].add(rid)

    def update_resident(
        self,
        rid: int,
        *,
        name: str | None = None,
        phone: str | None = None,
        address: str | None = None,
        grid: str | None = None,
        officer: str | msgspec.UnsetType | None = msgspec.UNSET,
    ) -> None:
        """Change some fields. Moving to a grid the contact officer does not answer for drops
        the contact (a new officer must take the resident over), unless ``officer`` is given."""
        self._check(rid)
        g = int(self.grid[rid]) if grid is None else self.jurisdiction.find("grid", grid)
        old_o = int(self.officer[rid])
        if officer is msgspec.UNSET:
            o = old_o if old_o >= 0 and self._covers(old_o, g) else -1
        else:
            o = self._officer_for(officer, g)
        if name is not None:
            self.name[rid] = name
        if address is not None:
            self.address[rid] = address
        if phone is not None:
            self.phone[rid] = normalize_phone(phone)
            self._by_phone.note(rid, self.phone.raw(rid))
        if g != self.grid[rid]:
            self._place(rid, int(self.grid[rid]), False)
            self._place(rid, g, True)
            self.grid[rid] = g
        if o != old_o:
            if old_o >= 0:
                self.sets["officer"][old_o].discard(rid)
            if o >= 0:
                self.sets["officer"][o].add(rid)
            self.officer[rid] = o

    def set_tag(self, rid: int, key: str, on: bool = True) -> None:
        """Set or clear one tag, O(1)."""
        self._check(rid)
        s = self.sets["tag"][self._tag(key)]
        s.add(rid) if on else s.discard(rid)

    def remove_resident(self, rid: int) -> None:
        """Remove a resident: their id stays reserved, their personal data is wiped."""
        self._check(rid)
        # Columns say which unit and officer sets hold the resident; only tags need a look.
        self._place(rid, int(self.grid[rid]), False)
        if self.officer[rid] >= 0:
            self.sets["officer"][int(self.officer[rid])].discard(rid)
        self.live.discard(rid)
        for s in self.sets["tag"]:
            s.discard(rid)
        self.alive[rid] = False
        self.officer[rid] = -1
        for col in (self.name, self.phone, self.address):
            col[rid] = ""

    def add_residents(
        self,
        ext_ids: Sequence[str] | np.ndarray,
        names: Sequence[str] | np.ndarray,
        phones: Sequence[str] | np.ndarray,
        addresses: Sequence[str] | np.ndarray,
        grids: np.ndarray,
        officers: np.ndarray | None = None,
        tags: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Add many residents at once, vectorised; returns their ids.

        ``grids`` and ``officers`` are unit and officer indexes (-1: no contact officer);
        ``tags`` maps a tag key to the positions (within this batch) of residents that carry it.
        Phones must already be normalised (digits only). External ids must be new and distinct.
        """
        m = len(ext_ids)
        ext = encode_all(ext_ids)
        cols = [encode_all(names), encode_all(phones), encode_all(addresses)]
        grids = np.asarray(grids, dtype=np.int32)
        officers = (
            np.full(m, -1, dtype=np.int32)
            if officers is None
            else np.asarray(officers, dtype=np.int32)
        )
        if any(len(c) != m for c in [*cols, grids, officers]):
            raise RegistryError("add_residents: all columns must have the same length")
        if m == 0:
            return np.zeros(0, dtype=np.int64)
        if np.unique(ext).size != m:
            raise RegistryError("add_residents: external ids repeat within the batch")
        if (ext == b"").any():
            raise RegistryError("add_residents: an external id is empty")
        known = self.ext_id.arr[: self.n_ids][self.alive[: self.n_ids]]
        if known.size and np.isin(ext, known).any():
            raise RegistryError("add_residents: an external id is already registered")
        n_grids = len(self.jurisdiction.units["grid"])
        if grids.min() < 0 or grids.max() >= n_grids:
            raise RegistryError("add_residents: a grid index is out of range")
        if officers.max() >= len(self.officers) or officers.min() < -1:
            raise RegistryError("add_residents: an officer index is out of range")
        tag_ids = {self._tag(k): np.asarray(v, dtype=np.int64) for k, v in (tags or {}).items()}
        for key, pos in zip((tags or {}), tag_ids.values(), strict=True):
            if pos.size and (pos.min() < 0 or pos.max() >= m):
                raise RegistryError(f"add_residents: positions for tag {key!r} out of range")
        has = officers >= 0
        for o in np.unique(officers[has]):
            covered = [self._covers(int(o), int(g)) for g in np.unique(grids[officers == o])]
            if self.officers[o].role not in GRID_ROLES or not all(covered):
                raise RegistryError(
                    f"add_residents: officer {self.officers[o].key!r} is given residents"
                    " outside their grids"
                )

        start = self.n_ids
        ids = np.arange(start, start + m, dtype=np.int64)
        self._ensure_ids(start + m)
        self.n_ids = start + m
        self.ext_id.put_many(start, ext)
        for col, values in zip((self.name, self.phone, self.address), cols, strict=True):
            col.put_many(start, values)
        self._by_ext.overlay.update((bytes(e), [int(r)]) for e, r in zip(ext, ids, strict=True))
        if start:  # a first batch gets its sorted base below; later ones go to the overlay
            for p, r in zip(cols[1], ids, strict=True):
                self._by_phone.note(int(r), bytes(p))
        else:
            self._by_ext.rebuild(self.n_ids)
            self._by_phone.rebuild(self.n_ids)
        self.alive[start : start + m] = True
        self.grid[start : start + m] = grids
        self.officer[start : start + m] = officers
        self.live.add_many(ids)
        j = self.jurisdiction
        for family, idx in (
            ("grid", grids),
            ("village", j.grid_village[grids]),
            ("station", j.grid_station[grids]),
            ("officer", officers),
        ):
            _scatter(self.sets[family], idx, ids)
        for t, pos in tag_ids.items():
            self.sets["tag"][t].add_many(ids[pos])
        return ids

    # -- audiences ----------------------------------------------------------------------------
    def bitset(self, kind: str, key: str) -> ChunkedBitset:
        """The stored set for ``tag``, ``grid``, ``village``, ``station`` or ``officer`` ``key``.

        Unknown names raise :class:`UnknownNameError` with the closest known names.
        """
        if kind == "tag":
            i = self.taxonomy.get(key)
            if i is None:
                raise UnknownNameError("tag", key, self.taxonomy.suggest(key), key, 0)
            return self.sets["tag"][i]
        index = self.officer_index if kind == "officer" else self.jurisdiction.index[kind]  # type: ignore[index]
        i = index.get(key)
        if i is None:
            raise UnknownNameError(kind, key, suggest(key, list(index)), key, 0)
        return self.sets[kind][i]

    def _resolver(self, text: str) -> Callable[[Tag | Unit], ChunkedBitset]:
        def resolve(term: Tag | Unit) -> ChunkedBitset:
            kind = "tag" if isinstance(term, Tag) else term.kind
            try:
                return self.bitset(kind, term.key)
            except UnknownNameError as exc:
                raise UnknownNameError(kind, term.key, exc.suggestions, text, term.pos) from None

        return resolve

    def audience(self, text: str) -> Audience:
        """Parse and plan an audience expression once; evaluate it with ``count()``/``ids()``."""
        return compile_text(text, self._resolver(text), self._evaluator)

    def count(self, text: str) -> int:
        return self.audience(text).count()

    def ids(self, text: str) -> np.ndarray:
        return self.audience(text).ids()

    def view_for(self, officer_key: str) -> OfficerView:
        """What one officer may see: only residents of their own jurisdiction."""
        return OfficerView(self, self.find_officer(officer_key))

    # -- size and persistence -----------------------------------------------------------------
    def index_nbytes(self) -> int:
        """Bytes held by all bitsets (the audience index)."""
        return sum(s.nbytes() for s in self._all_sets())

    def save(self, path: str | Path) -> None:
        snapshot.save(self, Path(path))

    @classmethod
    def load(cls, path: str | Path, taxonomy: Taxonomy | None = None) -> Registry:
        return snapshot.load(Path(path), cls, taxonomy)


def _scatter(family: list[ChunkedBitset], owner: np.ndarray, ids: np.ndarray) -> None:
    """Add ``ids[i]`` to ``family[owner[i]]`` for every ``owner[i] >= 0``, one call per set."""
    keep = owner >= 0
    owner, ids = owner[keep], ids[keep]
    order = np.argsort(owner, kind="stable")
    owner, ids = owner[order], ids[order]
    bounds = np.flatnonzero(np.diff(owner)) + 1
    for chunk_owner, chunk_ids in zip(
        owner[np.r_[0, bounds]] if owner.size else [], np.split(ids, bounds), strict=False
    ):
        family[int(chunk_owner)].add_many(chunk_ids)


class OfficerView:
    """A registry seen by one officer: audiences and lookups limited to their jurisdiction."""

    def __init__(self, registry: Registry, officer: int) -> None:
        self.registry = registry
        self.officer = registry.officers[officer]
        j = registry.jurisdiction
        if self.officer.grids:
            scope: PlanNode = Disj(
                tuple(Leaf(registry.sets["grid"][j.index["grid"][g]]) for g in self.officer.grids)
            )
        else:
            scope = Leaf(registry.sets["station"][j.index["station"][self.officer.station]])
        self._scope = scope

    def can_see(self, rid: int) -> bool:
        r = self.registry
        return r.is_live(rid) and r._covers(r.officer_index[self.officer.key], int(r.grid[rid]))

    def resident(self, rid: int) -> Resident:
        if not self.can_see(rid):
            raise PermissionError(
                f"resident {rid} is outside the jurisdiction of officer {self.officer.key!r}"
            )
        return self.registry.resident(rid)

    def audience(self, text: str) -> Audience:
        """The expression, intersected with this officer's jurisdiction."""
        return self.registry.audience(text).within(self._scope)
