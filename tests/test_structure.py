"""The package's shape: no import circles between gendiff's modules (counting imports inside
functions too), and no class that grows into a few hundred lines of mixed concerns."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gendiff"
MAX_CLASS_LINES = 200


def modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (file, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the gendiff modules it imports anywhere in its code. ``from . import x`` of a
    submodule x is an edge to x only (the package itself is already initialised)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (file, is_package) in mods.items():
        base = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                subs = [f"{module}.{a.name}" for a in node.names]
                targets = subs + ([module] if any(s not in mods for s in subs) else [])
            else:
                continue
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_gendiff_modules():
    graph = import_graph()
    assert "gendiff.plugins" in graph["gendiff.cli"] or "gendiff.plugins" in graph["gendiff.training.setup"]
    assert cycles(graph) == []
def test_no_class_is_hundreds_of_lines():
    long = []
    for file in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long.append(f"{file.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
