"""No import cycle in ``engine/``: a test walks every import statement and fails on a cycle.

Counted: module-level *and* function-level ``import``/``from … import`` statements (a deferred
import inside a function hides a cycle from Python's import machinery but not from the design),
resolved to engine modules; ``from pkg import name`` counts as importing ``pkg.name`` when that is
a module. Exempt: imports under ``if TYPE_CHECKING:`` (annotations only, never executed). The
implicit import of a parent package when a submodule is imported is not an edge: every package's
``__init__`` would otherwise form a "cycle" with the submodules it re-exports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import engine

ROOT = Path(engine.__file__).resolve().parent


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement outside ``if TYPE_CHECKING:`` blocks, at any depth."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch runs
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module → engine modules it imports (explicitly), for every ``.py`` file under ``root``."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` imports the module; `from mod import name` the module itself
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]  # `import engine.a.b` of a name inside a module
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, …, a]``, or None (iterative DFS, three colours)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def test_engine_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_walker_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    """The detector itself: a deferred import closes a cycle; a TYPE_CHECKING import does not."""
    pkg = tmp_path / "engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from engine import b\n")
    (pkg / "b.py").write_text("def f():\n    from engine.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine import d\n")
    (pkg / "d.py").write_text("import engine.c\n")
    graph = import_graph(pkg)
    assert graph["engine.a"] == {"engine.b"} and graph["engine.b"] == {"engine.a"}
    assert graph["engine.c"] == set() and graph["engine.d"] == {"engine.c"}
    assert find_cycle(graph) in (["engine.a", "engine.b", "engine.a"], ["engine.b", "engine.a", "engine.b"])
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine.a import x\n")
    assert find_cycle(import_graph(pkg)) is None


# The bottom of the graph: shared primitives every plugin may import (they import no plugin family,
# except engine.traits, which reads the dataset and model registries inside a function).
BOTTOM = {"engine", "engine.plugin", "engine.errors", "engine.registry", "engine.traits", "engine.batch",
          "engine.rng", "engine.capabilities"}
FAMILIES = ("engine.data", "engine.models", "engine.optim", "engine.losses", "engine.regularizers",
            "engine.diagnostics")


def test_plugin_families_import_only_the_bottom_and_themselves() -> None:
    """A plugin never imports another family or anything above the registries (config, trainer, …)."""
    wrong = {}
    for module, targets in import_graph().items():
        family = next((f for f in FAMILIES if module == f or module.startswith(f + ".")), None)
        if family is None:
            continue
        outside = sorted(t for t in targets if t not in BOTTOM and t != family and not t.startswith(family + "."))
        if outside:
            wrong[module] = outside
    assert not wrong, f"plugin modules importing outside the bottom layer: {wrong}"
