"""Imports run one way, down the layers of docs/architecture.md: every module of sparse_engine imports
only from its own layer or the ones below it, and the graph of imports has no circle. Imports inside
functions count (a circle or an upward call broken by a late import is still there), with no
exception. The layers are read from the document itself, so the picture and the code cannot drift."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sparse_engine"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules) -> set[str]:
    """The package's modules that ``name`` imports, inside functions too (an ``from x import y``
    counts x, and x.y when y is a module)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    # a module importing its own package (or an ancestor) reads what that package has already bound
    return {m for m in found if m in modules and m != name and not name.startswith(m + ".")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def dfs(v):
        state[v] = "open"
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == "open":
                return stack[stack.index(w):] + [w]
            if w not in state:
                cycle = dfs(w)
                if cycle:
                    return cycle
        state[v] = "done"
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            cycle = dfs(v)
            if cycle:
                return cycle
    return None


def layers(text: str) -> dict[str, int]:
    """{top-level name under sparse_engine ("__init__" for the package itself): its layer, 0 at the
    bottom}, from the table under "## The layers" (top row first; each row names its modules in
    backquotes)."""
    section = text.split("## The layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")][1:]
    assert rows, "no layer table under '## The layers' in docs/architecture.md"
    table = {}
    for height, row in enumerate(reversed(rows)):
        for name in re.findall(r"`([\w./]+)`", row.split("|")[2]):
            assert name not in table, f"{name} is in two layers"
            table[name.removeprefix("sparse_engine.").removesuffix(".py").removesuffix("/")] = height
    return table


def layer_of(module: str, table: dict[str, int]) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in table, f"{module}: {key} is in no layer of docs/architecture.md"
    return table[key]


def upward_imports(graph, table) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a, table)}) imports {b} (layer {layer_of(b, table)})"
                  for a, targets in graph.items() for b in targets if layer_of(b, table) > layer_of(a, table))


def package_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = package_graph()
    assert "sparse_engine.sparse" in graph["sparse_engine.init"]  # the scan sees what it must see
    assert "sparse_engine.nn" in graph["sparse_engine.io.serialization"]  # imports inside functions too
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_every_module_is_in_a_layer_and_imports_only_downward():
    table = layers(ARCHITECTURE.read_text())
    graph = package_graph()
    tops = {name.split(".")[1] if "." in name else "__init__" for name in graph}
    assert tops <= set(table), f"not in the layer table: {sorted(tops - set(table))}"
    assert not set(table) - tops, f"the layer table names what does not exist: {sorted(set(table) - tops)}"
    assert not upward_imports(graph, table), "\n".join(upward_imports(graph, table))


def test_an_upward_import_is_caught():
    table = {"low": 0, "high": 1}
    assert upward_imports({"sparse_engine.low.a": {"sparse_engine.high.b"}}, table)
    assert not upward_imports({"sparse_engine.high.b": {"sparse_engine.low.a"}}, table)
    text = "## The layers\n\n| layer | modules |\n| --- | --- |\n| top | `high/` |\n| bottom | `low/`, `x.py` |\n"
    assert layers(text) == {"high": 1, "low": 0, "x": 0}
