"""Registry snapshots: a folder of ``.npy`` arrays plus one msgpack file of metadata.

Loading memory-maps every array copy-on-write, so a 1.3 M county opens in milliseconds and
pages come in as they are read; later changes stay private to the process. Saving writes a new
folder beside the old one and renames it into place, so a crash never leaves half a snapshot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from engine.audience.bitset import WORD_BITS, ChunkedBitset
from engine.audience.program import Evaluator
from engine.errors import WarnDispatchError
from engine.registry.columns import KeyIndex, StrColumn
from engine.registry.units import FAMILIES, Jurisdiction, Officer, Unit
from engine.rules.taxonomy import load_taxonomy

if TYPE_CHECKING:
    from engine.registry.registry import Registry
    from engine.rules.taxonomy import Taxonomy

FORMAT = "warn-dispatch-registry"
VERSION = 1
_COLUMNS = ("alive", "grid", "officer")
_STRINGS = ("ext_id", "name", "phone", "address")


class SnapshotError(WarnDispatchError, ValueError):
    """A snapshot folder is missing, from another format or version, or does not fit."""


class Meta(msgspec.Struct, frozen=True):
    format: str
    version: int
    chunk_words: int
    n_ids: int
    county: str
    taxonomy_keys: list[str]
    stations: list[Unit]
    villages: list[Unit]
    grids: list[Unit]
    officers: list[Officer]


def _set_order(registry: Registry) -> list[ChunkedBitset]:
    return [registry.live] + [s for f in FAMILIES for s in registry.sets[f]]


def save(registry: Registry, path: Path) -> None:
    """Write ``registry`` to the folder ``path``, replacing it atomically if it exists."""
    n = registry.n_ids
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    j = registry.jurisdiction
    meta = Meta(
        format=FORMAT,
        version=VERSION,
        chunk_words=registry.chunk_words,
        n_ids=n,
        county=j.county,
        taxonomy_keys=list(registry.taxonomy.keys),
        stations=j.units["station"],
        villages=j.units["village"],
        grids=j.units["grid"],
        officers=registry.officers,
    )
    for name in _COLUMNS:
        np.save(tmp / f"{name}.npy", getattr(registry, name)[:n])
    for name in _STRINGS:
        np.save(tmp / f"{name}.npy", getattr(registry, name).arr[:n])
    registry._by_ext.rebuild(n)
    registry._by_phone.rebuild(n)
    np.save(tmp / "ext_id.order.npy", registry._by_ext.base)
    np.save(tmp / "phone.order.npy", registry._by_phone.base)

    sets = _set_order(registry)
    n_chunks = -(-n // (registry.chunk_words * WORD_BITS)) if n else 1
    slots = np.stack([s.slot[:n_chunks] for s in sets]) if sets else np.zeros((0, 1), np.int32)
    # Chunks past n_chunks hold no ids, so dropping their slots loses nothing.
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([s.rows for s in sets])
    rows = np.lib.format.open_memmap(
        tmp / "rows.npy", mode="w+", dtype=np.uint64, shape=(int(offsets[-1]), registry.chunk_words)
    )
    for s, lo, hi in zip(sets, offsets[:-1], offsets[1:], strict=True):
        rows[lo:hi] = s.compact_data()
    rows.flush()
    del rows
    np.save(tmp / "slots.npy", slots)
    np.save(tmp / "offsets.npy", offsets)
    (tmp / "meta.msgpack").write_bytes(msgspec.msgpack.encode(meta))
    for f in tmp.iterdir():
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def load(path: Path, cls: type[Registry], taxonomy: Taxonomy | None = None) -> Registry:
    """Open a snapshot written by :func:`save` as a ``cls`` (the registry passes its own class,
    so this module needs it only for type checking: registry imports snapshot, never the
    reverse). Tags are matched to ``taxonomy`` by key."""

    meta_file = path / "meta.msgpack"
    if not meta_file.is_file():
        raise SnapshotError(f"{path}: not a registry snapshot (no meta.msgpack)")
    try:
        meta = msgspec.msgpack.decode(meta_file.read_bytes(), type=Meta)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"{path}/meta.msgpack: unreadable ({exc})") from exc
    if meta.format != FORMAT or meta.version != VERSION:
        raise SnapshotError(
            f"{path}: format {meta.format!r} version {meta.version}, expected {FORMAT!r} {VERSION}"
        )
    taxonomy = taxonomy if taxonomy is not None else load_taxonomy()
    missing = [k for k in meta.taxonomy_keys if k not in taxonomy]
    if missing:
        raise SnapshotError(
            f"{path}: the snapshot has tags the taxonomy lacks: {', '.join(missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )

    def arr(name: str) -> np.ndarray:
        return np.load(path / f"{name}.npy", mmap_mode="c")

    reg = cls.__new__(cls)
    reg.taxonomy = taxonomy
    reg.jurisdiction = Jurisdiction(meta.stations, meta.villages, meta.grids, meta.county)
    reg.chunk_words = meta.chunk_words
    reg.chunk_bits = meta.chunk_words * WORD_BITS
    reg.n_ids = meta.n_ids
    for name in _COLUMNS:
        setattr(reg, name, arr(name))
    for name in _STRINGS:
        setattr(reg, name, StrColumn(arr(name)))
    reg._by_ext = KeyIndex(reg.ext_id, arr("ext_id.order"))
    reg._by_phone = KeyIndex(reg.phone, arr("phone.order"))
    reg.officers = list(meta.officers)
    reg.officer_index = {o.key: i for i, o in enumerate(reg.officers)}

    slots, offsets, rows = arr("slots"), arr("offsets"), arr("rows")
    stored = [
        ChunkedBitset.from_parts(slots[i], rows[offsets[i] : offsets[i + 1]])
        for i in range(len(offsets) - 1)
    ]
    reg.live = stored[0]
    counts = {
        "tag": len(meta.taxonomy_keys),
        "station": len(meta.stations),
        "village": len(meta.villages),
        "grid": len(meta.grids),
        "officer": len(meta.officers),
    }
    at = 1
    reg.sets = {}
    for family in FAMILIES:
        reg.sets[family] = stored[at : at + counts[family]]
        at += counts[family]
    if at != len(stored):
        raise SnapshotError(f"{path}: {len(stored)} bitsets stored, {at} expected")
    if list(taxonomy.keys) != meta.taxonomy_keys:  # map by key; new tags start empty
        by_key = dict(zip(meta.taxonomy_keys, reg.sets["tag"], strict=True))
        reg.sets["tag"] = [
            by_key.get(k) or ChunkedBitset(meta.chunk_words, slots.shape[1]) for k in taxonomy.keys
        ]
    reg._evaluator = Evaluator(reg.live)
    return reg
