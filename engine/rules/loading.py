"""Decode TOML rule files into msgspec types, turning every failure into a :class:`RuleError`."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import msgspec

from engine.errors import WarnDispatchError
from engine.explain import explain

T = TypeVar("T")


class RuleError(WarnDispatchError, ValueError):
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
        key, what = explain(exc)
        raise RuleError(path, key, what) from exc
    except msgspec.DecodeError as exc:
        raise RuleError(path, "", f"valid TOML syntax ({exc})") from exc
