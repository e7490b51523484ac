"""The resident tag taxonomy: which tags exist, what they are called, and which the engine owns.

The shipped list lives in ``rules/taxonomy.toml``. It is decoded strictly (unknown fields are
errors) and then checked beyond types, so a typo in the file stops the engine at start-up with
a :class:`RuleError` naming the file, the key path and what was expected, instead of surfacing
later as residents silently missing from an audience.

A tag's numeric id is its position in the file; bitsets and the registry index by it.
"""

from __future__ import annotations

import bisect
import difflib
import heapq
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from engine.audience.expr import RESERVED
from engine.rules.loading import RuleError, default_rules_dir, load_toml

__all__ = [
    "FORMAT_VERSION",
    "KEY_PATTERN",
    "Category",
    "TagDef",
    "Taxonomy",
    "load_taxonomy",
]

FORMAT_VERSION = 1
MAX_KEY_LEN = 48
KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,47}")
"""Use with ``fullmatch``; spelled ``^[a-z][a-z0-9_]{0,47}$`` in messages and the file header."""

_KEY_RULE = (
    "a key matching ^[a-z][a-z0-9_]{0,47}$ (a lowercase ASCII letter, then lowercase letters, "
    "digits or '_', at most 48 characters)"
)
_SUGGEST_CUTOFF = 0.6  # difflib's own default: below this, suggestions are noise
_FUZZY_POOL = 24  # keys sharing the most trigrams with the word; only these get difflib scoring
# A word longer than this cannot reach the cutoff against a key of at most MAX_KEY_LEN chars:
# ratio = 2*M/(len(a)+len(b)) with M <= MAX_KEY_LEN.
_FUZZY_MAX_WORD = int(2 * MAX_KEY_LEN / _SUGGEST_CUTOFF) - MAX_KEY_LEN
_SEPARATORS = re.compile(r"[\s\-.]+")


# --- file format (decoded strictly by msgspec) -----------------------------------------------


class TagSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One ``[[category.tag]]`` table as written in the file."""

    key: str
    label: str
    description: str = ""
    dynamic: bool = False


class CategorySpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One ``[[category]]`` table as written in the file."""

    key: str
    label: str
    tag: tuple[TagSpec, ...]
    description: str = ""


class TaxonomyFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The whole file; ``version`` lets a future format be rejected instead of misread."""

    version: int
    category: tuple[CategorySpec, ...]


# --- runtime types ---------------------------------------------------------------------------


class TagDef(msgspec.Struct, frozen=True):
    """A tag as the engine sees it; ``category`` is the owning category's key."""

    key: str
    label: str
    description: str
    dynamic: bool
    category: str


class Category(msgspec.Struct, frozen=True):
    """A category and its tags in file order (display order for officers)."""

    key: str
    label: str
    description: str
    tags: tuple[TagDef, ...]


def _trigrams(word: str) -> set[str]:
    """Padded character trigrams: cheap overlap count that shortlists candidates for difflib."""
    padded = f"^{word}$"
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


