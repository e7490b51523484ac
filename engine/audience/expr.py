"""The audience expression language: text -> abstract syntax tree. Pure, no registry needed.

Grammar (``~`` binds tightest, then ``&`` and ``-`` (and-not), then ``|``)::

    expr   := term ('|' term)*
    term   := factor (('&' | '-') factor)*
    factor := '~' factor | '(' expr ')' | 'all' | TAG | KIND ':' ID
    TAG    := [A-Za-z_][A-Za-z0-9_]*          e.g. elderly_alone, warned_7d
    KIND   := grid | village | station | officer
    ID     := [A-Za-z0-9_.-]+                 e.g. grid:03-17 (a '-' inside an id is part of it)

Because ids may contain '-', write ``grid:03-17 - student`` with spaces to mean and-not.
"""

from __future__ import annotations

import re

import msgspec

from engine.errors import WarnDispatchError

UNIT_KINDS: tuple[str, ...] = ("grid", "village", "station", "officer")
RESERVED: frozenset[str] = frozenset({"all", *UNIT_KINDS, "county"})


class Tag(msgspec.Struct, frozen=True, tag=True):
    key: str
    pos: int = 0


class Unit(msgspec.Struct, frozen=True, tag=True):
    kind: str
    key: str
    pos: int = 0


class All(msgspec.Struct, frozen=True, tag=True):
    pos: int = 0


class Not(msgspec.Struct, frozen=True, tag=True):
    operand: Node


class And(msgspec.Struct, frozen=True, tag=True):
    items: tuple[Node, ...]


class Or(msgspec.Struct, frozen=True, tag=True):
    items: tuple[Node, ...]


class Diff(msgspec.Struct, frozen=True, tag=True):
    """``left - right``: residents in left but not in right."""

    left: Node
    right: Node


Node = Tag | Unit | All | Not | And | Or | Diff


class AudienceError(WarnDispatchError, ValueError):
    """Base class for audience expression errors; carries the text and the position at fault."""

    def __init__(self, message: str, expr: str, pos: int, *, safe: str | None = None) -> None:
        self.message = message
        self.expr = expr
        self.pos = pos
        self.safe = safe if safe is not None else message
        """The message without anything quoted from the expression (a name typed into an
        audience may be a resident's): what a service may log or store as a reason."""
        super().__init__(f"{message} at position {pos}\n  {expr}\n  {' ' * pos}^")


class AudienceSyntaxError(AudienceError):
    """The text is not a well-formed expression."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<unit>(?P<kind>[A-Za-z_][A-Za-z0-9_]*):(?P<id>[A-Za-z0-9_.\-]*))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>[&|~()\-])
    """,
    re.X,
)


