"""Turning msgspec's validation errors into (field path, what was expected).

Rule files and messages from the warning centre are both validated by msgspec; both must tell a
person which field is wrong and why, in the same words.
"""

from __future__ import annotations

import msgspec


def explain(exc: msgspec.ValidationError | msgspec.DecodeError) -> tuple[str, str]:
    """``("category[0].tag[3].key", "expected `str`, got `int`")`` from a msgspec error."""
    text = str(exc)
    what, _, at = text.partition(" - at `$")
    path = at.rstrip("`").removeprefix(".")
    if what.startswith(("Object missing required field", "Object contains unknown field")):
        name = what.split("`")[1]
        path = f"{path}.{name}" if path else name
        what = "required, but missing" if "missing" in what else "unknown field"
    elif what[:2].istitle():
        what = what[0].lower() + what[1:]
    return path, what
