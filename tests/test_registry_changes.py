"""Registry changes as messages: round trips, same changes -> same registry, replay is harmless.

The replay property is the one the group relies on: an engine restarts from registry files that
hold some prefix of the change stream and replays the stream from its first entry
(``engine.group.registry_feed``); it must end where an engine that never stopped is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audience.expr import Node, to_text
from engine.privacy import normalize_phone
from engine.registry.changes import (
    InvalidRegistryChange,
    RegistryChange,
    ResidentAdded,
    ResidentRemoved,
    ResidentUpdated,
    TagChanged,
    apply_change,
    decode_change,
    encode_change,
)
from engine.registry.registry import Registry
from engine.registry.units import RegistryError
from tests.props import examples
from tests.small_county import EXPRESSIONS, GRID_OFFICERS, GRIDS, TAGS, Person, make_registry
from tests.small_county import model_eval as model_audience

GRID_KEYS = tuple(g for g, _ in GRIDS)
BASE = ("B0", "B1", "B2", "B3")
GONE = "B9"
"""In the base registry, then removed: a tombstone a ``ResidentAdded`` may bring back."""
NEW = ("N0", "N1", "N2")
EXT_IDS = (*BASE, GONE, *NEW)
FIXED_AUDIENCES = (
    "all",
    "elderly",
    "grid:01-11",
    "station:01 & ~student",
    "officer:P01 | officer:P03",
    "(elderly | veteran) & village:01-01",
)


def base_registry() -> Registry:
    """Four residents over both stations, plus one removed; built the same way every call."""
    reg = make_registry(chunk_words=1)
    for i, ext in enumerate(BASE):
        grid = GRID_KEYS[i % len(GRID_KEYS)]
        reg.add_resident(
            ext,
            name=f"居民{i}",
            phone=f"1380000000{i}",
            address=f"路{i}号",
            grid=grid,
            officer=GRID_OFFICERS[grid][0] if i % 2 else None,
            tags=TAGS[i : i + 2],
        )
    gone = reg.add_resident(GONE, name="走了", phone="13900000000", address="x", grid="01-21")
    reg.remove_resident(gone)
    return reg


# --- strategies -------------------------------------------------------------------------------

names = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=12)
phones = st.sampled_from(["", "13800000000", "+86 138-1111-2222", "0571 8888 1234"])
ext_ids = st.sampled_from(EXT_IDS)


@st.composite
def grid_and_officer(draw: st.DrawFn) -> tuple[str, str | None]:
    grid = draw(st.sampled_from(GRID_KEYS))
    return grid, draw(st.sampled_from((None, *GRID_OFFICERS[grid])))


@st.composite
def added(draw: st.DrawFn) -> ResidentAdded:
    grid, officer = draw(grid_and_officer())
    return ResidentAdded(
        ext_id=draw(ext_ids),
        name=draw(names),
        phone=draw(phones),
        address=draw(names),
        grid=grid,
        officer=officer,
        tags=tuple(draw(st.lists(st.sampled_from(TAGS), max_size=3))),
    )


def _maybe(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | msgspec.UnsetType]:
    return st.one_of(st.just(msgspec.UNSET), strategy)


@st.composite
def updated(draw: st.DrawFn) -> ResidentUpdated:
    grid: str | msgspec.UnsetType = msgspec.UNSET
    officer: str | msgspec.UnsetType | None = msgspec.UNSET
    how = draw(st.sampled_from(["none", "grid", "officer_none", "both"]))
    if how in ("grid", "both"):
        grid, chosen = draw(grid_and_officer())
        officer = chosen if how == "both" else msgspec.UNSET
    elif how == "officer_none":
        officer = None
    return ResidentUpdated(
        ext_id=draw(ext_ids),
        name=draw(_maybe(names)),
        phone=draw(_maybe(phones)),
        address=draw(_maybe(names)),
        grid=grid,
        officer=officer,
    )


tag_changes = st.builds(TagChanged, ext_id=ext_ids, tag=st.sampled_from(TAGS), on=st.booleans())
changes: st.SearchStrategy[RegistryChange] = st.one_of(
    tag_changes, added(), updated(), st.builds(ResidentRemoved, ext_id=ext_ids)
)
sequences = st.lists(changes, max_size=25)


# --- helpers ----------------------------------------------------------------------------------


def apply_all(reg: Registry, seq: list[RegistryChange]) -> list[str | None]:
    """Apply in order; a refused change is recorded (its message) and skipped, as the feed does."""
    outcome: list[str | None] = []
    for change in seq:
        try:
            apply_change(reg, change)
        except RegistryError as exc:
            outcome.append(str(exc))
        else:
            outcome.append(None)
    return outcome


def state(reg: Registry) -> tuple[object, ...]:
    """Everything a replay must keep: dense ids, every live resident, the audiences."""
    people = []
    for ext in EXT_IDS:
        live = [r for r in range(reg.n_ids) if reg.is_live(r) and reg.ext_id[r] == ext]
        people.append((ext, [reg.resident(r) for r in live]))
    audiences = [reg.ids(text).tolist() for text in FIXED_AUDIENCES]
    return reg.n_ids, len(reg), people, audiences


@dataclass
class Row:
    """The model of one resident: what the last change naming each field said."""

    name: str
    phone: str
    address: str
    grid: str
    officer: str | None
    tags: set[str] = field(default_factory=set)


def model(seq: list[RegistryChange]) -> dict[str, Row]:
    """The meaning of a sequence on :func:`base_registry`, computed the obvious way."""
    rows: dict[str, Row | None] = {GONE: None}
    for i, ext in enumerate(BASE):
        grid = GRID_KEYS[i % len(GRID_KEYS)]
        officer = GRID_OFFICERS[grid][0] if i % 2 else None
        rows[ext] = Row(
            f"居民{i}", f"1380000000{i}", f"路{i}号", grid, officer, set(TAGS[i : i + 2])
        )
    for c in seq:
        known = c.ext_id in rows
        row = rows.get(c.ext_id)
        if isinstance(c, ResidentAdded):
            tags = set(c.tags)
            rows[c.ext_id] = Row(
                c.name, normalize_phone(c.phone), c.address, c.grid, c.officer, tags
            )
        elif not known or row is None:
            continue  # unknown: refused; removed: nothing to do
        elif isinstance(c, TagChanged):
            row.tags.add(c.tag) if c.on else row.tags.discard(c.tag)
        elif isinstance(c, ResidentRemoved):
            rows[c.ext_id] = None
        else:
            if isinstance(c.name, str):
                row.name = c.name
            if isinstance(c.phone, str):
                row.phone = normalize_phone(c.phone)
            if isinstance(c.address, str):
                row.address = c.address
            if isinstance(c.grid, str):
                row.grid = c.grid
                if c.officer is msgspec.UNSET and row.officer not in GRID_OFFICERS[c.grid]:
                    row.officer = None
            if not isinstance(c.officer, msgspec.UnsetType):
                row.officer = c.officer
    return {ext: row for ext, row in rows.items() if row is not None}


# --- (a) round trips --------------------------------------------------------------------------


@settings(max_examples=examples(200))
@given(change=changes)
def test_every_change_survives_encode_and_decode(change: RegistryChange) -> None:
    raw = encode_change(change)
    assert decode_change(raw) == change
    assert decode_change(raw.decode()) == change


# --- (b) same changes, same registry ----------------------------------------------------------


@settings(max_examples=examples(60), deadline=None)
@given(seq=sequences, nodes=st.lists(EXPRESSIONS, min_size=1, max_size=3))
def test_same_changes_give_same_audiences_and_the_models(
    seq: list[RegistryChange], nodes: list[Node]
) -> None:
    a, b = base_registry(), base_registry()
    assert apply_all(a, seq) == apply_all(b, seq)
    assert state(a) == state(b)
    for node in nodes:
        text = to_text(node)
        assert a.ids(text).tolist() == b.ids(text).tolist(), text

    # And both mean what the changes said.
    rows = model(seq)
    got = {}
    for ext in EXT_IDS:
        try:
            r = a.resident(a.lookup(ext))
        except RegistryError:
            continue
        got[ext] = Row(r.name, r.phone, r.address, r.grid, r.officer, set(r.tags))
    assert got == rows
    people = {a.lookup(ext): Person(row.grid, row.officer, row.tags) for ext, row in rows.items()}
    for node in nodes:
        assert a.ids(to_text(node)).tolist() == sorted(model_audience(node, people))


# --- (c) replaying is harmless ----------------------------------------------------------------


@settings(max_examples=examples(60), deadline=None)
@given(seq=sequences, data=st.data())
def test_replay_from_the_start_on_any_prefix_ends_where_one_pass_does(
    seq: list[RegistryChange], data: st.DataObject
) -> None:
    once = base_registry()
    refused = apply_all(once, seq)
    expected = state(once)

    # A second pass over the result changes nothing, and refuses nothing the first pass took.
    again = apply_all(once, seq)
    assert state(once) == expected
    assert {i for i, r in enumerate(again) if r} <= {i for i, r in enumerate(refused) if r}
    assert all(r is None or "unknown external id" in r for r in again)

    # A restart from files holding the first k changes, replaying the whole stream.
    k = data.draw(st.integers(0, len(seq)), label="k")
    restarted = base_registry()
    apply_all(restarted, seq[:k])
    replay = apply_all(restarted, seq)
    assert state(restarted) == expected
    assert {i for i, r in enumerate(replay) if r} <= {i for i, r in enumerate(refused) if r}


def test_replay_on_a_saved_and_loaded_snapshot(tmp_path: Path) -> None:
    """Snapshots keep removed residents' ext_ids, which the replay rule needs."""
    seq: list[RegistryChange] = [
        ResidentAdded(ext_id="N0", name="甲", phone="13811112222", address="a", grid="01-11"),
        TagChanged(ext_id="N0", tag="elderly", on=True),
        ResidentUpdated(ext_id="N0", grid="01-21", officer="P02"),
        ResidentRemoved(ext_id="B1"),
        ResidentAdded(
            ext_id="N1", name="乙", phone="", address="b", grid="02-11", tags=("renter",)
        ),
        ResidentRemoved(ext_id="N1"),
        ResidentAdded(ext_id="B9", name="回来", phone="13900000000", address="c", grid="01-12"),
        ResidentUpdated(ext_id="N0", grid="02-11"),
        TagChanged(ext_id="B0", tag="veteran", on=True),
    ]
    once = base_registry()
    assert apply_all(once, seq) == [None] * len(seq)
    expected = state(once)
    for k in (0, 3, 6, len(seq)):
        reg = base_registry()
        apply_all(reg, seq[:k])
        reg.save(tmp_path / f"k{k}")
        loaded = Registry.load(tmp_path / f"k{k}", taxonomy=reg.taxonomy)
        assert apply_all(loaded, seq) == [None] * len(seq)
        assert state(loaded) == expected


