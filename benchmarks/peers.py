"""Peer implementations of audience resolution, to benchmark the bitset index against.

Every peer is built from the same input and answers the same questions:

* ``universe``: residents are ids ``0 .. universe-1``;
* ``live``: sorted ``int64`` ids of live residents;
* ``sets``: set name -> sorted ``int64`` member ids; names are ``"tag:<key>"`` for tags and
  ``"<kind>:<id>"`` for units (``grid``, ``village``, ``station``, ``officer``).

Semantics (identical in every peer, checked by ``tests/test_peers.py`` against
:class:`PythonSetPeer`): a tag or unit is its members as given (the caller guarantees they are
live residents); ``all`` is ``live``; ``~x`` is ``live - x``; ``&``, ``|``, ``-`` are
intersection, union and difference. An unknown set name raises ``KeyError``.

Each peer has ``name``, ``count(node) -> int``, ``ids(node) -> np.ndarray`` (sorted int64),
``memory_bytes() -> int`` and ``close()``. Peers other than the reference rewrite a conjunction
``a & b & ~c - d`` into "intersect the positives (or ``live`` if none), then remove the union of
the negatives", which is what a careful hand-written query would do too; the sets being subsets
of ``live`` makes that equal to the literal definition.
"""

from __future__ import annotations

import array
import itertools
import sqlite3
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np
from pyroaring import BitMap

from engine.audience.expr import All, And, Diff, Node, Not, Or, Tag, Unit, terms
from engine.testing.redis_server import RedisServer


class Peer(Protocol):
    """What the benchmark needs from every audience resolver."""

    name: str

    def count(self, node: Node) -> int: ...
    def ids(self, node: Node) -> np.ndarray: ...
    def memory_bytes(self) -> int: ...
    def close(self) -> None: ...


# -- shared helpers ---------------------------------------------------------------------------
def set_name(leaf: Tag | Unit) -> str:
    """The ``sets`` key of a leaf: ``tag:elderly`` or ``grid:03-17``."""
    if isinstance(leaf, Tag):
        return f"tag:{leaf.key}"
    return f"{leaf.kind}:{leaf.key}"


def needed_sets(nodes: Iterable[Node]) -> set[str]:
    """The set names a list of expressions reads (for :class:`SQLitePeer`'s ``needed``)."""
    return {set_name(leaf) for node in nodes for leaf in terms(node) if not isinstance(leaf, All)}


def _check_ids(label: str, ids: np.ndarray, universe: int) -> np.ndarray:
    """Validate one id array (sorted, unique, in range), so peers never disagree on bad input."""
    a = np.asarray(ids)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{label}: expected a 1-D integer array, got {a.dtype} {a.shape}")
    a = a.astype(np.int64, copy=False)
    if a.size:
        if a[0] < 0 or a[-1] >= universe:
            raise ValueError(f"{label}: ids must lie in 0..{universe - 1}")
        if a.size > 1 and not bool(np.all(a[1:] > a[:-1])):
            raise ValueError(f"{label}: ids must be sorted and unique")
    return a


