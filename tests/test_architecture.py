"""The import layering of src/kyara (docs/architecture.md): every import, including those inside functions
and under ``if TYPE_CHECKING``, must point down the layer table or stay inside its layer, and no two
modules may import each other, directly or around a loop.

The checker is plain functions over an import graph ({module: {imported module: line}}), unit-tested here
on tiny synthetic graphs so that it is known to fail when it should; the last tests run it on src/.
The layer table is the one in docs/architecture.md, parsed from there, so the two cannot drift apart.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"

Graph = dict[str, dict[str, int]]   # module → {imported kyara module: line of the first such import}


# -- reading the code ---------------------------------------------------------------------------------------
def module_files(src: Path) -> dict[str, Path]:
    """Dotted module name → file, for every .py under src (a package is its __init__.py)."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(module: str, source: str, known: set[str], is_package: bool, top: str = "kyara") -> dict[str, int]:
    """Every module of `top` that `source` imports, anywhere in the file, → the line of its first import.
    ``from a.b import c`` counts as importing a.b.c when that is a module, else a.b."""
    package = module if is_package else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: climb from this module's package
                parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            if name.split(".")[0] == top and name != module:
                found.setdefault(name, node.lineno)
    return found


def import_graph(src: Path) -> Graph:
    files = module_files(src)
    return {m: imports_of(m, p.read_text(encoding="utf-8"), set(files), p.name == "__init__.py")
            for m, p in files.items()}


# -- the layer table ----------------------------------------------------------------------------------------
def read_layer_table(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The markdown table under the 'layer | packages | may import' header →
    ({package prefix: layer}, {layer: layers it may import besides itself})."""
    rows = re.findall(r"^\|\s*([\w/]+)\s*\|(.*?)\|(.*?)\|\s*$", text.split("| layer | packages | may import |", 1)[1],
                      re.MULTILINE)
    packages: dict[str, str] = {}
    allowed: dict[str, set[str]] = {}
    for layer, pkgs, may in rows:
        if set(layer) <= {"-"}:
            continue
        for pkg in re.findall(r"`([\w.]+)`", pkgs):
            packages[pkg] = layer
        allowed[layer] = {x.strip() for x in may.split(",") if x.strip() not in ("", "—", "-")}
    return packages, allowed


def layer_of(module: str, packages: dict[str, str]) -> str | None:
    """The layer of the longest package in the table that is or contains `module` (None: not in the
    table). A top-level name (the root package ``kyara``) stands for itself only, so that a new package
    is never silently filed under the root's layer."""
    best = None
    for pkg in packages:
        inside = module == pkg or ("." in pkg and module.startswith(pkg + "."))
        if inside and (best is None or len(pkg) > len(best)):
            best = pkg
    return packages[best] if best is not None else None


def forbidden_imports(graph: Graph, packages: dict[str, str], allowed: dict[str, set[str]]) -> list[str]:
    """One line per import that leaves its layer in a direction the table does not allow, and per module
    whose package is missing from the table."""
    problems = []
    for module in sorted(graph):
        here = layer_of(module, packages)
        if here is None:
            problems.append(f"{module}: its package is not in the layer table (docs/architecture.md)")
            continue
        for target, line in sorted(graph[module].items()):
            there = layer_of(target, packages)
            if there is not None and there != here and there not in allowed[here]:
                problems.append(f"{module}:{line} imports {target}: {here} may not import {there}")
    return problems


def import_cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every module in
    one of them imports itself around a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


# -- the checker on synthetic graphs ------------------------------------------------------------------------
TABLE = """
| layer | packages | may import |
|---|---|---|
| base | `k.base` | — |
| model | `k.model` | base |
| app | `k.app`, `k` | model, base |
"""


def test_table_parsing():
    packages, allowed = read_layer_table(TABLE)
    assert packages == {"k.base": "base", "k.model": "model", "k.app": "app", "k": "app"}
    assert allowed == {"base": set(), "model": {"base"}, "app": {"model", "base"}}
    assert layer_of("k.model.deep.x", packages) == "model" and layer_of("k", packages) == "app"
    assert layer_of("k.other", packages) is None and layer_of("elsewhere", packages) is None


def test_checker_flags_upward_and_sideways_imports_and_unknown_packages():
    packages, allowed = read_layer_table(TABLE)
    ok: Graph = {"k.app.cli": {"k.model.net": 3, "k.base.util": 4}, "k.model.net": {"k.base.util": 1},
                 "k.base.util": {}}
    assert forbidden_imports(ok, packages, allowed) == []
    bad: Graph = {**ok, "k.base.util": {"k.model.net": 7}, "k.other": {}}
    assert forbidden_imports(bad, packages, allowed) == [
        "k.base.util:7 imports k.model.net: base may not import model",
        "k.other: its package is not in the layer table (docs/architecture.md)"]


def test_checker_finds_direct_and_long_cycles_but_not_diamonds():
    assert import_cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {}, "d": {"b": 1, "c": 1}}) == []
    assert import_cycles({"a": {"b": 1}, "b": {"a": 1}}) == [["a", "b"]]
    assert import_cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "x": {"a": 1}, "y": {"y2": 1}, "y2": {"y": 1}}) == [
        ["a", "b", "c"], ["y", "y2"]]


def test_imports_inside_functions_type_checking_and_relative_ones_count():
    source = """
import os
import kyara.pose
from kyara import store, errors as e
from kyara.teacher import weights
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from kyara.eval.lpips import LPIPS
def f():
    from kyara.character import load
    from . import sibling
    from ..nn import blocks
"""
    known = {"kyara.pose", "kyara.store", "kyara.errors", "kyara.teacher", "kyara.teacher.weights",
             "kyara.eval.lpips", "kyara.character", "kyara.distill.sibling", "kyara.nn", "kyara.nn.blocks"}
    assert imports_of("kyara.distill.loop", source, known, is_package=False) == {
        "kyara.pose": 3, "kyara.store": 4, "kyara.errors": 4, "kyara.teacher.weights": 5, "kyara.eval.lpips": 8,
        "kyara.character": 10, "kyara.distill.sibling": 11, "kyara.nn.blocks": 12}


# -- the checker on kyara ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(SRC)


def test_every_import_in_src_follows_the_layer_table(graph):
    packages, allowed = read_layer_table(DOC.read_text(encoding="utf-8"))
    assert set(allowed) >= {"conventions", "nn", "teacher", "student", "character", "distill", "eval", "drive",
                            "render/produce", "live/server", "cli"}
    assert sum(len(v) for v in graph.values()) > 100    # the walk found the code
    problems = forbidden_imports(graph, packages, allowed)
    assert not problems, "imports against docs/architecture.md:\n" + "\n".join(problems)


def test_no_import_cycles_in_src(graph):
    cycles = import_cycles(graph)
    assert not cycles, "modules that import each other (around a loop):\n" + "\n".join(
        " ↔ ".join(c) + "  [" + "; ".join(f"{a}:{graph[a][b]} → {b}" for a in c for b in graph[a] if b in c) + "]"
        for c in cycles)


def test_the_live_engine_knows_nothing_of_its_server(graph):
    """Inside the live/server layer the direction is fixed too: the server (and ``kyara.server.runner``, which
    starts a session) stands on the engine; the engine could be served by something else."""
    live = [m for m in graph if m == "kyara.live" or m.startswith("kyara.live.")]
    assert "kyara.live.engine" in live
    upward = [f"{m}:{line} → {dep}" for m in live for dep, line in graph[m].items()
              if dep == "kyara.server" or dep.startswith("kyara.server.")]
    assert not upward, "kyara.live imports the server:\n" + "\n".join(upward)
