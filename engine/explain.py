"""Turning msgspec's validation errors into (field path, what was expected): one translation.

Rule files and messages from the warning centre are both validated by msgspec; both must tell a
person which field is wrong and why, in the same words.

Messages can carry personal data in any field, and their rejection reasons end up in logs. So for
messages (``private=True``) the reason never repeats what was sent: msgspec's "Invalid enum
value 'x'" and "Invalid value 'x'" lose the value, and an unknown field is reported at its
parent's path without its name (the name may be a resident's). The dead-letter record keeps the
raw message for whoever may read it.
"""

from __future__ import annotations

import re

import msgspec

_QUOTED_VALUE = re.compile(r"^(Invalid enum value|Invalid value) .*$", re.S)


def explain(
    exc: msgspec.ValidationError | msgspec.DecodeError, *, private: bool = False
) -> tuple[str, str]:
    """``("category[0].tag[3].key", "expected `str`, got `int`")`` from a msgspec error.

    With ``private``, nothing the sender wrote appears in the result (see the module doc)."""
    text = str(exc)
    what, _, at = text.partition(" - at `$")
    path = at.rstrip("`").removeprefix(".")
    if what.startswith("Object missing required field"):
        name = what.split("`")[1]
        path = f"{path}.{name}" if path else name
        what = "required, but missing"
    elif what.startswith("Object contains unknown field"):
        if private:
            what = "only the fields of the format (it has a field the format does not define)"
        else:
            name = what.split("`")[1]
            path = f"{path}.{name}" if path else name
            what = "unknown field"
    else:
        if private:
            what = _QUOTED_VALUE.sub(lambda m: m.group(1), what)
        if what[:2].istitle():
            what = what[0].lower() + what[1:]
    return path, what


def explain_message(
    exc: msgspec.ValidationError | msgspec.DecodeError,
    choices: dict[str, tuple[str, ...]] | None = None,
) -> tuple[str, str]:
    """:func:`explain` for a message from outside: private, with errors raised by a struct's
    ``__post_init__`` ("`expires` must be ...") attributed to their field, and a bad enum or
    tag answered with its ``choices`` (by full path, else by last name) when known."""
    field, what = explain(exc, private=True)
    if not field and what.startswith("`"):
        field = what.split("`")[1]
        what = what.removeprefix(f"`{field}` ")
    allowed = (choices or {}).get(field) or (choices or {}).get(field.rsplit(".", 1)[-1])
    if allowed and what.startswith(("invalid enum value", "invalid value")):
        what = f"one of {', '.join(allowed)}"
    return field, what