def _tokenize(expr: str) -> list[tuple[str, str, int, tuple[str, str]]]:
    tokens: list[tuple[str, str, int, tuple[str, str]]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise AudienceSyntaxError(
                f"unexpected character {expr[pos]!r}", expr, pos, safe="unexpected character"
            )
        kind = m.lastgroup
        if m.group("unit") is not None:
            unit_kind, unit_id = m.group("kind"), m.group("id")
            if unit_kind not in UNIT_KINDS:
                expected = f"(expected one of {', '.join(UNIT_KINDS)})"
                raise AudienceSyntaxError(
                    f"unknown unit kind {unit_kind!r} {expected}",
                    expr,
                    pos,
                    safe=f"unknown unit kind {expected}",
                )
            if not unit_id:
                raise AudienceSyntaxError(f"missing id after '{unit_kind}:'", expr, m.end())
            tokens.append(("unit", m.group(0), pos, (unit_kind, unit_id)))
        elif kind == "name":
            tokens.append(("name", m.group(0), pos, ("", "")))
        elif kind == "op":
            tokens.append((m.group(0), m.group(0), pos, ("", "")))
        pos = m.end()
    tokens.append(("end", "", len(expr), ("", "")))
    return tokens


MAX_LENGTH = 4000
"""Longest expression accepted, in characters: a real audience is a few dozen."""
MAX_DEPTH = 32
"""Deepest nesting accepted (parentheses, ``~``, chains of ``-``). Every later stage (planning,
rendering) walks the tree; a bound here keeps a hostile expression from exhausting the stack."""


def _depth(node: Node) -> int:
    """The tree's depth, without recursion (the tree may be deep: that is what is checked)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        match n:
            case Not(operand=operand):
                stack.append((operand, d + 1))
            case And(items=items) | Or(items=items):
                stack.extend((i, d + 1) for i in items)
            case Diff(left=left, right=right):
                stack.extend(((left, d + 1), (right, d + 1)))
    return deepest


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        if len(expr) > MAX_LENGTH:
            raise AudienceSyntaxError(
                f"expression longer than {MAX_LENGTH} characters", expr[:60] + "...", 60
            )
        self.tokens = _tokenize(expr)
        self.i = 0
        self.depth = 0

    def nest(self, pos: int) -> None:
        """Called on each '(' or '~' before descending: the parser's own recursion is bounded."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise AudienceSyntaxError(f"nested deeper than {MAX_DEPTH} levels", self.expr, pos)

    def peek(self) -> str:
        return self.tokens[self.i][0]

    def take(self) -> tuple[str, str, int, tuple[str, str]]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, what: str) -> AudienceSyntaxError:
        kind, text, pos, _ = self.tokens[self.i]
        found = "the end of the expression" if kind == "end" else repr(text)
        safe = f"expected {what}, found " + ("the end" if kind == "end" else "something else")
        return AudienceSyntaxError(f"expected {what}, found {found}", self.expr, pos, safe=safe)

    def parse(self) -> Node:
        if self.peek() == "end":
            raise AudienceSyntaxError("empty expression", self.expr, 0)
        node = self.expr_()
        if self.peek() != "end":
            if self.peek() == ")":
                raise self.fail("an operator or the end (unbalanced ')')")
            raise self.fail("an operator (&, |, -) or the end")
        if _depth(node) > MAX_DEPTH:
            raise AudienceSyntaxError(
                f"nested deeper than {MAX_DEPTH} levels (split long chains of '-' with '|' or '&')",
                self.expr,
                0,
            )
        return node

    def expr_(self) -> Node:
        items = [self.term()]
        while self.peek() == "|":
            self.take()
            items.append(self.term())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def term(self) -> Node:
        node = self.factor()
        run: list[Node] = [node]
        while self.peek() in ("&", "-"):
            op = self.take()[0]
            right = self.factor()
            if op == "&":
                run.append(right)
            else:
                left = run[0] if len(run) == 1 else And(tuple(run))
                run = [Diff(left, right)]
        return run[0] if len(run) == 1 else And(tuple(run))

    def factor(self) -> Node:
        kind, text, pos, unit = self.tokens[self.i]
        if kind == "~":
            self.take()
            self.nest(pos)
            node: Node = Not(self.factor())
            self.depth -= 1
            return node
        if kind == "(":
            self.take()
            self.nest(pos)
            node = self.expr_()
            if self.peek() != ")":
                raise self.fail("')' to close the '(' at position " + str(pos))
            self.take()
            self.depth -= 1
            return node
        if kind == "unit":
            self.take()
            return Unit(unit[0], unit[1], pos)
        if kind == "name":
            self.take()
            if text == "all":
                return All(pos)
            if text in RESERVED:
                raise AudienceSyntaxError(
                    f"{text!r} needs an id, as in '{text}:ID'", self.expr, pos + len(text)
                )
            return Tag(text, pos)
        raise self.fail("a tag, 'all', a unit such as grid:ID, '~' or '('")


def parse(expr: str) -> Node:
    """Parse an audience expression; raises :class:`AudienceSyntaxError` naming the position."""
    return _Parser(expr).parse()


def to_text(node: Node) -> str:
    """Render a node back to text that parses to the same tree (fully parenthesised)."""
    match node:
        case Tag(key=key):
            return key
        case Unit(kind=kind, key=key):
            return f"{kind}:{key}"
        case All():
            return "all"
        case Not(operand=operand):
            return f"~{to_text(operand)}"
        case And(items=items):
            return "(" + " & ".join(to_text(i) for i in items) + ")"
        case Or(items=items):
            return "(" + " | ".join(to_text(i) for i in items) + ")"
        case Diff(left=left, right=right):
            return f"({to_text(left)} - {to_text(right)})"
    raise TypeError(f"not an audience node: {node!r}")


def terms(node: Node) -> list[Tag | Unit | All]:
    """The leaves of an expression, left to right."""
    match node:
        case Tag() | Unit() | All():
            return [node]
        case Not(operand=operand):
            return terms(operand)
        case And(items=items) | Or(items=items):
            return [leaf for item in items for leaf in terms(item)]
        case Diff(left=left, right=right):
            return terms(left) + terms(right)
    raise TypeError(f"not an audience node: {node!r}")
