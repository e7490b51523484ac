"""A tiny hand-made county for tests, plus a plain-Python-sets model of audience semantics."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from engine.audience.expr import All, And, Diff, Node, Not, Or, Tag, Unit
from engine.registry.registry import Registry
from engine.registry.units import Jurisdiction, Officer
from engine.registry.units import Unit as U
from engine.rules.taxonomy import Taxonomy

TAGS = (
    "elderly",
    "student",
    "shop_owner",
    "warned_7d",
    "renter",
    "veteran",
    "grid_member",
    "village_cadre",
)
STATIONS = ("01", "02")
VILLAGES = (("01-01", "01"), ("01-02", "01"), ("02-01", "02"))
GRIDS = (("01-11", "01-01"), ("01-12", "01-01"), ("01-21", "01-02"), ("02-11", "02-01"))
OFFICERS = (
    Officer("P01", "王警官", "community_officer", "01", ("01-11", "01-12")),
    Officer("P02", "李辅警", "auxiliary", "01", ("01-21",)),
    Officer("P03", "赵警官", "community_officer", "02", ("02-11",)),
    Officer("D01", "值班民警", "duty_officer", "01"),
    Officer("C02", "所长", "chief", "02"),
)
#: Which contact officers may serve each grid.
GRID_OFFICERS = {"01-11": ("P01",), "01-12": ("P01",), "01-21": ("P02",), "02-11": ("P03",)}


def make_registry(chunk_words: int = 1, taxonomy: Taxonomy | None = None) -> Registry:
    """``chunk_words=1`` puts 64 ids in a chunk, so small tests cross many chunks."""
    jurisdiction = Jurisdiction(
        [U(s, f"派出所{s}") for s in STATIONS],
        [U(v, f"村{v}", p) for v, p in VILLAGES],
        [U(g, f"网格{g}", p) for g, p in GRIDS],
    )
    taxonomy = taxonomy or Taxonomy.from_keys(TAGS)
    return Registry(taxonomy, jurisdiction, OFFICERS, chunk_words=chunk_words)


@dataclass
class Person:
    grid: str
    officer: str | None
    tags: set[str] = field(default_factory=set)


def village_of(grid: str) -> str:
    return dict(GRIDS)[grid]


def station_of(grid: str) -> str:
    return dict(VILLAGES)[village_of(grid)]


def model_eval(node: Node, people: dict[int, Person]) -> set[int]:
    """The meaning of an expression, computed the slow obvious way."""
    live = set(people)
    match node:
        case Tag(key=k):
            return {r for r, p in people.items() if k in p.tags}
        case Unit(kind="grid", key=k):
            return {r for r, p in people.items() if p.grid == k}
        case Unit(kind="village", key=k):
            return {r for r, p in people.items() if village_of(p.grid) == k}
        case Unit(kind="station", key=k):
            return {r for r, p in people.items() if station_of(p.grid) == k}
        case Unit(kind="officer", key=k):
            return {r for r, p in people.items() if p.officer == k}
        case All():
            return live
        case Not(operand=x):
            return live - model_eval(x, people)
        case And(items=items):
            out = model_eval(items[0], people)
            for i in items[1:]:
                out &= model_eval(i, people)
            return out
        case Or(items=items):
            out = set()
            for i in items:
                out |= model_eval(i, people)
            return out
        case Diff(left=a, right=b):
            return model_eval(a, people) - model_eval(b, people)
    raise TypeError(node)


LEAVES = st.one_of(
    st.sampled_from(TAGS).map(Tag),
    st.sampled_from([g for g, _ in GRIDS]).map(lambda k: Unit("grid", k)),
    st.sampled_from([v for v, _ in VILLAGES]).map(lambda k: Unit("village", k)),
    st.sampled_from(STATIONS).map(lambda k: Unit("station", k)),
    st.sampled_from(["P01", "P02", "P03"]).map(lambda k: Unit("officer", k)),
    st.just(All()),
)


def _compound(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    many = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(
        children.map(Not),
        many.map(And),
        many.map(Or),
        st.tuples(children, children).map(lambda lr: Diff(*lr)),
    )


EXPRESSIONS: st.SearchStrategy[Node] = st.recursive(LEAVES, _compound, max_leaves=10)
