"""Chunked bitsets: membership, ids and zero-copy views stay right in any chunk order."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engine.audience.bitset import ChunkedBitset, words_to_ids
from engine.audience.program import Conj, Disj, Evaluator, Leaf

CHUNK_WORDS = 1  # 64 ids a chunk
N_CHUNKS = 8
IDS = st.integers(min_value=0, max_value=CHUNK_WORDS * 64 * N_CHUNKS - 1)


@given(st.lists(IDS, max_size=200), st.lists(IDS, max_size=50))
def test_add_discard_contains_count_ids(adds: list[int], drops: list[int]) -> None:
    s = ChunkedBitset(CHUNK_WORDS, N_CHUNKS)
    for i in adds:
        s.add(i)
    for i in drops:
        s.discard(i)
    expected = set(adds) - set(drops)
    assert s.count() == len(expected)
    assert s.ids().tolist() == sorted(expected)
    assert all((i in s) == (i in expected) for i in range(N_CHUNKS * 64))


@given(st.lists(IDS, max_size=300), st.lists(IDS, max_size=300))
def test_from_ids_and_add_many_match_single_adds(first: list[int], second: list[int]) -> None:
    bulk = ChunkedBitset.from_ids(np.array(first, dtype=np.int64), CHUNK_WORDS, N_CHUNKS)
    bulk.add_many(np.array(second, dtype=np.int64))
    one = ChunkedBitset(CHUNK_WORDS, N_CHUNKS)
    for i in first + second:
        one.add(i)
    assert bulk.ids().tolist() == one.ids().tolist() == sorted(set(first + second))


@given(st.lists(IDS, max_size=300), st.lists(IDS, max_size=300))
def test_discard_many_matches_single_discards(first: list[int], drop: list[int]) -> None:
    s = ChunkedBitset.from_ids(np.array(first, dtype=np.int64), CHUNK_WORDS, N_CHUNKS)
    layout = s.layout
    s.discard_many(np.array([*drop, 10**9], dtype=np.int64))  # far ids are ignored
    assert s.ids().tolist() == sorted(set(first) - set(drop))
    assert s.layout == layout  # compiled programs over this set stay valid


@given(st.permutations(range(N_CHUNKS)))
def test_evaluation_is_right_when_chunks_arrive_out_of_order(order: list[int]) -> None:
    """Rows stored out of chunk order must be gathered, not viewed as if consecutive."""
    live = ChunkedBitset.from_ids(np.arange(N_CHUNKS * 64), CHUNK_WORDS, N_CHUNKS)
    s = ChunkedBitset(CHUNK_WORDS, N_CHUNKS)
    for chunk in order:
        s.add(chunk * 64 + chunk)  # one distinctive id per chunk
    ev = Evaluator(live)
    expected = [c * 64 + c for c in range(N_CHUNKS)]
    assert ev.ids(ev.program(Leaf(s))).tolist() == expected
    assert ev.ids(ev.program(Conj((Leaf(live), Leaf(s)), ()))).tolist() == expected
    assert ev.ids(ev.program(Disj((Leaf(s), Leaf(s))))).tolist() == expected
    assert ev.count(ev.program(Conj((), (Leaf(s),)))) == N_CHUNKS * 64 - N_CHUNKS


def test_program_stays_right_as_bits_change_and_is_rerecorded_when_layout_changes() -> None:
    live = ChunkedBitset.from_ids(np.arange(N_CHUNKS * 64), CHUNK_WORDS, N_CHUNKS)
    s = ChunkedBitset.from_ids(np.array([1, 2]), CHUNK_WORDS, N_CHUNKS)
    ev = Evaluator(live)
    prog = ev.program(Conj((Leaf(live), Leaf(s)), ()))
    s.add(3)  # same chunk: same layout, the recorded views see the new bit
    assert prog.valid() and ev.ids(prog).tolist() == [1, 2, 3]
    s.add(200)  # a new chunk: the recorded chunk list is stale
    assert not prog.valid()
    assert ev.ids(ev.program(Conj((Leaf(live), Leaf(s)), ()))).tolist() == [1, 2, 3, 200]


def test_words_to_ids_maps_chunks_to_global_positions() -> None:
    words = np.zeros((2, 2), dtype=np.uint64)
    words[0, 1] = 1 << 63
    words[1, 0] = 0b101
    assert words_to_ids(words, np.array([3, 7]), 2).tolist() == [
        3 * 128 + 64 + 63,
        7 * 128 + 0,
        7 * 128 + 2,
    ]
