"""The house rules the code keeps (issue 32), measured on the source: module and function sizes, no import
cycle between zeal_core's packages (imports inside functions count), and no Streamlit in the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

LIBRARY = ROOT / "zeal_core"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def _modules() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Every zeal_core module ``path`` imports, at the top or inside a function, absolute or relative."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("zeal_core.")}


def _unit(module: str) -> str:
    """The package or top-level module a zeal_core module is in: ``zeal_core.drift.mmd`` -> ``drift``."""
    return module.split(".")[1]


def package_graph() -> dict[str, set[str]]:
    """Edges between zeal_core's packages and top-level modules."""
    known = {_unit(_module_name(path)) for path in _modules() if _module_name(path) != "zeal_core"}
    graph: dict[str, set[str]] = {name: set() for name in known}
    for path in _modules():
        if _module_name(path) == "zeal_core":
            continue
        source = _unit(_module_name(path))
        graph[source].update(_unit(name) for name in _imported(path) if _unit(name) in known)
        graph[source].discard(source)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle_and_nothing_else() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_library_packages() -> None:
    assert cycles(package_graph()) == []


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_module_and_its_functions_are_short_enough_to_read(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path.name} has {text.count(chr(10))} lines"
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long


def test_the_library_never_imports_streamlit() -> None:
    offenders = [str(path.relative_to(ROOT)) for path in _modules()
                 if any(name == "streamlit" or name.startswith("streamlit.")
                        for node in ast.walk(ast.parse(path.read_text()))
                        for name in ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else []))]
    assert not offenders
