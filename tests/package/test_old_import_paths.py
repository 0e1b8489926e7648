"""The package's layout: moved modules keep their old import paths (with a DeprecationWarning)
and "is op X built for device Y" has one answer, ``sparse_engine.kernels.has_kernel``."""
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import sparse_engine
from sparse_engine import kernels
from sparse_engine._moved import MOVED


def test_every_old_module_path_imports_the_moved_module_with_a_warning():
    # in a fresh interpreter (here an earlier test may have bound the old names already), one for all
    code = """
import importlib, warnings, sparse_engine
from sparse_engine._moved import MOVED
for old, new in sorted(MOVED.items()):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module("sparse_engine." + old)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    print(old, module is importlib.import_module("sparse_engine." + new), messages)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(MOVED)
    for line, (old, new) in zip(lines, sorted(MOVED.items())):
        name, same, messages = line.split(" ", 2)
        assert name == old and same == "True", line
        assert f"sparse_engine.{old} moved to sparse_engine.{new}" in messages, line


def test_an_old_attribute_answers_with_the_moved_module_and_a_warning():
    with pytest.warns(DeprecationWarning, match="sparse_engine.runtime.timing"):
        timing = sparse_engine.__getattr__("timing")
    assert timing is importlib.import_module("sparse_engine.runtime.timing")
    with pytest.raises(AttributeError):
        sparse_engine.__getattr__("no_such_module")


def test_an_old_from_import_gives_the_same_functions():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sparse_engine.checkpoint import save_checkpoint  # noqa: F401  (the old path)
    from sparse_engine.io.checkpoint import save_checkpoint as new

    assert save_checkpoint is new


def test_the_old_home_of_the_torch_kernels_still_imports():
    with pytest.warns(DeprecationWarning, match="sparse_engine.kernels.topology_torch"):
        from sparse_engine.training import topology_torch as old

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, fn in {**kernels.topology_torch.OPS, **kernels.densify_torch.OPS}.items():
            assert getattr(old, name) is fn and getattr(old, f"{name}_cuda") is fn
    assert old.OPS is kernels.topology_torch.OPS


def test_has_kernel_answers_per_op_and_device():
    assert kernels.has_kernel("spmm", "cpu") and kernels.has_kernel("spmm", torch.device("cpu"))
    assert kernels.has_kernel("lstm_step", "cpu")
    # the mlp ops have CPU kernels only; the topology ops have Python CUDA kernels in every build
    assert not kernels.has_kernel("relu_dropout", "cuda")
    assert kernels.has_kernel("set_prune", "cuda")
    assert kernels.HAS_CUDA_KERNELS == kernels.has_kernel("spmm", "cuda")


def test_the_project_itself_uses_no_old_module_path():
    """The old paths are for users' code; the package, its tests, benchmarks and examples import
    every module from its home (else a move would hide behind its own DeprecationWarning)."""
    import ast

    from sparse_engine._moved import MOVED

    old = {f"sparse_engine.{name}" for name in MOVED}
    root = Path(__file__).resolve().parents[2]
    found = []
    for folder in ("sparse_engine", "tests", "benchmarks", "examples"):
        for path in (root / folder).rglob("*.py"):
            if path.name in ("_moved.py", "test_old_import_paths.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:  # relative: resolve against the file's package
                        pkg = path.relative_to(root).with_suffix("").parts[:-node.level]
                        base = ".".join(pkg + ((base,) if base else ()))
                    names = [base] + [f"{base}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                found += [f"{path.relative_to(root)}:{node.lineno} {n}" for n in names if n in old]
    assert not found, found
