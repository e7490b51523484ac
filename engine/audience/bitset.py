"""Chunked bitsets: one packed ``uint64`` bitset per tag, unit and officer, cheap when sparse.

A resident id ``r`` is bit ``r % 64`` of word ``r // 64``. Words are grouped in chunks of
``chunk_words`` words (65,536 ids by default). A set stores only the chunks it touches, as rows of
a 2-D array, plus a ``slot`` map from chunk number to row. Row 0 is always zero, and absent chunks
map to it, so gathering any set over any list of chunks is one ``np.take`` with no branches.

Why chunks: a county has ~1,300 grids and ~1,400 officers. As full-length bitsets they would
cost ~0.5 GB; as chunks, a grid of ~1,000 neighbours (ids are given out grid by grid) costs one
or two 8 KiB chunks. A tag touching every chunk costs exactly its full bitset, stored in chunk
order, so evaluating tags over the whole county reads contiguous memory with zero copies.
"""

from __future__ import annotations

import functools

import numpy as np

WORD_BITS = 64
DEFAULT_CHUNK_WORDS = 1024


class ChunkedBitset:
    """A set of resident ids stored as the chunks it touches.

    ``slot[c]`` is the row of chunk ``c`` in ``data`` (0 = absent: row 0 is all zeros).
    ``layout`` changes whenever ``slot`` or ``data`` is replaced or a row is added; setting and
    clearing bits does not change it, so compiled plans holding views stay valid until it does.
    """

    __slots__ = ("chunk_words", "data", "layout", "rows", "slot")

    def __init__(self, chunk_words: int, n_chunks: int) -> None:
        self.chunk_words = chunk_words
        self.slot = np.zeros(n_chunks, dtype=np.int32)
        self.data = np.zeros((1, chunk_words), dtype=np.uint64)
        self.rows = 1  # rows in use, including the zero row
        self.layout = 0

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_ids(cls, ids: np.ndarray, chunk_words: int, n_chunks: int) -> ChunkedBitset:
        """Build from resident ids (any order, duplicates allowed), vectorised."""
        s = cls(chunk_words, n_chunks)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return s
        chunk_bits = chunk_words * WORD_BITS
        chunk_of = ids // chunk_bits
        keys = np.unique(chunk_of)
        if keys[-1] >= n_chunks:
            raise IndexError(f"id {int(ids.max())} is beyond the index capacity")
        mask = np.zeros((keys.size + 1) * chunk_bits, dtype=np.bool_)
        local = (np.searchsorted(keys, chunk_of) + 1) * chunk_bits + ids % chunk_bits
        mask[local] = True
        s.data = np.packbits(mask, bitorder="little").view("<u8").reshape(-1, chunk_words)
        s.rows = keys.size + 1
        s.slot[keys] = np.arange(1, keys.size + 1, dtype=np.int32)
        return s

    @classmethod
    def from_parts(cls, slot: np.ndarray, data: np.ndarray) -> ChunkedBitset:
        """Adopt arrays (e.g. memory-mapped from a snapshot); ``data`` row 0 must be zero."""
        s = cls.__new__(cls)
        s.chunk_words = int(data.shape[1])
        s.slot = slot
        s.data = data
        s.rows = int(data.shape[0])
        s.layout = 0
        return s

    # -- single-bit updates, O(1) --------------------------------------------------------------
    def _row_for(self, chunk: int) -> int:
        row = int(self.slot[chunk])
        if row:
            return row
        if self.rows == self.data.shape[0]:
            grown = np.zeros((max(2, self.rows * 2), self.chunk_words), dtype=np.uint64)
            grown[: self.rows] = self.data[: self.rows]
            self.data = grown
        elif not self.data.flags.writeable:
            self.data = np.array(self.data)
        row = self.rows
        self.rows += 1
        self.slot[chunk] = row
        self.layout += 1
        return row

    def add(self, rid: int) -> None:
        word, bit = divmod(rid, WORD_BITS)
        chunk, col = divmod(word, self.chunk_words)
        row = self._row_for(chunk)
        self.data[row, col] |= np.uint64(1 << bit)

    def add_many(self, ids: np.ndarray) -> None:
        """Add many ids, vectorised: O(ids + chunks touched)."""
        other = ChunkedBitset.from_ids(ids, self.chunk_words, self.slot.size)
        if self.rows == 1:  # empty: adopt the freshly packed rows as they are
            self.data, self.slot, self.rows = other.data, other.slot, other.rows
            self.layout += 1
            return
        for chunk in np.flatnonzero(other.slot):
            row = self._row_for(int(chunk))
            self.data[row] |= other.data[other.slot[chunk]]

    def discard_many(self, ids: np.ndarray) -> None:
        """Remove many ids, vectorised: O(ids + chunks touched). Rows stay (layout unchanged)."""
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[ids < self.slot.size * self.chunk_words * WORD_BITS]
        if ids.size == 0:
            return
        other = ChunkedBitset.from_ids(ids, self.chunk_words, self.slot.size)
        for chunk in np.flatnonzero(other.slot):
            row = int(self.slot[chunk])
            if row:
                self.data[row] &= ~other.data[other.slot[chunk]]

    def discard(self, rid: int) -> None:
        word, bit = divmod(rid, WORD_BITS)
        chunk, col = divmod(word, self.chunk_words)
        if chunk >= self.slot.size:
            return
        row = int(self.slot[chunk])
        if row:
            self.data[row, col] &= np.uint64(~(1 << bit) & 0xFFFF_FFFF_FFFF_FFFF)

    def __contains__(self, rid: int) -> bool:
        word, bit = divmod(rid, WORD_BITS)
        chunk, col = divmod(word, self.chunk_words)
        if chunk >= self.slot.size:
            return False
        return bool((int(self.data[int(self.slot[chunk]), col]) >> bit) & 1)

    def grow(self, n_chunks: int) -> None:
        """Make room for more chunks (the id space grew); new chunks start absent."""
        if n_chunks > self.slot.size:
            slot = np.zeros(n_chunks, dtype=np.int32)
            slot[: self.slot.size] = self.slot
            self.slot = slot
            self.layout += 1

    # -- whole-set reads ----------------------------------------------------------------------
    def present(self) -> np.ndarray:
        """Boolean per chunk: does this set store that chunk (it may still be all zeros)."""
        return self.slot > 0

    def count(self) -> int:
        return int(np.bitwise_count(self.data[1 : self.rows]).sum(dtype=np.int64))

    def ids(self) -> np.ndarray:
        """All members, sorted, as int64."""
        order = np.flatnonzero(self.slot)
        return words_to_ids(self.data[self.slot[order]], order, self.chunk_words)

    def nbytes(self) -> int:
        """Memory this set holds (rows in use are what a snapshot stores)."""
        return int(self.data.nbytes + self.slot.nbytes)

    def compact_data(self) -> np.ndarray:
        """The rows in use, for saving."""
        return self.data[: self.rows]


