"""The import graph of gdm and launch, function-level imports included, has no circles.

import-linter (in CI) checks the declared layers, but it cannot see an import written inside a function to
dodge a cycle at import time; this reads every `import` statement from the source (AST) wherever it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gdm", "launch")


def module_names() -> dict[str, Path]:
    """Dotted name → file of every module of the packages (a package is its __init__.py)."""
    names = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(node: ast.AST, here: str, modules: dict[str, Path]) -> set[str]:
    """The project modules one import statement names (`from a import b` is a.b when that is a module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = here.split(".")[: -node.level if modules[here].name != "__init__.py" else len(here.split("."))]
        base = ".".join([*package, base] if base else package)
    names = {f"{base}.{alias.name}" for alias in node.names}
    return {n for n in names if n in modules} or ({base} if base in modules else set())


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = set().union(*(imported(n, name, modules) for n in ast.walk(tree))) - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_sees_function_level_imports_and_finds_a_circle():
    graph = import_graph()
    assert "launch.jobs" in graph["launch.grid"]  # a top-level import
    assert "gdm.report" in graph["launch.jobs"]  # an import inside a function
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_counting_function_level_imports():
    assert circles(import_graph()) == []