class Taxonomy:
    """Immutable, validated tag list: key <-> id lookups, labels, categories and suggestions.

    Build it with :func:`load_taxonomy` or :meth:`from_keys`; the constructor trusts that its
    input was validated (it only re-checks that keys are unique, since ids depend on that).
    """

    __slots__ = (
        "_by_key",
        "_categories",
        "_dynamic",
        "_grams",
        "_keys",
        "_labels",
        "_max_label",
        "_sorted",
        "_source",
        "_tags",
    )

    _by_key: dict[str, int]
    _categories: tuple[Category, ...]
    _dynamic: tuple[str, ...]
    _grams: dict[str, tuple[int, ...]]
    _keys: tuple[str, ...]
    _labels: tuple[str, ...]
    _max_label: int
    _sorted: tuple[str, ...]
    _source: str
    _tags: tuple[TagDef, ...]

    def __init__(self, categories: Iterable[Category], source: str = "<memory>") -> None:
        cats = tuple(categories)
        tags = tuple(t for c in cats for t in c.tags)
        keys = tuple(t.key for t in tags)
        by_key = {k: i for i, k in enumerate(keys)}
        if len(by_key) != len(keys):
            raise ValueError("tag keys must be unique: a tag id is a key's position")
        grams: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            for g in _trigrams(k):
                grams.setdefault(g, []).append(i)
        labels = tuple(t.label.lower() for t in tags)
        init = object.__setattr__
        init(self, "_categories", cats)
        init(self, "_tags", tags)
        init(self, "_keys", keys)
        init(self, "_by_key", by_key)
        init(self, "_dynamic", tuple(t.key for t in tags if t.dynamic))
        init(self, "_sorted", tuple(sorted(keys)))
        init(self, "_grams", {g: tuple(ids) for g, ids in grams.items()})
        init(self, "_labels", labels)
        init(self, "_max_label", max((len(label) for label in labels), default=0))
        init(self, "_source", source)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"Taxonomy is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Taxonomy is immutable (cannot delete {name!r})")

    @classmethod
    def from_keys(cls, keys: Iterable[str], *, dynamic: Iterable[str] = ()) -> Taxonomy:
        """A one-category ("test") taxonomy for tests; keys are validated like the file's."""
        key_list = list(keys)
        dyn = set(dynamic)
        if dyn - set(key_list):
            raise ValueError(f"dynamic keys not among the keys: {sorted(dyn - set(key_list))}")
        spec = TaxonomyFile(
            version=FORMAT_VERSION,
            category=(
                CategorySpec(
                    key="test",
                    label="测试",
                    tag=tuple(TagSpec(key=k, label=k, dynamic=k in dyn) for k in key_list),
                ),
            ),
        )
        return _build(spec, "<from_keys>")

    # -- lookups (hot path: plain dict access) --

    @property
    def keys(self) -> tuple[str, ...]:
        """All tag keys; a tag's id is its index here."""
        return self._keys

    @property
    def categories(self) -> tuple[Category, ...]:
        return self._categories

    @property
    def dynamic_keys(self) -> tuple[str, ...]:
        """Tags the engine sets and clears itself; registry imports must not set them."""
        return self._dynamic

    @property
    def source(self) -> str:
        """Where this taxonomy came from (a file path, or ``<from_keys>``)."""
        return self._source

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._by_key

    def __repr__(self) -> str:
        return (
            f"<Taxonomy {len(self._keys)} tags in {len(self._categories)} categories "
            f"from {self._source}>"
        )

    def index(self, key: str) -> int:
        """The id of ``key``; :class:`KeyError` (with suggestions) if unknown."""
        try:
            return self._by_key[key]
        except (KeyError, TypeError):
            raise KeyError(self.unknown_message(key)) from None

    def get(self, key: str) -> int | None:
        """The id of ``key``, or ``None`` if unknown."""
        return self._by_key.get(key) if isinstance(key, str) else None

    def tag(self, key: str) -> TagDef:
        return self._tags[self.index(key)]

    def category_of(self, key: str) -> str:
        return self._tags[self.index(key)].category

    # -- suggestions for error messages --

    def unknown_message(self, word: object) -> str:
        """``unknown tag 'eldery'; did you mean elderly, elderly_alone?`` (or without a hint)."""
        hints = self.suggest(word) if isinstance(word, str) else []
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        return f"unknown tag {word!r}{hint}"

    def suggest(self, word: str, n: int = 3) -> list[str]:
        """Up to ``n`` existing keys close to ``word``, best first.

        Order: exact key, keys starting with the word (shortest first), difflib-close keys
        (shortlisted by shared trigrams so it stays well under a millisecond), keys containing
        the word, then tags whose Chinese label contains it (``独居`` -> ``elderly_alone``).
        """
        if n <= 0:
            return []
        raw = word.strip().lower()
        w = _SEPARATORS.sub("_", raw)
        if not w:
            return []
        found: dict[str, None] = {}  # insertion-ordered set

        def add(candidates: Iterable[str]) -> bool:
            for k in candidates:
                found.setdefault(k)
                if len(found) >= n:
                    return True
            return False

        keys = self._keys
        if w in self._by_key and add((w,)):
            return list(found)
        if len(w) <= MAX_KEY_LEN:
            lo = bisect.bisect_left(self._sorted, w)
            hi = bisect.bisect_left(self._sorted, w + "\x7f")
            prefixed = sorted(self._sorted[lo:hi], key=lambda k: (len(k), self._by_key[k]))
            if add(prefixed):
                return list(found)
        if len(w) <= _FUZZY_MAX_WORD and add(self._fuzzy(w)):
            return list(found)
        if len(w) <= MAX_KEY_LEN:
            # Whole segments first: 'bus' -> tour_bus_driver before alcohol_abuse.
            segment = "_" + w
            containing = sorted(
                (k for k in keys if w in k), key=lambda k: (segment not in k, len(k), k)
            )
            if add(containing):
                return list(found)
        if len(raw) <= self._max_label:
            by_label = [i for i, label in enumerate(self._labels) if raw in label]
            by_label.sort(key=lambda i: (len(self._labels[i]), i))
            add(keys[i] for i in by_label)
        return list(found)

    def _fuzzy(self, w: str) -> list[str]:
        """difflib ratio >= cutoff, best first, scored only on the trigram shortlist."""
        counts: dict[int, int] = {}
        for g in _trigrams(w):
            for i in self._grams.get(g, ()):
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            return []
        pool = heapq.nlargest(_FUZZY_POOL, counts, key=counts.__getitem__)
        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(w)
        scored: list[tuple[float, int]] = []
        for i in pool:
            matcher.set_seq1(self._keys[i])
            if (
                matcher.real_quick_ratio() >= _SUGGEST_CUTOFF
                and matcher.quick_ratio() >= _SUGGEST_CUTOFF
            ):
                ratio = matcher.ratio()
                if ratio >= _SUGGEST_CUTOFF:
                    scored.append((-ratio, i))
        scored.sort()
        return [self._keys[i] for _, i in scored]


