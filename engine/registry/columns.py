"""Columnar resident storage: numpy arrays instead of 1.3 M Python objects.

A county's residents as Python objects would take ~0.5 GB and seconds to load; as columns they
load from a snapshot by memory-mapping, in milliseconds, and grow by doubling.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np


def grown(arr: np.ndarray, n: int, fill: object = 0) -> np.ndarray:
    """``arr`` with room for at least ``n`` rows (doubling), new rows set to ``fill``."""
    if arr.shape[0] >= n:
        return arr if arr.flags.writeable else np.array(arr)
    out = np.full((max(n, 2 * arr.shape[0], 1024), *arr.shape[1:]), fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


class StrColumn:
    """UTF-8 strings in a fixed-width ``S`` array; widens itself when a longer value arrives."""

    __slots__ = ("arr",)

    def __init__(self, arr: np.ndarray | None = None) -> None:
        self.arr = arr if arr is not None else np.zeros(0, dtype="S8")

    def reserve(self, n: int) -> None:
        self.arr = grown(self.arr, n, b"")

    def _fit(self, width: int) -> None:
        if width > self.arr.dtype.itemsize:
            self.arr = self.arr.astype(f"S{max(width, 2 * self.arr.dtype.itemsize)}")

    def __getitem__(self, rid: int) -> str:
        return bytes(self.arr[rid]).decode("utf-8")

    def raw(self, rid: int) -> bytes:
        return bytes(self.arr[rid])

    def __setitem__(self, rid: int, value: str) -> None:
        data = value.encode("utf-8")
        self._fit(len(data))
        if not self.arr.flags.writeable:
            self.arr = np.array(self.arr)
        self.arr[rid] = data

    def put_many(self, start: int, values: np.ndarray) -> None:
        """Store encoded values (an ``S`` array) at ``start``, ``start + 1``, ..."""
        self._fit(values.dtype.itemsize)
        self.reserve(start + values.size)
        self.arr[start : start + values.size] = values


def encode_all(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """Python strings (or a ``U`` array) to a UTF-8 ``S`` array, vectorised."""
    arr = np.asarray(values)
    if arr.dtype.kind == "S":
        return arr
    return np.char.encode(arr.astype(str), "utf-8") if arr.size else np.zeros(0, dtype="S1")


class KeyIndex:
    """Exact lookup of ids by a column's value (external id, phone number).

    A sorted base order (saved in snapshots, so loading builds nothing) plus an overlay of values
    written since. Every candidate is checked against the column and the live mask, so changed
    and removed residents never match stale entries.
    """

    __slots__ = ("base", "column", "overlay")

    def __init__(self, column: StrColumn, base: np.ndarray | None = None) -> None:
        self.column = column
        self.base = base if base is not None else np.zeros(0, dtype=np.int64)
        self.overlay: dict[bytes, list[int]] = {}

    def rebuild(self, n: int) -> None:
        """Sort ids ``0..n-1`` by value and clear the overlay (done before saving)."""
        self.base = np.argsort(self.column.arr[:n], kind="stable").astype(np.int64)
        self.overlay.clear()

    def note(self, rid: int, value: bytes) -> None:
        self.overlay.setdefault(value, []).append(rid)

    def find(self, value: bytes, alive: np.ndarray) -> list[int]:
        """Live ids whose column value equals ``value``, ascending."""
        col = self.column.arr
        base = self.base
        found: set[int] = set()
        lo = bisect.bisect_left(base, value, key=lambda rid: col[rid])
        while lo < base.size and col[base[lo]] == value:
            found.add(int(base[lo]))
            lo += 1
        found.update(self.overlay.get(value, ()))
        return sorted(r for r in found if r < alive.size and alive[r] and col[r] == value)
