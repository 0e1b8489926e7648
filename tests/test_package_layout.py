"""The package's layout: moved modules keep their old import paths (with a DeprecationWarning)
and "is op X built for device Y" has one answer, ``sparse_engine.kernels.has_kernel``."""
import importlib
import subprocess
import sys
import warnings

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


def test_has_kernel_answers_per_op_and_device():
    assert kernels.has_kernel("spmm", "cpu") and kernels.has_kernel("spmm", torch.device("cpu"))
    assert kernels.has_kernel("lstm_step", "cpu")
    # the mlp ops have CPU kernels only; the topology ops have Python CUDA kernels in every build
    assert not kernels.has_kernel("relu_dropout", "cuda")
    assert kernels.has_kernel("set_prune", "cuda")
    assert kernels.HAS_CUDA_KERNELS == kernels.has_kernel("spmm", "cuda")
