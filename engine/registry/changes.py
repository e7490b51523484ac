"""Registry changes as messages, so every engine of a group applies the same ones in order.

Each engine holds the whole resident registry (audiences need all of it), so a change made in one
place must be replayed everywhere. Changes name residents by external id (``ext_id``), never by
dense id: dense ids are an engine's local numbering. Like warnings and feedback (see
:mod:`engine.model`), changes are frozen msgspec structs tagged by ``type``, decoded at the edge
into :class:`InvalidRegistryChange` naming the field, and never echo what the sender wrote.

Replay rule: every change is an *assignment*, never a difference
-----------------------------------------------------------------

An engine that restarts loads the registry files (which may already hold any prefix of the
change stream) and replays the stream from its first entry (``engine.group.registry_feed``).
So applying changes ``c1..cn`` to a registry that already holds ``c1..ck`` must give what applying
them once gives, and must not fail. Each change therefore states the value of what it names:

- ``TagChanged`` sets a tag on or off (not "toggle").
- ``ResidentAdded`` is a put: a new ext_id gets a new dense id; a live ext_id is overwritten with
  exactly the message's fields and tags, keeping its dense id (identical fields: nothing happens);
  a removed ext_id is brought back on its old dense id (the newest, if bulk loading left several).
  An ext_id thus keeps one dense id for good, so a replay gives every resident the dense id it had
  before, and every engine agrees on them.
- ``ResidentUpdated`` sets only the fields it carries. A contact officer is always given with its
  grid (``officer`` without ``grid`` is refused at decoding), so whether an officer answers for the
  grid never depends on a newer state met during a replay. A grid alone keeps the contact only if
  they answer for it, as :meth:`Registry.update_resident` does.
- ``ResidentRemoved`` removes; the dense id stays reserved and remembers its ext_id.
- A ``TagChanged``, ``ResidentUpdated`` or ``ResidentRemoved`` for a *removed* ext_id does nothing:
  in a replay it is a change from before the removal. Only an ext_id the registry has never held
  is refused (:class:`RegistryError`), as is an unknown tag, grid or officer, whatever the state.

Why this converges: whether a change is valid depends only on the message, the taxonomy and the
jurisdiction (never on the resident's current fields), and every field's final value is set by the
last change that names it, which the replay applies last again. The price: a ``ResidentAdded``
for an ext_id already in use cannot be told from a replay, so it overwrites instead of being
refused; the one writer of the change stream must hand out ext_ids without repeats. The rule also
needs registry files that keep removed residents' ext_ids (snapshots do).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from engine.explain import explain_message
from engine.model import InvalidMessage
from engine.privacy import normalize_phone
from engine.registry.registry import Registry
from engine.registry.units import RegistryError

__all__ = [
    "InvalidRegistryChange",
    "RegistryChange",
    "ResidentAdded",
    "ResidentRemoved",
    "ResidentUpdated",
    "TagChanged",
    "apply_change",
    "decode_change",
    "encode_change",
]

ExtId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^\S+\Z")]
"""An external id: non-empty, no spaces (it names a resident across all engines)."""
TagKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
"""Only bounded: a misspelt tag reaches the registry, which answers with the closest names."""
UnitKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
OfficerKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Phone = Annotated[str, msgspec.Meta(pattern=r"^(\+?[0-9][0-9 -]{3,24})?\Z")]
"""As :class:`engine.model.PhoneTarget`, or empty: not every resident has a phone."""
Text = Annotated[str, msgspec.Meta(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*\Z")]
"""As :data:`engine.model.ShortText`, without control characters: registry columns are NUL-padded
bytes (a trailing ``\\x00`` would be lost, and engines would then disagree with the message)."""
# Patterns end in ``\Z``: ``$`` would also match before a final newline ("R1\n" would pass).
Tags = Annotated[tuple[TagKey, ...], msgspec.Meta(max_length=256)]


class _Change(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Common field: the resident, by external id (dense ids differ between engines).

    Subclasses repeat ``frozen=True`` for type checkers (see ``engine.model._Feedback``).
    """

    ext_id: ExtId


class TagChanged(_Change, frozen=True, tag="tag_changed"):
    """Set (``on``) or clear one tag: a value, not a toggle, so a replay changes nothing."""

    tag: TagKey
    on: bool


class ResidentAdded(_Change, frozen=True, tag="resident_added"):
    """A resident with all their fields: a put (see the module doc for an ext_id in use)."""

    name: Text
    phone: Phone
    address: Text
    grid: UnitKey
    officer: OfficerKey | None = None
    tags: Tags = ()


class ResidentUpdated(_Change, frozen=True, tag="resident_updated"):
    """Some fields; an omitted field is unchanged. A move is a new ``grid``.

    ``officer`` omitted keeps the contact if they answer for the (new) grid; ``null`` drops it;
    a key sets it and needs ``grid`` too, so its validity never depends on the current grid.
    """

    name: Text | msgspec.UnsetType = msgspec.UNSET
    phone: Phone | msgspec.UnsetType = msgspec.UNSET
    address: Text | msgspec.UnsetType = msgspec.UNSET
    grid: UnitKey | msgspec.UnsetType = msgspec.UNSET
    officer: OfficerKey | msgspec.UnsetType | None = msgspec.UNSET

    def __post_init__(self) -> None:
        if isinstance(self.officer, str) and self.grid is msgspec.UNSET:
            raise ValueError("`officer` must come with `grid` (the grid the officer answers for)")


