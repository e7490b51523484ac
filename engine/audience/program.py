"""Compile an expression tree into a plan over bitsets, and evaluate it with reusable buffers.

A plan has three node types. ``Conj(pos, neg)`` is "in every ``pos`` and in no ``neg``" (with no
``pos`` it starts from the live residents); ``Disj`` is a union; ``Leaf`` is a stored bitset.
``a & ~b``, ``a - b`` and ``~b`` all become one ``Conj``, evaluated as ``(A | B) ^ B``: and-not in
place, two passes, no temporary.

Evaluation first works out which chunks can hold a result (a conjunction can only hold chunks
all its positive terms hold), then touches only those. ``grid:03-17 & elderly`` reads one or
two 8 KiB chunks of the ``elderly`` bitset, not all of it.

Invariant relied on: every stored set contains only live residents (removal clears the bits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from engine.audience.bitset import ChunkedBitset, words_to_ids
from engine.audience.expr import All, And, Diff, Node, Not, Or, Tag, Unit, parse


@dataclass(frozen=True, slots=True)
class Leaf:
    bitset: ChunkedBitset


@dataclass(frozen=True, slots=True)
class Conj:
    pos: tuple[PlanNode, ...]
    neg: tuple[PlanNode, ...]


@dataclass(frozen=True, slots=True)
class Disj:
    items: tuple[PlanNode, ...]


PlanNode = Leaf | Conj | Disj
Resolver = Callable[[Tag | Unit], ChunkedBitset]


def compile_node(node: Node, resolve: Resolver, live: ChunkedBitset) -> PlanNode:
    """Resolve names and normalise: flatten ands and ors, fold negations into conjunctions."""
    match node:
        case Tag() | Unit():
            return Leaf(resolve(node))
        case All():
            return Leaf(live)
        case Not(operand=operand):
            inner = compile_node(operand, resolve, live)
            if isinstance(inner, Conj) and not inner.pos and len(inner.neg) == 1:
                return inner.neg[0]  # ~~x is x, because x holds only live residents
            return Conj((), (inner,))
        case And(items=items):
            pos: list[PlanNode] = []
            neg: list[PlanNode] = []
            for item in items:
                _merge_conj(compile_node(item, resolve, live), pos, neg)
            return Conj(tuple(pos), tuple(neg))
        case Diff(left=left, right=right):
            pos, neg = [], []
            _merge_conj(compile_node(left, resolve, live), pos, neg)
            neg.append(compile_node(right, resolve, live))
            return Conj(tuple(pos), tuple(neg))
        case Or(items=items):
            flat: list[PlanNode] = []
            for item in items:
                sub = compile_node(item, resolve, live)
                flat.extend(sub.items if isinstance(sub, Disj) else (sub,))
            return Disj(tuple(flat))
    raise TypeError(f"not an audience node: {node!r}")


def _merge_conj(sub: PlanNode, pos: list[PlanNode], neg: list[PlanNode]) -> None:
    if isinstance(sub, Conj):
        pos.extend(sub.pos)
        neg.extend(sub.neg)
    else:
        pos.append(sub)


class Program:
    """A plan recorded as a fixed list of numpy calls over views and scratch buffers.

    Recording resolves everything that depends only on the sets' layout (which chunks, which
    rows, which views); running it is then just the ufunc calls. It stays valid while every
    set it reads keeps its ``layout``.
    """

    __slots__ = ("chunks", "counts", "deps", "ops", "result")

    def __init__(
        self,
        deps: list[tuple[ChunkedBitset, int]],
        ops: list[Callable[[], object]],
        chunks: np.ndarray,
        result: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        self.deps = deps
        self.ops = ops
        self.chunks = chunks
        self.result = result
        self.counts = counts

    def valid(self) -> bool:
        return all(b.layout == layout for b, layout in self.deps)

    def run(self) -> np.ndarray:
        for op in self.ops:
            op()
        return self.result


class Evaluator:
    """Records plans into programs, sharing a pool of scratch buffers sized to the index.

    Programs from one evaluator share buffers, so run one at a time and read its result before
    running another (the engine runs on one trio thread; use one evaluator per thread).
    """

    def __init__(self, live: ChunkedBitset) -> None:
        self.live = live
        self._pool: list[np.ndarray] = []
        self._top = 0
        self._counts = np.empty(0, dtype=np.uint8)
        self._ops: list[Callable[[], object]] = []
        self._deps: dict[int, tuple[ChunkedBitset, int]] = {}

    # -- buffers ------------------------------------------------------------------------------
    def _shape(self) -> tuple[int, int]:
        return (self.live.slot.size, self.live.chunk_words)

    def _acquire(self, k: int) -> np.ndarray:
        shape = self._shape()
        if self._top == len(self._pool):
            self._pool.append(np.empty(shape, dtype=np.uint64))
        elif self._pool[self._top].shape[0] < shape[0]:
            self._pool[self._top] = np.empty(shape, dtype=np.uint64)
        buf = self._pool[self._top]
        self._top += 1
        return buf[:k]

    def _release(self, n: int = 1) -> None:
        self._top -= n

    # -- chunk selection ----------------------------------------------------------------------
    def _present(self, node: PlanNode) -> np.ndarray:
        match node:
            case Leaf(bitset=b):
                self._deps[id(b)] = (b, b.layout)
                return b.present()
            case Conj(pos=pos, neg=neg):
                for n in neg:
                    self._present(n)  # not for the mask: to record what the plan reads
                if not pos:
                    self._deps[id(self.live)] = (self.live, self.live.layout)
                    return self.live.present()
                mask = self._present(pos[0]).copy()
                for p in pos[1:]:
                    mask &= self._present(p)
                return mask
            case Disj(items=items):
                mask = self._present(items[0]).copy()
                for p in items[1:]:
                    mask |= self._present(p)
                return mask
        raise TypeError(node)

    # -- recording ----------------------------------------------------------------------------
    @staticmethod
    def _view(b: ChunkedBitset, chunks: np.ndarray) -> np.ndarray | None:
        """A zero-copy view of ``b`` over ``chunks`` when its rows for them are consecutive."""
        rows = b.slot[chunks]
        first = int(rows[0])
        if first and np.array_equal(rows - first, np.arange(rows.size)):
            return b.data[first : first + rows.size]
        return None

    def _operand(self, node: PlanNode, chunks: np.ndarray) -> tuple[np.ndarray, int]:
        """Where the value of ``node`` over ``chunks`` will be, and buffers it holds (0 or 1)."""
        if isinstance(node, Leaf):
            view = self._view(node.bitset, chunks)
            if view is not None:
                return view, 0
            out = self._acquire(chunks.size)
            rows = node.bitset.slot[chunks]
            self._ops.append(partial(np.take, node.bitset.data, rows, axis=0, out=out))
            return out, 1
        out = self._acquire(chunks.size)
        self._into(node, chunks, out)
        return out, 1

    def _into(self, node: PlanNode, chunks: np.ndarray, out: np.ndarray) -> None:
        """Record writing the value of a non-leaf ``node`` over ``chunks`` into ``out``."""
        if isinstance(node, Disj):
            self._fold(np.bitwise_or, node.items, chunks, out)
            return
        assert isinstance(node, Conj)
        held_base = 0
        if node.pos:
            self._fold(np.bitwise_and, node.pos, chunks, out)
            base = out
        else:
            base, held_base = self._operand(Leaf(self.live), chunks)
        if not node.neg:
            if base is not out:
                self._ops.append(partial(np.copyto, out, base))
            self._release(held_base)
            return
        if len(node.neg) == 1:
            union, held = self._operand(node.neg[0], chunks)
        else:
            union, held = self._acquire(chunks.size), 1
            self._fold(np.bitwise_or, node.neg, chunks, union)
        self._ops.append(partial(np.bitwise_or, base, union, out=out))
        self._ops.append(partial(np.bitwise_xor, out, union, out=out))
        self._release(held + held_base)

    def _fold(
        self,
        op: np.ufunc,
        items: tuple[PlanNode, ...],
        chunks: np.ndarray,
        out: np.ndarray,
    ) -> None:
        first, held1 = self._operand(items[0], chunks)
        if len(items) == 1:
            if first is not out:
                self._ops.append(partial(np.copyto, out, first))
            self._release(held1)
            return
        second, held2 = self._operand(items[1], chunks)
        self._ops.append(partial(op, first, second, out=out))
        self._release(held1 + held2)
        for item in items[2:]:
            value, held = self._operand(item, chunks)
            self._ops.append(partial(op, out, value, out=out))
            self._release(held)

    def program(self, node: PlanNode) -> Program:
        """Record ``node`` as a program (cheap; done again only when a set's layout changes)."""
        self._top = 0
        self._ops = []
        self._deps = {}
        chunks = np.flatnonzero(self._present(node))
        k = chunks.size
        if k == 0:
            result = np.empty((0, self.live.chunk_words), dtype=np.uint64)
        elif isinstance(node, Leaf):
            result, _ = self._operand(node, chunks)
        else:
            result = self._acquire(k)
            self._into(node, chunks, result)
        if self._counts.size < result.size:
            self._counts = np.empty(self._shape()[0] * self._shape()[1], dtype=np.uint8)
        counts = self._counts[: result.size].reshape(result.shape)
        return Program(list(self._deps.values()), self._ops, chunks, result, counts)

    def count(self, program: Program) -> int:
        words = program.run()
        if words.size == 0:
            return 0
        np.bitwise_count(words, out=program.counts)
        return int(program.counts.sum(dtype=np.int64))

    def ids(self, program: Program) -> np.ndarray:
        return words_to_ids(program.run(), program.chunks, self.live.chunk_words)


class Audience:
    """A parsed and resolved expression, ready to evaluate again and again.

    Plans hold the index's bitsets themselves, so later updates to residents are seen.
    """

    __slots__ = ("_evaluator", "_program", "plan", "text", "tree")

    def __init__(self, text: str, tree: Node, plan: PlanNode, evaluator: Evaluator) -> None:
        self.text = text
        self.tree = tree
        self.plan = plan
        self._evaluator = evaluator
        self._program: Program | None = None

    def program(self) -> Program:
        """The recorded program, recorded again if a set it reads changed layout."""
        p = self._program
        if p is None or not p.valid():
            p = self._program = self._evaluator.program(self.plan)
        return p

    def count(self) -> int:
        """How many live residents match."""
        return self._evaluator.count(self.program())

    def ids(self) -> np.ndarray:
        """The matching resident ids, sorted ascending, as int64."""
        return self._evaluator.ids(self.program())

    def within(self, scope: PlanNode) -> Audience:
        """The same audience limited to ``scope`` (e.g. one officer's jurisdiction)."""
        return Audience(self.text, self.tree, Conj((scope, self.plan), ()), self._evaluator)

    def __repr__(self) -> str:
        return f"Audience({self.text!r})"


def compile_text(text: str, resolve: Resolver, evaluator: Evaluator) -> Audience:
    """Parse, resolve and plan ``text`` once."""
    tree = parse(text)
    return Audience(text, tree, compile_node(tree, resolve, evaluator.live), evaluator)
