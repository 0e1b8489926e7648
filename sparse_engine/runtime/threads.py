"""Threads of the CPU kernels and of torch's CPU ops, how their idle threads wait, and huge pages
for large tensors.

The kernels (and torch's own CPU ops) run on ``torch.get_num_threads()`` threads: set it with
``torch.set_num_threads(n)`` or ``OMP_NUM_THREADS=n``; it may change between calls. Results do not
depend on it (the ``*_on_1_and_2_threads`` tests of tests/ops/).

The kernels run their parallel loops on a thread pool of the library's own (csrc/cpu/thread_pool.h),
not on OpenMP's teams: its workers spin for at most 20 us after a job, then sleep; the calling
thread takes part and claims pieces of the work from a counter, so it never waits for a thread
that has not started (one whose core another process holds); it also works in a child made by
fork(). How the kernels' threads wait is therefore the same whatever a script imported first:
measured on a 2-core VM, quiet and beside a busy process, a script importing torch first ran the
kernels at 0.90-1.05x the time of one importing sparse_engine first
(benchmarks/results/pool_import_order_cpu.md; docs/cpu_kernels.md, "The thread pool"). They go
parallel from ``PARALLEL_WORK`` multiply-adds or elements (``sparse_engine._C._parallel_work()``),
whatever the environment.

torch's own CPU ops still run on libgomp, whose idle threads by default spin (busy-wait) after
every parallel region, about 4 ms on our 2-core VM, which on a machine whose other cores are busy
takes those cores' time. libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it, so importing
this module (``import sparse_engine`` does, first of all) sets ``OMP_WAIT_POLICY=PASSIVE`` when
torch is not imported yet and the variable is not set: :data:`PASSIVE_WAIT` says whether that
happened. When torch came first and neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT`` is set,
``import sparse_engine`` instead starts one sleeping OpenMP team (:func:`shorten_torch_spin`,
``sparse_engine._C._shorten_openmp_spin``): libgomp then manages more threads than there are CPUs
and spins for its short, throttled count (libgomp's documented behaviour; a few microseconds), so a
script that imports torch first runs torch's ops with short spins instead of long ones:
:data:`SHORT_SPIN` says whether that happened (measured: docs/cpu_kernels.md, "The thread pool").
Set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` to choose the waits yourself; neither is then changed.
Where such short waits make a torch op of many small parallel regions slow (the dense path's recurrences),
:func:`one_thread_here` runs the calling thread's torch ops on one thread for a block.

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

import contextlib
import ctypes
import ctypes.util
import os
import sys

__all__ = ["PASSIVE_WAIT", "SHORT_SPIN", "HUGE_PAGES", "keep_freed_memory", "shorten_torch_spin",
           "torch_waits_short", "one_thread_here"]

#: True when this import set OMP_WAIT_POLICY=PASSIVE before torch loaded libgomp (torch's own CPU ops).
PASSIVE_WAIT = "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ
if PASSIVE_WAIT:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

#: True when this import set THP_MEM_ALLOC_ENABLE=1 before torch's first allocation.
HUGE_PAGES = "torch" not in sys.modules and "THP_MEM_ALLOC_ENABLE" not in os.environ
if HUGE_PAGES:
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"


#: True when importing sparse_engine after torch shortened libgomp's spinning (:func:`shorten_torch_spin`).
SHORT_SPIN = False


def shorten_torch_spin() -> bool:
    """Where torch was imported first and no OpenMP wait was chosen (neither ``OMP_WAIT_POLICY`` nor
    ``GOMP_SPINCOUNT`` set), starts the sleeping OpenMP team that makes libgomp's idle threads spin
    briefly (once per process; ended at exit, since a team asleep then would keep the process from
    exiting); sets and returns :data:`SHORT_SPIN`. Called by ``import sparse_engine`` once the
    extension has loaded."""
    global SHORT_SPIN
    if PASSIVE_WAIT or SHORT_SPIN or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return SHORT_SPIN
    import atexit

    from .. import _C
    if _C._shorten_openmp_spin():
        atexit.register(_C._end_openmp_team)
        SHORT_SPIN = True
    return SHORT_SPIN


def torch_waits_short() -> bool:
    """Whether torch's OpenMP threads sleep soon after each parallel region: this import's
    :data:`PASSIVE_WAIT` or :data:`SHORT_SPIN`, or the user's ``OMP_WAIT_POLICY=passive``. A torch op
    made of many small parallel regions (oneDNN's LSTM, a region or more per time step) then pays a
    thread's wake-up at each: on a 2-core VM torch's LSTM at hidden 64 took 6x its one-thread time
    on two threads (benchmarks/results/small_rnn_sweep_cpu_2threads.md), which ``compute='auto'``
    counts (:func:`sparse_engine.recurrent.compute_paths.auto_min_density`)."""
    return PASSIVE_WAIT or SHORT_SPIN or os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"


@contextlib.contextmanager
def one_thread_here():
    """torch's CPU ops called from this thread (its OpenMP parallel regions and oneDNN's, MKL's products) on one
    thread for the block, restored after; other threads are left alone. (``torch.set_num_threads(1)`` also lowers
    torch's process-wide count, from which a thread that first uses torch meanwhile takes its own for good.)"""
    import torch

    from .. import _C
    torch.get_num_threads()  # torch sets a thread's count at its first use: that must not undo this one
    before = _C._set_this_thread_threads(1, 1)
    try:
        yield
    finally:
        _C._set_this_thread_threads(*before)


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
