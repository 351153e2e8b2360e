"""The package's import structure, read from the source with `ast` (nothing is imported): no module imports
itself back through others, however deferred the import (inside a function or not), and no module imports
another package's private (`_name`) names.

A package's __init__ is the module `synthgap.x`: one that re-exports its submodules is no cycle with them,
but a submodule that imports its own package back is. The names a package loads on first use
(synthgap.lazy_exports, its `_EXPORTS` table) are strings, not imports, and are not read here."""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import synthgap

SRC = Path(synthgap.__file__).resolve().parent


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module
    target: str  # the module imported (resolved as below)
    names: tuple[str, ...]  # the names a `from ... import` takes; () for `import x`
    line: int


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name; a package's __init__.py is the package itself."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def package_of(module: str, mods: dict[str, Path]) -> str:
    """The package a module belongs to: itself for a package (its __init__), else its parent."""
    return module if mods[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def _known(name: str, mods: dict[str, Path]) -> str | None:
    """`name`, or the nearest package or module above it that is one of ours (None: not synthgap)."""
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in mods else None


@functools.cache
def imports() -> list[Import]:
    """Every import of a synthgap module by a synthgap module, at the top or deferred into a function.

    `from synthgap.x import y` imports the module synthgap.x.y when that is a module, else synthgap.x."""
    mods = modules()
    out = []
    for module, path in mods.items():
        package = package_of(module, mods)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _known(alias.name, mods)
                    if target:
                        out.append(Import(module, target, (), node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importer's package, `level - 1` packages up
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    target = base + "." + alias.name if base + "." + alias.name in mods else _known(base, mods)
                    if target:
                        out.append(Import(module, target, (alias.name,), node.lineno))
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds at least one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:  # the package is small: recursion stays shallow
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def a_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module (breadth first: a shortest one)."""
    start, inside = component[0], set(component)
    came_from = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v] & inside):
            if w == start:
                path = [v]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if w not in came_from:
                came_from[w] = v
                queue.append(w)
    return component


def test_no_import_cycles():
    mods = modules()
    found = imports()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    lines: dict[tuple[str, str], int] = {}
    for imp in found:
        if imp.target != imp.importer:
            edges[imp.importer].add(imp.target)
            lines.setdefault((imp.importer, imp.target), imp.line)
    assert len(mods) > 50 and len(found) > 300, "the package's modules and imports were not found"
    problems = []
    for component in cycles(edges):
        path = a_cycle(component, edges)
        steps = " -> ".join(f"{a} (line {lines[a, b]})" for a, b in zip(path, path[1:])) + f" -> {path[-1]}"
        problems.append(f"import cycle among {', '.join(component)}; e.g. {steps}")
    assert not problems, "\n".join(problems)


def test_no_private_names_across_packages():
    mods = modules()
    problems = [
        f"{imp.importer} (line {imp.line}) imports {name} from {imp.target}, private to {package_of(imp.target, mods)}"
        for imp in imports()
        for name in imp.names
        if name.startswith("_")
        and not name.startswith("__")
        and package_of(imp.importer, mods) != package_of(imp.target, mods)
    ]
    assert not problems, "\n".join(problems)