class ResidentRemoved(_Change, frozen=True, tag="resident_removed"):
    """The resident leaves the registry; their dense id stays reserved for their ext_id."""


RegistryChange = TagChanged | ResidentAdded | ResidentUpdated | ResidentRemoved

CHANGE_TYPES: Final = ("tag_changed", "resident_added", "resident_updated", "resident_removed")

_CHOICES: Final[dict[str, tuple[str, ...]]] = {"type": CHANGE_TYPES}
"""Allowed values by field path, so a rejection says what was expected, not what was sent."""


class InvalidRegistryChange(InvalidMessage):
    """A registry change that cannot be decoded; ``field`` names the offending field."""


_decoder = msgspec.json.Decoder(RegistryChange)
_encoder = msgspec.json.Encoder()


def decode_change(data: bytes | str) -> RegistryChange:
    """JSON -> one registry change (tagged by ``type``), or :class:`InvalidRegistryChange`."""
    try:
        return _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        field, what = explain_message(exc, _CHOICES)
        raise InvalidRegistryChange(field, what or "a valid message") from exc


def encode_change(change: RegistryChange) -> bytes:
    """One change as compact JSON, as :func:`decode_change` reads it (unset fields omitted)."""
    return _encoder.encode(change)


# --- applying ---------------------------------------------------------------------------------


def _tag_index(registry: Registry, key: str) -> int:
    """The tag's index, or the registry's own error naming the closest tags."""
    return registry._tag(key)


def _grid_officer(registry: Registry, grid: str, officer: str | None) -> tuple[int, int]:
    """Grid and officer indexes (-1: none); raises if the officer does not answer for the grid."""
    g = registry.jurisdiction.find("grid", grid)
    return g, registry._officer_for(officer, g)


def _ids_of(registry: Registry, ext_id: str) -> tuple[int | None, int | None]:
    """(live dense id, newest removed dense id) of an ext_id; ``None`` where there is none."""
    key = ext_id.encode("utf-8")
    live = registry._by_ext.find(key, registry.alive)
    dead = registry._by_ext.find(key, ~registry.alive)
    return (live[0] if live else None), (dead[-1] if dead else None)


def _known(registry: Registry, ext_id: str) -> tuple[int | None, int | None]:
    """:func:`_ids_of`, refusing an ext_id the registry has never held."""
    live, dead = _ids_of(registry, ext_id)
    if live is None and dead is None:
        raise RegistryError(f"unknown external id {ext_id!r}: no resident has ever had it")
    return live, dead


def apply_change(registry: Registry, change: RegistryChange) -> None:
    """Apply one change; a refused change (:class:`RegistryError`) changes nothing.

    Applying the same changes in the same order to copies of one registry gives the same
    registry, dense ids included; replaying them again changes nothing (see the module doc).
    """
    if isinstance(change, TagChanged):
        t = _tag_index(registry, change.tag)
        live, _ = _known(registry, change.ext_id)
        if live is not None:
            s = registry.sets["tag"][t]
            s.add(live) if change.on else s.discard(live)
    elif isinstance(change, ResidentAdded):
        _add(registry, change)
    elif isinstance(change, ResidentUpdated):
        _update(registry, change)
    else:
        live, _ = _known(registry, change.ext_id)
        if live is not None:
            registry.remove_resident(live)


def _add(registry: Registry, change: ResidentAdded) -> None:
    """Put: validate everything, then create, overwrite or bring back (module doc)."""
    _grid_officer(registry, change.grid, change.officer)  # validates before anything changes
    wanted = {_tag_index(registry, t) for t in change.tags}
    live, dead = _ids_of(registry, change.ext_id)
    if live is not None:
        _overwrite(registry, live, change, wanted)
    else:
        fields = {
            "name": change.name,
            "phone": change.phone,
            "address": change.address,
            "grid": change.grid,
            "officer": change.officer,
            "tags": change.tags,
        }
        if dead is not None:
            registry.revive_resident(dead, **fields)  # type: ignore[arg-type]
        else:
            registry.add_resident(change.ext_id, **fields)  # type: ignore[arg-type]


def _overwrite(registry: Registry, rid: int, change: ResidentAdded, wanted: set[int]) -> None:
    """Give a live resident exactly the fields of ``change``; untouched fields are not rewritten,
    so an identical put writes nothing (not even a phone index entry)."""
    phone = normalize_phone(change.phone)
    registry.update_resident(
        rid,
        name=change.name if change.name != registry.name[rid] else None,
        phone=change.phone if phone != registry.phone[rid] else None,
        address=change.address if change.address != registry.address[rid] else None,
        grid=change.grid,
        officer=change.officer,
    )
    for t, s in enumerate(registry.sets["tag"]):
        s.add(rid) if t in wanted else s.discard(rid)


def _update(registry: Registry, change: ResidentUpdated) -> None:
    """Validate the grid and officer whatever the state, then update a live resident."""
    grid = None if isinstance(change.grid, msgspec.UnsetType) else change.grid
    if grid is not None:
        officer = None if isinstance(change.officer, msgspec.UnsetType) else change.officer
        _grid_officer(registry, grid, officer)
    live, _ = _known(registry, change.ext_id)
    if live is None:
        return
    registry.update_resident(
        live,
        name=None if isinstance(change.name, msgspec.UnsetType) else change.name,
        phone=None if isinstance(change.phone, msgspec.UnsetType) else change.phone,
        address=None if isinstance(change.address, msgspec.UnsetType) else change.address,
        grid=grid,
        officer=change.officer,
    )