def test_a_removed_ext_id_keeps_its_dense_id_and_ignores_stale_changes() -> None:
    reg = base_registry()
    rid = reg.lookup("B2")
    apply_change(reg, ResidentRemoved(ext_id="B2"))
    before = state(reg)
    for stale in (
        TagChanged(ext_id="B2", tag="elderly", on=True),
        ResidentUpdated(ext_id="B2", name="x", grid="01-11", officer="P01"),
        ResidentRemoved(ext_id="B2"),
    ):
        apply_change(reg, stale)
        assert state(reg) == before
    apply_change(reg, ResidentAdded(ext_id="B2", name="又来", phone="", address="z", grid="02-11"))
    assert reg.lookup("B2") == rid
    assert reg.resident(rid).tags == ()
    assert reg.ids("grid:02-11").tolist().count(rid) == 1


def test_an_identical_add_changes_nothing_and_a_different_one_overwrites() -> None:
    reg = base_registry()
    r = reg.resident(reg.lookup("B1"))
    same = ResidentAdded(
        ext_id="B1",
        name=r.name,
        phone=r.phone,
        address=r.address,
        grid=r.grid,
        officer=r.officer,
        tags=r.tags,
    )
    before = state(reg)
    apply_change(reg, same)
    assert state(reg) == before
    apply_change(reg, ResidentAdded(ext_id="B1", name="新", phone="", address="q", grid="02-11"))
    after = reg.resident(reg.lookup("B1"))
    assert (after.id, after.name, after.grid, after.officer, after.tags) == (
        r.id,
        "新",
        "02-11",
        None,
        (),
    )