# --- validation ------------------------------------------------------------------------------


def _check_key(file: str, path: str, key: str) -> None:
    if not KEY_PATTERN.fullmatch(key):
        raise RuleError(file, path, f"{_KEY_RULE}, got {key!r}")


def _check_label(file: str, path: str, label: str) -> None:
    if not label.strip():
        raise RuleError(file, path, "a non-empty label (the Chinese name shown to officers)")


def _validate(spec: TaxonomyFile, file: str) -> None:
    """Rules msgspec's types cannot express; raises the first problem found, in file order."""
    if spec.version != FORMAT_VERSION:
        raise RuleError(
            file,
            "version",
            f"version = {FORMAT_VERSION} (the only taxonomy format this engine reads), "
            f"got {spec.version}",
        )
    if not spec.category:
        raise RuleError(file, "category", "at least one [[category]] table")
    category_at: dict[str, str] = {}
    tag_at: dict[str, str] = {}
    for ci, cat in enumerate(spec.category):
        base = f"category[{ci}]"
        _check_key(file, f"{base}.key", cat.key)
        if cat.key in category_at:
            raise RuleError(
                file,
                f"{base}.key",
                f"a category key unique in the file, but {cat.key!r} is already defined "
                f"at {category_at[cat.key]}",
            )
        category_at[cat.key] = f"{base}.key"
        _check_label(file, f"{base}.label", cat.label)
        if not cat.tag:
            raise RuleError(
                file, f"{base}.tag", f"at least one [[category.tag]] in category {cat.key!r}"
            )
        for ti, tag in enumerate(cat.tag):
            path = f"{base}.tag[{ti}]"
            _check_key(file, f"{path}.key", tag.key)
            if tag.key in RESERVED:
                raise RuleError(
                    file,
                    f"{path}.key",
                    "a key that is not a reserved word of the audience language "
                    f"({', '.join(sorted(RESERVED))}), got {tag.key!r}",
                )
            if tag.key in tag_at:
                raise RuleError(
                    file,
                    f"{path}.key",
                    f"a tag key unique across the whole file, but {tag.key!r} is already "
                    f"defined at {tag_at[tag.key]}",
                )
            tag_at[tag.key] = f"{path}.key"
            _check_label(file, f"{path}.label", tag.label)


def _build(spec: TaxonomyFile, file: str) -> Taxonomy:
    _validate(spec, file)
    categories = tuple(
        Category(
            key=c.key,
            label=c.label,
            description=c.description,
            tags=tuple(
                TagDef(
                    key=t.key,
                    label=t.label,
                    description=t.description,
                    dynamic=t.dynamic,
                    category=c.key,
                )
                for t in c.tag
            ),
        )
        for c in spec.category
    )
    return Taxonomy(categories, source=file)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load and validate a taxonomy file (default: the shipped ``rules/taxonomy.toml``).

    Any problem raises :class:`RuleError`; the result is immutable, so callers load it once
    at start-up and share it.
    """
    file = Path(path) if path is not None else default_rules_dir() / "taxonomy.toml"
    return _build(load_toml(file, TaxonomyFile), str(file))
