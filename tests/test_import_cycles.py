"""No import circle in sparse_engine: the graph of every module's imports, those inside functions
included (a circle broken by a late import is still a circle), has no cycle. The one deliberate
exception is io.serialization's function-level import of the module packages, whose classes it
lists for ``torch.load(weights_only=True)`` when asked (not at import)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sparse_engine"
#: modules whose imports inside functions are left out (the reason: the module docstring)
ALLOWED_LATE = {"sparse_engine.io.serialization"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules) -> set[str]:
    """The package's modules that ``name`` imports (an ``from x import y`` counts x, and x.y
    when y is a module), inside functions too unless ``name`` is in ALLOWED_LATE."""
    is_package = path.name == "__init__.py"
    found = set()

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            late = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import) and not (late and name in ALLOWED_LATE):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and not (late and name in ALLOWED_LATE):
                if child.level:
                    base = name if is_package else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module
                found.add(target)
                found.update(f"{target}.{a.name}" for a in child.names)
            visit(child, late)

    visit(ast.parse(path.read_text()), False)
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


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    modules = module_names()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "sparse_engine.sparse" in graph["sparse_engine.init"]  # the scan sees what it must see
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
