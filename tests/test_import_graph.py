"""The host import graph (cx/, tools/, fleet/) runs one way: cx → fleet → tools. `tools` never
imports `fleet` or `cx`, `fleet` never imports `cx` (ARCHITECTURE.md: the command line is a thin
layer of its own; no library imports it), and no module reaches itself again through its
imports. Imports inside functions count as much as those at the top: hiding a loop in a
function is still a loop.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cx", "fleet", "tools")
LAYER = {"tools": 0, "fleet": 1, "cx": 2}
"""A package may import its own layer and those below it, never one above."""


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _imported(name: str, node: ast.AST, mods: dict[str, Path]) -> Iterator[str]:
    """The host modules `node` (an import in module `name`) loads, each by its dotted name."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            here = name.split(".")
            is_pkg = mods[name].name == "__init__.py"
            anchor = here[:len(here) - node.level + (1 if is_pkg else 0)]
            base = ".".join([*anchor, *([base] if base else [])])
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                   for a in node.names]
    else:
        return
    for t in targets:
        while t and t not in mods:  # `import fleet.store.schema as s` counts as fleet.store.schema
            t = t.rpartition(".")[0]
        if t:
            yield t


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module → the host modules it imports anywhere in its text (top level and in functions)."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = {t for node in ast.walk(tree) for t in _imported(name, node, mods)
                       if t != name}
    return graph


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer into a higher one: 'fleet.x imports cx.y'."""
    return sorted(f"{a} imports {b}" for a, deps in graph.items() for b in deps
                  if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_host_imports_run_one_way_cx_fleet_tools() -> None:
    assert wrong_way(import_graph()) == []


def test_host_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_a_library_importing_the_command_line_is_caught(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    planted = tmp_path / "fleet" / "command.py"
    planted.write_text(planted.read_text(encoding="utf-8")
                       + "\n\ndef _late() -> None:\n    import cx.fleet  # noqa\n",
                       encoding="utf-8")
    graph = import_graph(tmp_path)
    assert wrong_way(graph) == ["fleet.command imports cx.fleet"]
    assert any({"cx.fleet", "fleet.command"} <= set(c) for c in cycles(graph))
