"""Threads of the CPU kernels, how idle OpenMP threads wait, and huge pages for large tensors.

The kernels (and torch's own CPU ops) run on ``torch.get_num_threads()`` threads: set it with
``torch.set_num_threads(n)`` or ``OMP_NUM_THREADS=n``. Results do not depend on it
(tests/test_threads.py).

Waiting: by default libgomp's idle threads spin (busy-wait) after every parallel region. On a
machine whose cores other processes keep busy, the spinning threads and the descheduled ones
that every barrier waits for made 2 threads 3-60x slower than 1 (measured: docs/cpu_kernels.md).
With ``OMP_WAIT_POLICY=PASSIVE`` idle threads sleep at once and 2 threads cost the same as 1
there. libgomp reads the variable once, when torch loads it, so setting it later does nothing:
importing this module (``import sparse_engine`` does, first of all) sets
``OMP_WAIT_POLICY=PASSIVE`` when torch is not imported yet and the variable is not set.
:data:`PASSIVE_WAIT` says whether that happened; set the variable yourself (or import
sparse_engine before torch) when torch comes first.

Huge pages: the kernels gather rows of activations (and, in spmm_t, weight values) at random
from tensors of tens of megabytes; with 4 KiB pages nearly every gather also misses the TLB.
torch backs CPU allocations of 2 MiB and more with transparent huge pages when
``THP_MEM_ALLOC_ENABLE=1`` (read once, at torch's first allocation), so the same import sets
it too when torch is not imported yet and the variable is unset (:data:`HUGE_PAGES`). Measured
on a 784-333333-333333-333334-10 SET-MLP (1 thread): spmm_t 29% faster, spmm 10%, sddmm
15%, a training step 21% (CPU time; docs/set_mlp.md). It needs the kernel's THP mode
``madvise`` or ``always`` (/sys/kernel/mm/transparent_hugepage/enabled); with ``never`` it
does nothing.
"""
from __future__ import annotations

import os
import sys

__all__ = ["PASSIVE_WAIT", "HUGE_PAGES"]

#: True when this import set OMP_WAIT_POLICY=PASSIVE before torch loaded libgomp.
PASSIVE_WAIT = "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ
if PASSIVE_WAIT:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

#: True when this import set THP_MEM_ALLOC_ENABLE=1 before torch's first allocation.
HUGE_PAGES = "torch" not in sys.modules and "THP_MEM_ALLOC_ENABLE" not in os.environ
if HUGE_PAGES:
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
