"""Threads of the CPU kernels, how idle OpenMP threads wait, and huge pages for large tensors.

The kernels (and torch's own CPU ops) run on ``torch.get_num_threads()`` threads: set it with
``torch.set_num_threads(n)`` or ``OMP_NUM_THREADS=n``. Results do not depend on it (the
``*_on_1_and_2_threads`` tests of tests/ops/).

Waiting: by default libgomp's idle threads spin (busy-wait) after every parallel region. On a
machine whose cores other processes keep busy, the spinning threads and the descheduled ones
that every barrier waits for made 2 threads 3-60x slower than 1 (measured: docs/cpu_kernels.md).
With ``OMP_WAIT_POLICY=PASSIVE`` idle threads sleep at once and 2 threads cost the same as 1
there. libgomp reads the variable once, when torch loads it, so setting it later does nothing:
importing this module (``import sparse_engine`` does, first of all) sets
``OMP_WAIT_POLICY=PASSIVE`` when torch is not imported yet and the variable is not set.
:data:`PASSIVE_WAIT` says whether that happened; set the variable yourself (or import
sparse_engine before torch) when torch comes first. Sleeping threads must be woken at every
parallel region (30-80 us on our 2-core VM), so the kernels then go parallel only from 2**19
multiply-adds instead of 2**15 (``parallel_work`` in csrc/cpu/common.h;
``sparse_engine._C._parallel_work()``). A short spin instead (``GOMP_SPINCOUNT=1000``) is
faster on a quiet machine and slower on a busy one: benchmarks/results/wait_policy_cpu.md.

Huge pages: the kernels gather rows of activations (and, in spmm_t, weight values) at random
from tensors of tens of megabytes; with 4 KiB pages nearly every gather also misses the TLB.
torch backs CPU allocations of 2 MiB and more with transparent huge pages when
``THP_MEM_ALLOC_ENABLE=1`` (read once, at torch's first allocation), so the same import sets
it too when torch is not imported yet and the variable is unset (:data:`HUGE_PAGES`). Measured
on a 784-333333-333333-333334-10 SET-MLP (1 thread): spmm_t 29% faster, spmm 10%, sddmm
15%, a training step 21% (CPU time; docs/set_mlp.md). It needs the kernel's THP mode
``madvise`` or ``always`` (/sys/kernel/mm/transparent_hugepage/enabled); with ``never`` it
does nothing.

Freed memory: glibc's malloc serves every allocation above 32 MiB with its own mmap and gives it
back to the system when freed, so each training step of a wide layer faults in and zeroes its
batch-sized tensors again. :func:`keep_freed_memory` makes malloc serve them from its heap and
keep what is freed for the next step: a trade of memory for time, so it is opt-in. Measured on a
784-333333-333333-333334-10 SET-MLP (2 threads): an epoch 15% faster (136 -> 116 s for 8,000
images), the peak resident memory 60% higher (1.35 -> 2.16 GB), which would halve the largest
network that fits in a memory budget. On the command line the same is
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import warnings

__all__ = ["PASSIVE_WAIT", "HUGE_PAGES", "keep_freed_memory"]

#: True when this import set OMP_WAIT_POLICY=PASSIVE before torch loaded libgomp.
PASSIVE_WAIT = "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ
if PASSIVE_WAIT:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

#: True when this import set THP_MEM_ALLOC_ENABLE=1 before torch's first allocation.
HUGE_PAGES = "torch" not in sys.modules and "THP_MEM_ALLOC_ENABLE" not in os.environ
if HUGE_PAGES:
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"


#: The one line said when torch came first and left libgomp spinning (:func:`_say_if_spinning`).
SPINNING_WARNING = ("torch was imported before sparse_engine, so OpenMP's idle threads busy-wait; on a machine "
                    "whose cores are busy that can make the kernels 3-40x slower: import sparse_engine first, "
                    "or set OMP_WAIT_POLICY (PASSIVE; ACTIVE to keep spinning) to choose")


def _say_if_spinning() -> None:
    """Warns once (one line, a RuntimeWarning) when torch was imported first with no wait policy set
    and more than one thread: libgomp then spins, which this import can no longer change. Setting
    ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (either way) is a choice and silences it."""
    torch = sys.modules.get("torch")
    if torch is None or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    if getattr(torch, "get_num_threads", lambda: 1)() < 2:
        return
    # no source line to show: the warning is one line, filterable as module "sparse_engine"
    warnings.warn_explicit(SPINNING_WARNING, RuntimeWarning, "sparse_engine", 0, module="sparse_engine")


_say_if_spinning()


# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Makes glibc's malloc take every block from its heap (no mmap) and never trim it, so that the
    large tensors freed by one step are reused, without page faults, by the next. Returns False
    where it cannot (not glibc, or ``GLIBC_TUNABLES`` is set: the user's choice stands)."""
    if "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
