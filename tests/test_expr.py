"""The audience expression parser: precedence, round trips, and errors that point at the fault."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.audience.expr import (
    All,
    And,
    AudienceSyntaxError,
    Diff,
    Not,
    Or,
    Tag,
    Unit,
    parse,
    terms,
    to_text,
)
from tests.small_county import EXPRESSIONS


def strip(node: object) -> str:
    return to_text(node)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a | b & c", Or((Tag("a"), And((Tag("b"), Tag("c")))))),
        ("~a & b", And((Not(Tag("a")), Tag("b")))),
        ("a & b - c", Diff(And((Tag("a"), Tag("b"))), Tag("c"))),
        ("a - b & c", And((Diff(Tag("a"), Tag("b")), Tag("c")))),
        ("a-b-c", Diff(Diff(Tag("a"), Tag("b")), Tag("c"))),
        ("~~a", Not(Not(Tag("a")))),
        ("(a | b) & ~(c | d)", And((Or((Tag("a"), Tag("b"))), Not(Or((Tag("c"), Tag("d"))))))),
        ("grid:03-17 - student", Diff(Unit("grid", "03-17"), Tag("student"))),
        ("grid:03-17-student", Unit("grid", "03-17-student")),
        ("officer:P03012&all", And((Unit("officer", "P03012"), All()))),
        ("  elderly  ", Tag("elderly")),
    ],
)
def test_precedence_and_shapes(text: str, expected: object) -> None:
    assert strip(parse(text)) == strip(expected)


def test_positions_are_recorded() -> None:
    node = parse("elderly & grid:03-17 & ~warned_7d")
    leaves = terms(node)
    assert [leaf.pos for leaf in leaves] == [0, 10, 24]


@pytest.mark.parametrize(
    ("text", "pos", "fragment"),
    [
        ("", 0, "empty expression"),
        ("elderly &", 9, "found the end"),
        ("elderly & | student", 10, "found '|'"),
        ("(elderly | student", 18, "')' to close the '(' at position 0"),
        ("elderly)", 7, "unbalanced ')'"),
        ("elderly student", 8, "expected an operator"),
        ("elderly # x", 8, "unexpected character '#'"),
        ("town:01", 0, "unknown unit kind 'town'"),
        ("grid:", 5, "missing id after 'grid:'"),
        ("grid & x", 4, "'grid' needs an id"),
        ("老人", 0, "unexpected character '老'"),
    ],
)
def test_syntax_errors_name_the_position(text: str, pos: int, fragment: str) -> None:
    with pytest.raises(AudienceSyntaxError) as info:
        parse(text)
    assert info.value.pos == pos
    assert fragment in info.value.message
    # The rendered message shows the text and a caret under the fault.
    lines = str(info.value).splitlines()
    assert lines[1] == f"  {text}"
    assert lines[2] == "  " + " " * pos + "^"


@given(EXPRESSIONS)
def test_text_round_trip(node: object) -> None:
    text = strip(node)
    assert strip(parse(text)) == text


@given(st.text(alphabet="ab_:-&|~() grid01all", max_size=30))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        node = parse(text)
    except AudienceSyntaxError as err:
        assert 0 <= err.pos <= len(text)
    else:
        # Whatever parsed renders back to an equivalent expression.
        assert strip(parse(strip(node))) == strip(node)
