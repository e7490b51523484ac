"""The layer contract of ``engine/``, read from the source: no import cycles, imports go down.

Every ``import`` counts, including those inside functions (a cycle hidden in a function is still
a cycle). Imports under ``if TYPE_CHECKING:`` are left out: they name types, not run-time
dependencies. The contract is the table in README.md's "Layout" section; change both together.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS: list[tuple[str, ...]] = [
    ("engine.errors", "engine.explain", "engine.privacy", "engine.state_feed"),
    ("engine.model",),
    ("engine.audience", "engine.journal"),
    ("engine.rules", "engine.directory"),
    ("engine.machine", "engine.registry", "engine.transport", "engine.testing"),
    ("engine.incidents",),
    ("engine.durability", "engine.campaigns", "engine.stats", "engine.group", "engine.access"),
    ("engine.scheduler", "engine.window_tags"),
    ("engine.service",),
    ("engine.metrics",),
    ("engine.app",),
    ("engine.web",),
    (
        "engine.group.router",
        "engine.group.board",
        "engine.group.desk",
        "engine.group.member",
        "engine.group.inspect",
        "engine.group.registry_feed",
    ),
    ("engine.cli", "engine"),
]
"""Lowest first. A module may import modules of lower layers, and of its own package."""


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules("engine")


def _resolve(name: str) -> str | None:
    """The engine module an import names (``engine.x.y.Z`` -> ``engine.x.y``), or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports(module: str) -> set[str]:
    """Engine modules ``module`` imports at run time; ``from pkg import sub`` counts as
    ``pkg.sub``, not as the package."""
    tree = ast.parse(MODULES[module].read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", 0) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("engine", "simulator", "benchmarks", "tests"):
                target = _resolve(name) if name.startswith("engine") else name
                if target is not None and target != module:
                    found.add(target)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def layer_of(module: str) -> int:
    best, index = "", -1
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, i
    assert index >= 0, f"{module} is in no layer: add it to LAYERS and to the README"
    return index


def _package(module: str) -> str:
    return module.rpartition(".")[0] if module.count(".") >= 2 else module


def test_engine_never_imports_the_simulator_benchmarks_or_tests() -> None:
    bad = {m: sorted(t for t in ts if not t.startswith("engine")) for m, ts in GRAPH.items()}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_every_import_goes_down_a_layer_or_stays_in_its_package() -> None:
    upward = []
    for module, targets in GRAPH.items():
        for target in targets:
            if not target.startswith("engine") or module == "engine":
                continue
            inside = target.startswith(module + ".")  # a package's __init__ and its modules
            siblings = module.count(".") >= 2 and _package(module) == _package(target)
            if not (inside or siblings) and layer_of(target) >= layer_of(module):
                upward.append(f"{module} ({layer_of(module)}) -> {target} ({layer_of(target)})")
    assert upward == []


def test_no_import_cycles() -> None:
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if t not in GRAPH:
                continue
            if state[t] == 1:
                cycles.append([*stack[stack.index(t) :], t])
            elif state[t] == 0:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m != "engine" and state[m] == 0:
            visit(m)
    assert cycles == []


def test_the_checker_sees_imports_inside_functions() -> None:
    """The check would be worthless if it missed the imports that used to hide cycles."""
    tree_imports = imports("engine.registry.registry")
    assert "engine.registry.snapshot" in tree_imports
    assert layer_of("engine.registry.snapshot") == layer_of("engine.registry.registry")
