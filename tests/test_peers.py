"""The benchmark peers agree exactly with the plain-set reference on random data and expressions.

Why it matters: the audience benchmark compares speeds, which is only meaningful if every peer
computes the same audience. One real redis-server serves the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.peers import (
    PythonSetPeer,
    RedisBitopPeer,
    RoaringPeer,
    SQLitePeer,
    needed_sets,
    pack_redis_bits,
    unpack_redis_bits,
)
from engine.audience.expr import All, And, Diff, Node, Not, Or, Tag, Unit, parse
from engine.testing import RedisServer
from tests.props import examples

pytestmark = pytest.mark.redis

LEAVES: dict[str, Tag | Unit] = {
    "tag:elderly": Tag("elderly"),
    "tag:warned_7d": Tag("warned_7d"),
    "tag:student": Tag("student"),
    "grid:03-17": Unit("grid", "03-17"),
    "village:v.1": Unit("village", "v.1"),
    "station:s1": Unit("station", "s1"),
    "officer:o-9": Unit("officer", "o-9"),
}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@st.composite
def populations(draw: st.DrawFn) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """A universe, its live residents and every named set (a subset of live, maybe empty)."""
    universe = draw(st.integers(1, 300))
    ids = st.integers(0, universe - 1)
    live = np.array(sorted(draw(st.sets(ids, max_size=universe))), dtype=np.int64)
    live_set = set(live.tolist())
    sets: dict[str, np.ndarray] = {}
    for name in LEAVES:
        if name.startswith("grid:") and universe > 1:  # units are often id ranges
            lo = draw(ids)
            hi = draw(st.integers(lo, universe))
            members = live_set & set(range(lo, hi))
        else:
            members = live_set & draw(st.sets(ids, max_size=universe))
        sets[name] = np.array(sorted(members), dtype=np.int64)
    return universe, live, sets


def _expressions() -> st.SearchStrategy[Node]:
    leaves = st.one_of(st.sampled_from(list(LEAVES.values())), st.just(All()))
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            kids.map(Not),
            st.lists(kids, min_size=1, max_size=4).map(lambda xs: And(tuple(xs))),
            st.lists(kids, min_size=1, max_size=4).map(lambda xs: Or(tuple(xs))),
            st.tuples(kids, kids).map(lambda lr: Diff(*lr)),
        ),
        max_leaves=10,
    )


def _check_all_agree(peers: list, reference: PythonSetPeer, nodes: list[Node]) -> None:
    for node in nodes:
        want = reference.ids(node)
        assert reference.count(node) == want.size
        for peer in peers:
            got = peer.ids(node)
            assert got.dtype == np.int64, peer.name
            assert np.array_equal(got, want), (peer.name, node)
            assert peer.count(node) == want.size, (peer.name, node)


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(population=populations(), nodes=st.lists(_expressions(), min_size=1, max_size=6))
def test_every_peer_matches_the_reference(
    redis_server: RedisServer,
    population: tuple[int, np.ndarray, dict[str, np.ndarray]],
    nodes: list[Node],
) -> None:
    universe, live, sets = population
    reference = PythonSetPeer(universe, live, sets)
    peers = [
        SQLitePeer(universe, live, sets),
        SQLitePeer(universe, live, sets, needed=needed_sets(nodes)),
        RoaringPeer(universe, live, sets),
        RedisBitopPeer(universe, live, sets, server=redis_server),
    ]
    try:
        _check_all_agree(peers, reference, nodes)
    finally:
        for p in peers:
            p.close()


@settings(max_examples=examples(200), deadline=None)
@given(population=populations(), nodes=st.lists(_expressions(), min_size=1, max_size=6))
def test_in_process_peers_match_the_reference_more_often(
    population: tuple[int, np.ndarray, dict[str, np.ndarray]], nodes: list[Node]
) -> None:
    universe, live, sets = population
    peers = [SQLitePeer(universe, live, sets), RoaringPeer(universe, live, sets)]
    _check_all_agree(peers, PythonSetPeer(universe, live, sets), nodes)


def _small() -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    live = np.array([0, 1, 2, 3, 5, 8, 9], dtype=np.int64)  # 4, 6, 7 are not live
    sets = {
        "tag:elderly": np.array([1, 2, 3, 9], dtype=np.int64),
        "tag:warned_7d": np.array([2, 8], dtype=np.int64),
        "grid:03-17": np.array([0, 1, 2, 3], dtype=np.int64),
    }
    return 10, live, sets


@pytest.fixture
def small_peers(redis_server: RedisServer) -> Iterator[list]:
    universe, live, sets = _small()
    peers = [
        PythonSetPeer(universe, live, sets),
        SQLitePeer(universe, live, sets),
        RoaringPeer(universe, live, sets),
        RedisBitopPeer(universe, live, sets, server=redis_server),
    ]
    yield peers
    for p in peers:
        p.close()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("elderly & grid:03-17 & ~warned_7d", [1, 3]),
        ("~elderly", [0, 5, 8]),  # relative to live, not to the universe
        ("all", [0, 1, 2, 3, 5, 8, 9]),
        ("grid:03-17 - elderly | warned_7d", [0, 2, 8]),
        ("~(elderly | grid:03-17 | warned_7d)", [5]),
        ("~~warned_7d", [2, 8]),
    ],
)
def test_hand_computed_answers(small_peers: list, text: str, want: list[int]) -> None:
    node = parse(text)
    for peer in small_peers:
        assert peer.ids(node).tolist() == want, peer.name
        assert peer.count(node) == len(want), peer.name


def test_unknown_set_is_a_key_error(small_peers: list) -> None:
    for peer in small_peers:
        with pytest.raises(KeyError, match="tag:nobody"):
            peer.count(parse("elderly & nobody"))


def test_sqlite_loads_only_needed_sets() -> None:
    universe, live, sets = _small()
    peer = SQLitePeer(universe, live, sets, needed={"tag:elderly"})
    assert peer.count(parse("~elderly")) == 3
    with pytest.raises(KeyError, match="grid:03-17"):
        peer.count(parse("grid:03-17"))
    with pytest.raises(KeyError, match="tag:nobody"):
        SQLitePeer(universe, live, sets, needed={"tag:nobody"})
    peer.close()


def test_bad_input_is_refused() -> None:
    universe, live, sets = _small()
    with pytest.raises(ValueError, match="sorted and unique"):
        RoaringPeer(universe, live[::-1].copy(), sets)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        SQLitePeer(universe, live, {"tag:x": np.array([10])})


def test_memory_is_reported(small_peers: list) -> None:
    for peer in small_peers:
        assert peer.memory_bytes() > 0, peer.name


def test_redis_peer_close_removes_its_keys(redis_server: RedisServer) -> None:
    universe, live, sets = _small()
    r = redis_server.client()
    before = r.dbsize()
    peer = RedisBitopPeer(universe, live, sets, server=redis_server)
    assert r.dbsize() == before + 1 + len(sets)
    peer.count(parse("elderly & ~warned_7d"))
    assert r.dbsize() == before + 1 + len(sets)  # temporaries deleted in the same round trip
    peer.close()
    assert r.dbsize() == before


def test_redis_peer_owns_a_server_when_given_none() -> None:
    universe, live, sets = _small()
    peer = RedisBitopPeer(universe, live, sets)
    port = peer.server.port
    assert peer.count(parse("elderly")) == 4
    peer.close()
    assert not peer.server.running
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=1.0).ping()


@settings(max_examples=examples(100), deadline=None)
@given(st.sets(st.integers(0, 5000), max_size=400))
def test_redis_bit_packing_round_trips(members: set[int]) -> None:
    ids = np.array(sorted(members), dtype=np.int64)
    assert np.array_equal(unpack_redis_bits(pack_redis_bits(ids)), ids)


def test_redis_bit_order_matches_setbit(redis_server: RedisServer) -> None:
    r = redis_server.client()
    ids = np.array([0, 7, 8, 63, 64, 1000], dtype=np.int64)
    for i in ids.tolist():
        r.setbit("bitorder", i, 1)
    assert r.get("bitorder") == pack_redis_bits(ids)
    dense = np.arange(0, 800, 2, dtype=np.int64)  # takes the dense decoding path
    assert np.array_equal(unpack_redis_bits(pack_redis_bits(dense)), dense)
    r.delete("bitorder")
