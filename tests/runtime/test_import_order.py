"""Importing sparse_engine before torch makes OpenMP's idle threads (torch's own CPU ops) wait
passively and asks torch for huge pages (sparse_engine/runtime/threads.py); the kernels run on the
library's own thread pool (csrc/cpu/thread_pool.h), not on OpenMP's teams, so importing torch first
changes nothing for them and is not warned about: the same parallel bound and the same pool whatever
the order and the OpenMP variables; keep_freed_memory serves large tensors from the heap; every
script imports sparse_engine before torch (for torch's ops and the huge pages); torch first, the
import shortens libgomp's spinning with a sleeping team. (That each CPU
kernel gives the same bits on 1 and 2 threads: tests/ops/test_<family>.py; the pool's contract:
tests/ops/test_thread_pool.py.)"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sparse_engine

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


def test_importing_torch_first_says_nothing():
    """The kernels' threads do not depend on the order (the pool), so there is nothing to warn about;
    nor with either OpenMP variable set, nor on one thread."""
    torch_first = "import torch; torch.set_num_threads(2); import sparse_engine"
    assert stderr_after(torch_first) == []
    assert stderr_after("import sparse_engine, torch; torch.set_num_threads(2)") == []
    assert stderr_after(torch_first, OMP_WAIT_POLICY="ACTIVE") == []
    assert stderr_after(torch_first, GOMP_SPINCOUNT="1000") == []
    assert stderr_after("import torch; torch.set_num_threads(1); import sparse_engine") == []


def run_code(code: str, timeout: float = 120, **env) -> str:
    """stdout of a fresh interpreter running ``code`` (no OpenMP wait variable set unless given); it
    must exit by itself within ``timeout`` seconds."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, check=True, timeout=timeout).stdout


SHORT = "print(sparse_engine.runtime.threads.SHORT_SPIN)"


def test_torch_first_shortens_openmp_spinning_unless_the_waits_are_chosen():
    """Torch first and no wait chosen: the sleeping team starts (SHORT_SPIN), and the process, and a
    child forked from it, still exit by themselves; sparse_engine first (passive waits) or a chosen
    OMP_WAIT_POLICY / GOMP_SPINCOUNT: nothing is started."""
    assert run_code("import torch, sparse_engine; " + SHORT).split() == ["True"]
    assert run_code("import sparse_engine, torch; " + SHORT).split() == ["False"]
    assert run_code("import torch, sparse_engine; " + SHORT, OMP_WAIT_POLICY="ACTIVE").split() == ["False"]
    assert run_code("import torch, sparse_engine; " + SHORT, GOMP_SPINCOUNT="300000").split() == ["False"]
    # the child ends by SystemExit, so its exit handlers run (the team is the parent's: left alone);
    # it runs our ops (the pool is fork-safe), not torch's OpenMP ones (libgomp's are not after fork)
    forked = ("import os, torch, sparse_engine; torch.set_num_threads(2); torch.ones(1 << 20).sum()\n"
              "W = sparse_engine.SparseWeight.random(2000, 2000, 0.02, generator=torch.Generator().manual_seed(0))\n"
              "X = torch.ones(2000, 20)\n"
              "pid = os.fork()\n"
              "if pid == 0:\n    sparse_engine.ops.spmm(W, X); raise SystemExit(0)\n"
              "print(os.waitpid(pid, 0)[1], sparse_engine.runtime.threads.SHORT_SPIN)")
    assert run_code(forked).split() == ["0", "True"]


# CPU time the process spends while its main thread sleeps right after parallel torch ops: what
# libgomp's idle threads spin (2 threads; ms over 20 sleeps of 50 ms)
SPIN_CPU = ("import resource, time, torch, sparse_engine; torch.set_num_threads(2); x = torch.randn(1 << 22)\n"
            "cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])\n"
            "x.sum(); time.sleep(0.1); total = 0.0\n"
            "for _ in range(20):\n    x.sum(); c = cpu(); time.sleep(0.05); total += cpu() - c\n"
            "print(total * 1e3)")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs (libgomp's worker thread)")
def test_the_short_spin_takes_less_cpu_after_torchs_parallel_ops():
    """With the team, libgomp's idle worker stops spinning within microseconds of each op; with
    libgomp's default count chosen explicitly (GOMP_SPINCOUNT=300000, which leaves it alone) it
    spins for milliseconds (about 4 ms per op on our 2-core VM)."""
    short = float(run_code(SPIN_CPU))
    long = float(run_code(SPIN_CPU, GOMP_SPINCOUNT="300000"))
    assert short < 0.5 * long, (short, long)


# A parallel spmm on 2 threads, then what the pool did: (the parallel bound, jobs run, workers)
POOL_AFTER = ("import sparse_engine._C as C, torch; from sparse_engine import SparseWeight, ops; "
              "torch.set_num_threads(2); W = SparseWeight.random(2000, 2000, 0.02, "
              "generator=torch.Generator().manual_seed(0)); ops.spmm(W, torch.randn(2000, 20)); "
              "s = C._pool_stats(); print(C._parallel_work(), s[0], s[4])")


def pool_after(first: str, **env) -> list[int]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", first + "; " + POOL_AFTER], env={**base, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True)
    return [int(x) for x in out.stdout.split()]


def test_the_kernels_run_on_their_pool_with_one_bound_whatever_the_order_and_the_environment():
    """Torch first or sparse_engine first, with or without OpenMP's variables (which once changed
    the bound: 2**15 spinning, 2**19 sleeping), the kernels go parallel from PARALLEL_WORK and their
    parallel loops are jobs of the pool, run with its worker."""
    for first in ("import torch", "import sparse_engine"):
        for env in ({}, {"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"},
                    {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "infinity"}):
            work, jobs, workers = pool_after(first, **env)
            assert work == PARALLEL_WORK, (first, env, work)
            assert jobs >= 1 and workers >= 1, (first, env, jobs, workers)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not shutil.which("nm"), reason="needs Linux and nm")
def test_the_kernels_share_no_loop_on_an_openmp_team():
    """The extension calls none of libgomp's loop-sharing, barrier or atomic entry points, which the
    kernels' `omp for` loops, dynamic schedules and reductions called: their parallel loops are the
    pool's (tests/ops/test_thread_pool.py checks the sources), and so are the index content checks'
    reductions (csrc/index_check.h, reduce_ranges). GOMP_parallel itself stays, for the sleeping
    team that shortens libgomp's spinning (sparse_engine._C._shorten_openmp_spin)."""
    undefined = subprocess.run(["nm", "-D", "--undefined-only", sparse_engine._C.__file__], capture_output=True,
                               text=True, check=True).stdout
    names = {line.split()[-1].split("@")[0] for line in undefined.splitlines() if line.strip()}
    shared = sorted(n for n in names if n.startswith(("GOMP_loop", "GOMP_barrier", "GOMP_atomic", "GOMP_critical",
                                                        "GOMP_single", "GOMP_sections")))
    assert shared == [], shared


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