def _check_input(
    universe: int, live: np.ndarray, sets: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if not 0 < universe < 2**32:
        raise ValueError("universe must be in 1..2**32-1 (roaring bitmaps hold uint32)")
    return _check_ids("live", live, universe), {
        name: _check_ids(name, ids, universe) for name, ids in sets.items()
    }


def _conjuncts(node: Node) -> tuple[list[Node], list[Node]]:
    """Split a conjunction into positives and negatives: ``a & ~b - c`` -> ([a], [b, c])."""
    match node:
        case And(items=items):
            pos: list[Node] = []
            neg: list[Node] = []
            for item in items:
                p, n = _conjuncts(item)
                pos += p
                neg += n
            return pos, neg
        case Diff(left=left, right=right):
            p, n = _conjuncts(left)
            return p, [*n, right]
        case Not(operand=operand):
            return [], [operand]
    return [node], []


def _flatten_or(nodes: list[Node]) -> list[Node]:
    """``a | (b | c)`` -> [a, b, c]: removing a union is removing each of its parts."""
    out: list[Node] = []
    for n in nodes:
        out += _flatten_or(list(n.items)) if isinstance(n, Or) else [n]
    return out


def _unknown(name: str) -> KeyError:
    return KeyError(f"unknown audience set {name!r}")


# -- reference --------------------------------------------------------------------------------
class PythonSetPeer:
    """Reference: plain Python sets and the literal definition of each operator. Small scale only.

    ``memory_bytes`` is ``sys.getsizeof`` of the set objects (their hash tables), excluding the
    int objects they point to: a lower bound, for orientation only.
    """

    name = "python-set"

    def __init__(self, universe: int, live: np.ndarray, sets: Mapping[str, np.ndarray]) -> None:
        live, sets = _check_input(universe, live, sets)
        self.live: frozenset[int] = frozenset(live.tolist())
        self.sets: dict[str, frozenset[int]] = {k: frozenset(v.tolist()) for k, v in sets.items()}

    def eval(self, node: Node) -> frozenset[int]:
        match node:
            case Tag() | Unit():
                name = set_name(node)
                if name not in self.sets:
                    raise _unknown(name)
                return self.sets[name]
            case All():
                return self.live
            case Not(operand=operand):
                return self.live - self.eval(operand)
            case And(items=items):
                return frozenset.intersection(*(self.eval(i) for i in items))
            case Or(items=items):
                return frozenset.union(*(self.eval(i) for i in items))
            case Diff(left=left, right=right):
                return self.eval(left) - self.eval(right)
        raise TypeError(f"not an audience node: {node!r}")

    def count(self, node: Node) -> int:
        return len(self.eval(node))

    def ids(self, node: Node) -> np.ndarray:
        return np.array(sorted(self.eval(node)), dtype=np.int64)

    def memory_bytes(self) -> int:
        return sys.getsizeof(self.live) + sum(sys.getsizeof(s) for s in self.sets.values())

    def close(self) -> None:
        self.sets.clear()


# -- SQLite -----------------------------------------------------------------------------------
class SQLitePeer:
    """stdlib sqlite3 in memory: ``m(set_id, rid)`` WITHOUT ROWID with PRIMARY KEY (set_id, rid)
    (the primary key *is* the covering index), plus ``live(rid INTEGER PRIMARY KEY)``.

    An expression becomes one compound SELECT (INTERSECT / UNION / EXCEPT of index range
    scans); ``count`` wraps it in ``SELECT count(*)``. Every compound ends in ``ORDER BY 1``:
    that makes SQLite merge the already-sorted index scans instead of building a temporary
    B-tree per operand, measured 1.3-7x faster here (``tag & grid``: 50 ms -> 7.5 ms).

    ``needed`` restricts loading to those set names (see :func:`needed_sets`): at full scale
    (~120 M memberships) loading everything through ``executemany`` (~1.2 M rows/s and ~11
    bytes/row measured here, including ``ANALYZE``) would take ~100 s and ~1.3 GB, while a
    benchmark only reads a few dozen sets. Using a set that was not loaded raises ``KeyError``.

    ``memory_bytes`` is ``page_count * page_size``: the whole in-memory database, tables and
    indexes with B-tree overhead (the rows live in the index).
    """

    name = "sqlite"

    def __init__(
        self,
        universe: int,
        live: np.ndarray,
        sets: Mapping[str, np.ndarray],
        needed: set[str] | None = None,
    ) -> None:
        live, sets = _check_input(universe, live, sets)
        if needed is not None:
            missing = needed - sets.keys()
            if missing:
                raise KeyError(f"needed sets not in the input: {sorted(missing)}")
            sets = {k: v for k, v in sets.items() if k in needed}
        self.universe = universe
        self.con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = OFF",
            "synchronous = OFF",
            "temp_store = MEMORY",  # compound SELECTs build temp B-trees; keep them off disk
            "cache_size = -1048576",  # 1 GiB page cache for those temp B-trees
        ):
            self.con.execute(f"PRAGMA {pragma}")
        self.set_ids: dict[str, int] = {}
        cur = self.con.cursor()
        cur.execute("BEGIN")
        cur.execute(
            "CREATE TABLE m (set_id INTEGER NOT NULL, rid INTEGER NOT NULL, "
            "PRIMARY KEY (set_id, rid)) WITHOUT ROWID"
        )
        cur.execute("CREATE TABLE live (rid INTEGER PRIMARY KEY)")
        cur.executemany("INSERT INTO live VALUES (?)", zip(live.tolist()))
        # Inserted in primary-key order, so every insert appends to the B-tree's last page.
        for set_id, name in enumerate(sorted(sets), start=1):
            self.set_ids[name] = set_id
            cur.executemany(
                "INSERT INTO m VALUES (?, ?)", zip(itertools.repeat(set_id), sets[name].tolist())
            )
        cur.execute("COMMIT")
        cur.execute("ANALYZE")

    def sql(self, node: Node) -> str:
        """The compound SELECT yielding ``rid`` for ``node`` (ints inlined: no user text)."""
        return self._sql(node)[0]

    def _sql(self, node: Node) -> tuple[str, bool]:
        """(sql, is_simple): a simple SELECT may stand as a compound operand unwrapped."""
        match node:
            case Tag() | Unit():
                name = set_name(node)
                if name not in self.set_ids:
                    raise _unknown(name)
                return f"SELECT rid FROM m WHERE set_id = {self.set_ids[name]}", True
            case All():
                return "SELECT rid FROM live", True
            case Or(items=items):
                return " UNION ".join(self._operand(i) for i in _flatten_or(list(items))), False
        pos, neg = _conjuncts(node)
        sql = " INTERSECT ".join(self._operand(p) for p in pos) or "SELECT rid FROM live"
        for n in _flatten_or(neg):
            sql += " EXCEPT " + self._operand(n)
        return sql, len(pos) == 1 and not neg and self._sql(pos[0])[1]

    def _operand(self, node: Node) -> str:
        sql, simple = self._sql(node)
        return sql if simple else f"SELECT rid FROM ({sql} ORDER BY 1)"

    def count(self, node: Node) -> int:
        return int(
            self.con.execute(f"SELECT count(*) FROM ({self.sql(node)} ORDER BY 1)").fetchone()[0]
        )

    def ids(self, node: Node) -> np.ndarray:
        rows = self.con.execute(f"{self.sql(node)} ORDER BY 1").fetchall()
        return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=len(rows))

    def memory_bytes(self) -> int:
        pages = self.con.execute("PRAGMA page_count").fetchone()[0]
        size = self.con.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    def close(self) -> None:
        self.con.close()


