"""Decode TOML rule files into msgspec types, turning every failure into a :class:`RuleError`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import msgspec

T = TypeVar("T")

_MSGSPEC_PATH = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


class RuleError(ValueError):
    """A rule file is wrong. Names the file, the key (a dotted path) and what was expected."""

    def __init__(self, file: str | Path, key: str, expected: str) -> None:
        self.file = str(file)
        self.key = key or "(top level)"
        self.expected = expected
        super().__init__(f"{self.file}: {self.key}: {self.expected}")


def default_rules_dir() -> Path:
    """The shipped ``rules/`` folder: bundled in the wheel, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_rules", here.parent / "rules"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no rules folder found next to {here}")


def _key_from_msgspec_path(path: str) -> str:
    """``.category[0].tags[3].key`` -> ``category[0].tags[3].key``."""
    return path[1:] if path.startswith(".") else path


def load_toml(path: str | Path, type_: type[T]) -> T:
    """Read ``path`` and decode it strictly into ``type_``; any problem raises RuleError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuleError(path, "", f"a readable TOML file ({exc.strerror})") from exc
    try:
        return msgspec.toml.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        m = _MSGSPEC_PATH.match(str(exc))
        assert m is not None
        what = m.group("what")
        key = _key_from_msgspec_path(m.group("path") or "")
        if what.startswith("Object missing required field"):
            field = what.split("`")[1]
            key = f"{key}.{field}" if key else field
            what = "missing; this field is required"
        elif what.startswith("Object contains unknown field"):
            field = what.split("`")[1]
            key = f"{key}.{field}" if key else field
            what = "unknown field; not a key this file may have"
        else:
            what = what[0].lower() + what[1:]
        raise RuleError(path, key, what) from exc
    except msgspec.DecodeError as exc:
        raise RuleError(path, "", f"valid TOML syntax ({exc})") from exc
