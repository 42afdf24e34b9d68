"""The package's modules import each other without cycles, function-local imports included.

Every `import` / `from ... import` anywhere in a module (top level, functions, methods) is an
edge to the module it loads: `from .x import name` loads `x` (or `x.name` when that is a
submodule), and importing `a.b.c` also runs the `__init__` of the subpackages `a.b` on the way.
The root package `bigmixed` itself is left out: every module is loaded from inside it.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"bigmixed": ROOT / "bigmixed", "bigmixed.kernels": ROOT / "kernels",
           "bigmixed.data_gen": ROOT / "data_gen"}


def _modules() -> dict:
    """{module name: path} of every module of the installed package."""
    out = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if prefix == "bigmixed" and rel and rel[0] in ("kernels", "data_gen"):
                continue
            parts = [p for p in rel if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def _edges(name: str, path: Path, modules: dict) -> set:
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                targets.add(sub if sub in modules else mod)
    # the importer's own packages are initialized before it (an edge to one of them is only
    # kept when the import takes a name from it)
    ancestors = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
    out = set()
    for t in targets:
        if not t.startswith("bigmixed."):
            continue
        parts = t.split(".")
        for k in range(2, len(parts) + 1):  # the subpackages on the way, then the module
            m = ".".join(parts[:k])
            if m in modules and m != name and (m not in ancestors or m == t):
                out.add(m)
    return out


def _find_cycle(graph: dict):
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_the_graph_sees_the_package():
    modules = _modules()
    graph = {m: _edges(m, p, modules) for m, p in modules.items()}
    assert "bigmixed.fitting.model" in modules and "bigmixed.kernels.crossprod" in modules
    assert "bigmixed.crossprods.crossprod" in graph["bigmixed.fitting.model"]
    # a function-local import is an edge too
    assert "bigmixed.results.fit" in graph["bigmixed.fitting.model"]


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _edges(m, p, modules) for m, p in modules.items() if m != "bigmixed"}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_subpackage_is_installed():
    """pyproject.toml lists every subpackage (setuptools installs only those listed)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert packages == listed
