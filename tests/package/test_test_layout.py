"""tests/ is laid out like the code: a folder per package of sparse_engine, tests named for each
top-level module, every test file's name unique, and no test file importing another (the shared
helpers are in ``sparse_engine.testing`` and the conftest.py fixtures)."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PACKAGE = ROOT / "sparse_engine"

#: Top-level modules of sparse_engine whose tests are not named for them: where they are, and why.
NOT_NAMED_FOR_THEIR_MODULE = {
    "models": (["recurrent/test_streaming.py"],
               "SequenceModel reads the recurrence's step-major output itself: its outputs and gradients are "
               "checked there against reading the module's output; the runs build it end to end"),
    "_moved": (["package/test_old_import_paths.py"],
               "it holds the old import paths, which that file tests"),
}


def all_test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def same_names(paths) -> dict[str, list[str]]:
    """{basename: the paths} of the basenames that more than one path has."""
    seen = defaultdict(list)
    for p in paths:
        seen[p.name].append(str(p.relative_to(TESTS)))
    return {name: where for name, where in seen.items() if len(where) > 1}


def imports_of_test_modules(source: str) -> list[str]:
    """The imports in ``source`` that reach another test module: every relative import, and every
    import naming a module (or a name in one) that starts with ``test_`` or is ``conftest``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        parts = {part for n in names for part in n.split(".")}
        if getattr(node, "level", 0) or any(p.startswith("test_") or p == "conftest" for p in parts):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def packages() -> list[Path]:
    """Every package of sparse_engine (a folder with __init__.py), relative to sparse_engine/."""
    return sorted(p.parent.relative_to(PACKAGE) for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)


def package_is_tested(package: Path) -> bool:
    """A top-level package has its folder tests/<package>/; a nested one (training/controllers)
    its folder tests/training/controllers/ or a file tests/training/test_controllers*.py."""
    if (TESTS / package).is_dir():
        return True
    return len(package.parts) > 1 and any((TESTS / package.parent).glob(f"test_{package.name}*.py"))


def modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")


def module_is_tested(name: str) -> bool:
    """Tests named for the module: a folder tests/<name>/, or a file test_<name>.py or
    test_<name>_*.py anywhere under tests/."""
    return (TESTS / name).is_dir() or any(p.stem == f"test_{name}" or p.stem.startswith(f"test_{name}_")
                                          for p in all_test_files())


def test_every_test_file_name_is_unique():
    """pytest's default import mode imports each test file by its basename."""
    assert not same_names(all_test_files()), same_names(all_test_files())


def test_no_test_file_imports_another():
    found = {str(p.relative_to(TESTS)): bad for p in [*all_test_files(), *TESTS.rglob("conftest.py")]
             if (bad := imports_of_test_modules(p.read_text()))}
    assert not found, "test files importing test modules:\n" + "\n".join(f"{f}: {b}" for f, b in found.items())


def test_every_package_has_its_test_folder():
    assert packages(), "no package found under sparse_engine/"
    missing = [str(p) for p in packages() if not package_is_tested(p)]
    assert not missing, f"packages of sparse_engine without tests/<package>/: {missing}"


def test_every_top_level_module_has_tests_named_for_it_or_says_where_they_are():
    assert "init" in modules() and "cli" in modules()
    missing = [m for m in modules() if not module_is_tested(m) and m not in NOT_NAMED_FOR_THEIR_MODULE]
    assert not missing, f"modules of sparse_engine without tests named for them: {missing}"
    for name, (files, why) in NOT_NAMED_FOR_THEIR_MODULE.items():
        assert name in modules(), f"{name}.py is gone: drop it from the table"
        assert not module_is_tested(name), f"{name} has tests named for it now: drop it from the table"
        assert why and all((TESTS / f).is_file() for f in files), f"{name}: {files} must exist"


def test_the_checks_catch_what_they_must(tmp_path):
    assert same_names([TESTS / "a" / "test_x.py", TESTS / "b" / "test_x.py", TESTS / "test_y.py"]) == {
        "test_x.py": ["a/test_x.py", "b/test_x.py"]}
    source = ("import os\nimport test_a\nfrom test_b import f\nfrom . import c\nfrom .d import e\n"
              "from conftest import g\nfrom pkg.test_h import i\nfrom cuda_emu import emu_build\n"
              "from sparse_engine.testing import random_weight\nfrom x import test_j\n")
    assert imports_of_test_modules(source) == [
        "line 2: import test_a", "line 3: from test_b import f", "line 4: from . import c",
        "line 5: from .d import e", "line 6: from conftest import g", "line 7: from pkg.test_h import i",
        "line 10: from x import test_j"]
    assert package_is_tested(Path("nn")) and not package_is_tested(Path("no_such_package"))
    assert package_is_tested(Path("training/controllers"))
    assert module_is_tested("init") and not module_is_tested("no_such_module")
