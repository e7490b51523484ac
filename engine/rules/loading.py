"""Decode TOML rule files into msgspec types, turning every failure into a :class:`RuleError`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec

from engine.errors import WarnDispatchError
from engine.explain import explain

T = TypeVar("T")


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=_Versioned)


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


def load_rule_file(path: str | Path | None, name: str, type_: type[V]) -> tuple[Path, V]:
    """``path`` (default: the packaged ``rules/{name}``) decoded into ``type_``, whose
    ``version`` must be 1: the opening every versioned rule file shares."""
    file = Path(path) if path is not None else default_rules_dir() / name
    raw = load_toml(file, type_)
    if raw.version != 1:
        raise RuleError(file, "version", "1 (the only format this engine reads)")
    return file, raw


def convert(
    obj: object,
    type_: type[T],
    file: Path,
    prefix: str,
    choices: Mapping[str, tuple[str, ...]] | None = None,
) -> T:
    """``msgspec.convert`` of one table of a rule file, with errors turned into RuleErrors
    whose key starts with ``prefix``; ``choices`` lists the allowed values of enum fields by
    field name, so "invalid enum value" says what would have been valid."""
    try:
        return msgspec.convert(obj, type_)
    except msgspec.ValidationError as exc:
        sub, what = explain(exc)
        key = f"{prefix}.{sub}" if prefix and sub and not sub.startswith("[") else prefix + sub
        field = re.sub(r"\[\d+\]$", "", key).rsplit(".", 1)[-1]
        if choices and what.startswith("invalid enum value") and field in choices:
            what = f"one of {', '.join(choices[field])} ({what})"
        raise RuleError(file, key, what) from exc