# -- roaring ----------------------------------------------------------------------------------
def _bitmap(ids: np.ndarray) -> BitMap:
    """A BitMap from int64 ids via array('I') (pyroaring's fast path: ~10x faster than a list);
    pyroaring run-optimizes it, so contiguous units become run containers."""
    return BitMap(array.array("I", ids.astype(np.uint32).tobytes()))


class RoaringPeer:
    """pyroaring ``BitMap`` per set (CRoaring underneath); multi-way ``intersection`` /
    ``union`` and ``-``; ``~x`` is ``live - x``.

    ``memory_bytes`` is the sum of ``len(bitmap.serialize())`` over all bitmaps: the portable
    format is the container payload plus a few bytes of header per 65,536-id chunk, close to the
    heap size (``get_statistics()`` reports only container payloads, without the headers).
    """

    name = "roaring"

    def __init__(self, universe: int, live: np.ndarray, sets: Mapping[str, np.ndarray]) -> None:
        live, sets = _check_input(universe, live, sets)
        self.live = _bitmap(live)
        self.sets: dict[str, BitMap] = {k: _bitmap(v) for k, v in sets.items()}

    def _leaf(self, node: Tag | Unit) -> BitMap:
        name = set_name(node)
        try:
            return self.sets[name]
        except KeyError:
            raise _unknown(name) from None

    def eval(self, node: Node) -> BitMap:
        """The members of ``node``; may be a stored bitmap: never mutate the result."""
        match node:
            case Tag() | Unit():
                return self._leaf(node)
            case All():
                return self.live
            case Or(items=items):
                parts = [self.eval(i) for i in items]
                return parts[0] if len(parts) == 1 else BitMap.union(*parts)
        pos, neg = _conjuncts(node)
        bms = [self.eval(p) for p in pos] or [self.live]
        base = bms[0] if len(bms) == 1 else BitMap.intersection(*bms)
        if not neg:
            return base
        negs = [self.eval(n) for n in neg]
        return base - (negs[0] if len(negs) == 1 else BitMap.union(*negs))

    def count(self, node: Node) -> int:
        # Two-operand cases have cardinality functions that skip building the result.
        pos, neg = _conjuncts(node) if isinstance(node, And | Diff) else ([], [])
        if len(pos) == 2 and not neg:
            return self.eval(pos[0]).intersection_cardinality(self.eval(pos[1]))
        if len(pos) == 1 and len(neg) == 1:
            return self.eval(pos[0]).difference_cardinality(self.eval(neg[0]))
        return len(self.eval(node))

    def ids(self, node: Node) -> np.ndarray:
        return np.frombuffer(self.eval(node).to_array(), dtype=np.uint32).astype(np.int64)

    def memory_bytes(self) -> int:
        return len(self.live.serialize()) + sum(len(b.serialize()) for b in self.sets.values())

    def close(self) -> None:
        self.sets.clear()