@functools.cache
def _tables16() -> tuple[np.ndarray, np.ndarray]:
    """Per 16-bit value: its popcount, and the positions of its set bits (row of 16, flat)."""
    v = np.arange(1 << 16)
    bits = (v[:, None] >> np.arange(16)) & 1
    pop = bits.sum(axis=1).astype(np.uint8)
    positions = np.argsort(1 - bits, axis=1, kind="stable").astype(np.uint8)
    return pop, positions.reshape(-1)


def _bit_positions(flat: np.ndarray, total: int) -> np.ndarray:
    """Positions of set bits in ``flat`` (uint64 words), sorted, as int64."""
    if total * 3 >= flat.size * WORD_BITS:  # dense: one unpack and one scan beat gathering
        return np.flatnonzero(np.unpackbits(flat.view(np.uint8), bitorder="little"))
    # Sparse to medium: expand only non-zero 16-bit pieces through lookup tables, branch-free.
    pop, positions = _tables16()
    nz = np.flatnonzero(flat)
    halves = flat[nz].view(np.uint16)
    cnt = pop[halves]
    piece = np.repeat(np.arange(halves.size), cnt)
    ends = np.cumsum(cnt, dtype=np.int64)
    rank = np.arange(total, dtype=np.int64) - (ends - cnt)[piece]
    bit = positions[halves[piece].astype(np.int64) * 16 + rank]
    return nz[piece >> 2] * WORD_BITS + (piece & 3) * 16 + bit


def words_to_ids(words: np.ndarray, chunks: np.ndarray, chunk_words: int) -> np.ndarray:
    """Turn a (k, chunk_words) block of bitset words for chunks ``chunks`` into sorted ids."""
    flat = words.reshape(-1)
    total = int(np.bitwise_count(flat).sum(dtype=np.int64))
    if total == 0:
        return np.empty(0, dtype=np.int64)
    pos = _bit_positions(flat, total)
    chunks = np.asarray(chunks, dtype=np.int64)
    chunk_bits = chunk_words * WORD_BITS
    if chunks[-1] - chunks[0] == chunks.size - 1:  # consecutive chunks: one shift for all
        pos += chunks[0] * chunk_bits
    else:
        pos += ((chunks - np.arange(chunks.size)) * chunk_bits)[pos // chunk_bits]
    return pos