# --- (d) refusals -----------------------------------------------------------------------------

TOO_LONG = "x" * 300


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (
            '{"type":"tag_changed","ext_id":"B0","tag":"elderly","on":true,"who":1}',
            "(message)",
            "only the fields",
        ),
        ('{"type":"tag_changed","ext_id":"B0","tag":"elderly","on":"yes"}', "on", "bool"),
        ('{"type":"tag_changed","ext_id":7,"tag":"elderly","on":true}', "ext_id", "str"),
        ('{"type":"resident_removed"}', "ext_id", "missing"),
        ('{"type":"resident_removed","ext_id":""}', "ext_id", "length >= 1"),
        (f'{{"type":"resident_removed","ext_id":"{TOO_LONG}"}}', "ext_id", "length <= 128"),
        (
            f'{{"type":"tag_changed","ext_id":"B0","tag":"{TOO_LONG}","on":true}}',
            "tag",
            "length <= 64",
        ),
        (
            f'{{"type":"resident_updated","ext_id":"B0","name":"{TOO_LONG}"}}',
            "name",
            "length <= 256",
        ),
        ('{"type":"resident_updated","ext_id":"B0","grid":null}', "grid", "got `null`"),
        ('{"type":"resident_updated","ext_id":"B0","officer":"P01"}', "officer", "`grid`"),
        (
            '{"type":"resident_added","ext_id":"B0","name":"a","phone":"call me","address":"",'
            '"grid":"01-11"}',
            "phone",
            "regex",
        ),
        (
            '{"type":"resident_added","ext_id":"B0","name":"a","phone":"","address":"",'
            '"grid":"01-11","tags":"elderly"}',
            "tags",
            "array",
        ),
        ('{"type":"resident_moved","ext_id":"B0"}', "type", "one of tag_changed"),
        ('{"ext_id":"B0"}', "type", "missing"),
        ('{"type":"resident_updated","ext_id":"B0","address":"x\\u0000"}', "address", "regex"),
        ('{"type":"resident_removed","ext_id":"B0\\n"}', "ext_id", "regex"),
        ('{"type":"resident_updated","ext_id":"B0","phone":"138 0000 0000\\n"}', "phone", "regex"),
        ("\x00\xff garbage", "(message)", "malformed"),
        ("[1, 2]", "(message)", "object"),
    ],
)
def test_malformed_changes_are_refused_naming_the_field(raw: str, field: str, words: str) -> None:
    with pytest.raises(InvalidRegistryChange) as info:
        decode_change(raw.encode("utf-8", "surrogateescape"))
    assert info.value.field == field
    assert words in str(info.value)
    assert TOO_LONG not in str(info.value) and "call me" not in str(info.value)


