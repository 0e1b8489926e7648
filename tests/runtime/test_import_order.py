"""Importing sparse_engine before torch makes OpenMP's idle threads wait passively and asks torch for
huge pages (sparse_engine/runtime/threads.py); importing torch first is said in one line; where idle
threads sleep, the kernels go parallel from more work; keep_freed_memory serves large tensors from
the heap; every script imports sparse_engine before torch. (That each CPU kernel gives the same bits
on 1 and 2 threads: tests/ops/test_<family>.py.)"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_engine.kernels.constants import PARALLEL_WORK

ROOT = Path(__file__).resolve().parents[2]


def wait_policy_after(code: str, variable: str = "OMP_WAIT_POLICY", **env) -> str:
    """``variable`` (OMP_WAIT_POLICY) in a fresh interpreter after running ``code``."""
    base = {k: v for k, v in os.environ.items() if k != variable}
    out = subprocess.run([sys.executable, "-c", code + f"; import os; print(os.environ.get({variable!r}))"],
                         env={**base, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def test_importing_sparse_engine_first_makes_waiting_passive():
    assert wait_policy_after("import sparse_engine; assert sparse_engine.runtime.threads.PASSIVE_WAIT") == "PASSIVE"
    # too late once torch has loaded libgomp: left alone, and PASSIVE_WAIT says so
    assert wait_policy_after("import torch, sparse_engine; assert not sparse_engine.runtime.threads.PASSIVE_WAIT") == "None"
    # a policy the user set is kept
    assert wait_policy_after("import sparse_engine", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def stderr_after(code: str, **env) -> list[str]:
    """The lines a fresh interpreter writes to stderr running ``code`` (no wait policy set unless given)."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True)
    return out.stderr.splitlines()


def test_importing_torch_first_is_said_in_one_line_unless_the_policy_is_chosen():
    torch_first = "import torch; torch.set_num_threads(2); import sparse_engine"
    lines = stderr_after(torch_first)
    assert len(lines) == 1 and "RuntimeWarning" in lines[0] and "import sparse_engine first" in lines[0]
    assert stderr_after("import sparse_engine, torch; torch.set_num_threads(2)") == []
    assert stderr_after(torch_first, OMP_WAIT_POLICY="ACTIVE") == []  # a choice: spinning kept, no warning
    assert stderr_after(torch_first, GOMP_SPINCOUNT="1000") == []
    assert stderr_after("import torch; torch.set_num_threads(1); import sparse_engine") == []  # nothing spins


def test_kernels_stay_on_one_thread_for_more_work_where_idle_threads_sleep():
    """Where libgomp's threads sleep at once (passive, no spin count) a parallel region first
    wakes one, so the work from which kernels go parallel is higher (csrc/cpu/common.h)."""
    # torch first, so that importing sparse_engine sets no policy: only the environment's counts
    read = "import torch, sparse_engine._C as C, os; os.environ['X'] = str(C._parallel_work())"
    spin, sleep = str(PARALLEL_WORK), str(1 << 19)
    assert wait_policy_after(read, "X") == spin  # libgomp's default: spin
    assert wait_policy_after("import sparse_engine; " + read, "X") == sleep  # the import's PASSIVE
    assert wait_policy_after(read, "X", OMP_WAIT_POLICY="passive") == sleep
    assert wait_policy_after(read, "X", OMP_WAIT_POLICY="ACTIVE") == spin
    assert wait_policy_after(read, "X", OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT="1000") == spin
    assert wait_policy_after(read, "X", GOMP_SPINCOUNT="0") == sleep
    assert wait_policy_after(read, "X", OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT="infinity") == spin


def test_importing_sparse_engine_first_asks_torch_for_huge_pages():
    thp = "THP_MEM_ALLOC_ENABLE"
    assert wait_policy_after("import sparse_engine; assert sparse_engine.runtime.threads.HUGE_PAGES", thp) == "1"
    assert wait_policy_after("import torch, sparse_engine; assert not sparse_engine.runtime.threads.HUGE_PAGES", thp) == "None"
    assert wait_policy_after("import sparse_engine", thp, THP_MEM_ALLOC_ENABLE="0") == "0"


MMAPPED_AFTER_64MB = """
import ctypes, sys, torch
import sparse_engine.runtime.threads as threads
kept = threads.keep_freed_memory() if sys.argv[1] == "keep" else None
class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
x = torch.ones(16 * 2**20)  # 64 MiB
print(kept, mallinfo2().hblkhd >= 64 * 2**20)
"""


def glibc_version() -> tuple[int, ...]:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (ValueError, OSError, AttributeError):
        return ()
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else ()


@pytest.mark.skipif(glibc_version() < (2, 33), reason="needs glibc's mallinfo2 (2.33 and later)")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    def run(mode, **env):
        base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        out = subprocess.run([sys.executable, "-c", MMAPPED_AFTER_64MB, mode], env={**base, "PYTHONPATH": str(ROOT), **env},
                             capture_output=True, text=True, check=True)
        return out.stdout.split()
    assert run("default") == ["None", "True"]  # glibc mmaps a 64 MiB block of its own
    assert run("keep") == ["True", "False"]  # from the heap
    # malloc settings the user chose are left alone
    assert run("keep", GLIBC_TUNABLES="glibc.malloc.check=0") == ["False", "True"]


def _first_import_line(tree, package: str):
    """Line of the first top-level statement that imports ``package`` (or a submodule), or None."""
    import ast

    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(n == package or n.startswith(package + ".") for n in names):
            return node.lineno
    return None


SCRIPTS = sorted((ROOT / "examples").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_import_sparse_engine_before_torch(script):
    """A script that imports torch first leaves libgomp spinning (a busy machine made the Selfish
    example's first epoch 187 s instead of 9 s, and benchmark tables ran with another policy than
    a user's): sparse_engine (or benchmarks/common.py, which imports it first) comes before torch."""
    import ast

    tree = ast.parse(script.read_text())
    theirs = _first_import_line(tree, "torch")
    ours = min((line for line in (_first_import_line(tree, "sparse_engine"), _first_import_line(tree, "common"))
                if line is not None), default=None)
    if script.parent.name == "examples":
        assert ours is not None, f"{script.name} does not import sparse_engine"
    assert theirs is None or (ours is not None and ours < theirs), \
        f"{script.parent.name}/{script.name}: torch at line {theirs}, sparse_engine at {ours}"