# -- Redis BITOP ------------------------------------------------------------------------------
def pack_redis_bits(ids: np.ndarray) -> bytes:
    """Redis bitmap bytes for sorted ids: bit ``i`` is the most significant bit of byte
    ``i // 8`` (SETBIT order). Ends at the byte holding the last id, as SETBIT would leave it."""
    if ids.size == 0:
        return b""
    mask = np.zeros((int(ids[-1]) // 8 + 1) * 8, dtype=np.bool_)
    mask[ids] = True
    return np.packbits(mask, bitorder="big").tobytes()


def unpack_redis_bits(data: bytes) -> np.ndarray:
    """Sorted int64 ids of the set bits of a Redis bitmap; only unpacks the non-zero bytes,
    which is much faster for sparse results and no slower for dense ones."""
    b = np.frombuffer(data, dtype=np.uint8)
    if np.count_nonzero(b) * 4 > b.size:  # dense: unpacking everything beats gathering
        return np.flatnonzero(np.unpackbits(b, bitorder="big")).astype(np.int64, copy=False)
    nz = np.flatnonzero(b)
    row, col = np.nonzero(np.unpackbits(b[nz][:, None], axis=1, bitorder="big"))
    return nz[row].astype(np.int64) * 8 + col


class RedisBitopPeer:
    """One Redis string (bitmap) per set on a real local redis-server; BITOP into temporary keys.

    Each query is one pipelined round trip: the BITOPs, then BITCOUNT (count) or GET (ids),
    then DEL of the temporaries. ``ids`` decodes with :func:`unpack_redis_bits`.

    Keys end after their last member's byte (what SETBIT would leave), so BITOP NOT, which only
    flips the bytes a key has, cannot express ``live - x``: NOT sets padding bits *and* leaves
    zeros past a short key's end. Differences therefore use ``base XOR (base AND neg)``, exact
    for any key lengths (BITOP zero-pads shorter operands). Negatives are OR-ed first, so
    ``a & b & ~c & ~d`` costs four BITOPs: AND, OR, AND, XOR.

    Pass ``server`` to share one server (keys get a per-peer prefix, deleted by ``close``);
    without it the peer starts its own and stops it on ``close``.

    ``memory_bytes`` sums ``MEMORY USAGE key SAMPLES 0`` over this peer's keys: string payload
    plus Redis/jemalloc overhead (jemalloc size classes round large strings up).
    """

    name = "redis-bitop"
    _instances = itertools.count()
    _UPLOAD_BATCH_BYTES = 64 << 20

    def __init__(
        self,
        universe: int,
        live: np.ndarray,
        sets: Mapping[str, np.ndarray],
        server: RedisServer | None = None,
    ) -> None:
        live, sets = _check_input(universe, live, sets)
        self._own_server = server is None
        self.server = RedisServer().start() if server is None else server
        self.r = self.server.client()
        self.prefix = f"aud{next(self._instances)}:"
        self.live_key = self.prefix + "live"
        self.keys: dict[str, str] = {name: f"{self.prefix}s:{name}" for name in sets}
        pipe = self.r.pipeline(transaction=False)
        pending = 0
        for key, ids in itertools.chain(
            [(self.live_key, live)], ((self.keys[n], v) for n, v in sets.items())
        ):
            data = pack_redis_bits(ids)
            pipe.set(key, data)
            pending += len(data)
            if pending >= self._UPLOAD_BATCH_BYTES:
                pipe.execute()
                pending = 0
        pipe.execute()

    # A plan is a list of BITOP commands plus the key holding the answer and the temporaries.
    def plan(self, node: Node) -> tuple[list[tuple[str, ...]], str, list[str]]:
        """(bitops, result key, temporary keys) for ``node``."""
        ops: list[tuple[str, ...]] = []
        temps: list[str] = []

        def bitop(op: str, *keys: str) -> str:
            dest = f"{self.prefix}t:{len(temps)}"
            temps.append(dest)
            ops.append(("BITOP", op, dest, *keys))
            return dest

        def key(node: Node) -> str:
            match node:
                case Tag() | Unit():
                    name = set_name(node)
                    if name not in self.keys:
                        raise _unknown(name)
                    return self.keys[name]
                case All():
                    return self.live_key
                case Or(items=items):
                    ks = [key(i) for i in items]
                    return ks[0] if len(ks) == 1 else bitop("OR", *ks)
            pos, neg = _conjuncts(node)
            ps = [key(p) for p in pos] or [self.live_key]
            base = ps[0] if len(ps) == 1 else bitop("AND", *ps)
            if not neg:
                return base
            ns = [key(n) for n in neg]
            drop = ns[0] if len(ns) == 1 else bitop("OR", *ns)
            return bitop("XOR", base, bitop("AND", base, drop))

        result = key(node)
        return ops, result, temps

    def _run(self, node: Node, fetch: str) -> Any:
        ops, result, temps = self.plan(node)
        if not ops:
            return self.r.execute_command(fetch, result)
        pipe = self.r.pipeline(transaction=False)
        for op in ops:
            pipe.execute_command(*op)
        pipe.execute_command(fetch, result)
        pipe.execute_command("DEL", *temps)
        return pipe.execute()[-2]

    def count(self, node: Node) -> int:
        return int(self._run(node, "BITCOUNT"))

    def ids(self, node: Node) -> np.ndarray:
        data = self._run(node, "GET")
        return unpack_redis_bits(data or b"")

    def memory_bytes(self) -> int:
        pipe = self.r.pipeline(transaction=False)
        for key in [self.live_key, *self.keys.values()]:
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        return sum(int(n or 0) for n in pipe.execute())

    def close(self) -> None:
        try:
            if self._own_server:
                self.server.stop()
            else:
                all_keys = [self.live_key, *self.keys.values()]
                for i in range(0, len(all_keys), 1000):
                    self.r.delete(*all_keys[i : i + 1000])
                self.r.close()
        finally:
            self.keys.clear()