@settings(max_examples=examples(200))
@given(raw=st.binary(max_size=80) | changes.map(encode_change).map(lambda b: b[: len(b) // 2]))
def test_any_bytes_decode_or_raise_invalid_registry_change(raw: bytes) -> None:
    with contextlib.suppress(InvalidRegistryChange):
        decode_change(raw)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (TagChanged(ext_id="NOBODY", tag="elderly", on=True), "'NOBODY'"),
        (ResidentUpdated(ext_id="NOBODY", name="x"), "'NOBODY'"),
        (ResidentRemoved(ext_id="NOBODY"), "'NOBODY'"),
        (TagChanged(ext_id="B0", tag="elderlyy", on=True), "'elderlyy'; did you mean elderly"),
        (TagChanged(ext_id="B9", tag="studnt", on=False), "did you mean student"),
        (
            ResidentAdded(
                ext_id="N0", name="a", phone="", address="", grid="01-11", tags=("shop_ownr",)
            ),
            "did you mean shop_owner",
        ),
        (ResidentAdded(ext_id="N0", name="a", phone="", address="", grid="09-99"), "'09-99'"),
        (
            ResidentAdded(ext_id="B0", name="a", phone="", address="", grid="02-11", officer="P01"),
            "'P01' does not answer for grid '02-11'",
        ),
        (ResidentUpdated(ext_id="B9", grid="01-11", officer="P03"), "'P03' does not answer"),
    ],
)
def test_unknown_names_are_refused_and_change_nothing(change: RegistryChange, words: str) -> None:
    reg = base_registry()
    before = state(reg)
    with pytest.raises(RegistryError) as info:
        apply_change(reg, change)
    assert words in str(info.value)
    assert state(reg) == before
