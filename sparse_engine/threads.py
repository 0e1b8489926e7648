"""Threads of the CPU kernels, and how idle OpenMP threads wait.

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
"""
from __future__ import annotations

import os
import sys

__all__ = ["PASSIVE_WAIT"]

#: True when this import set OMP_WAIT_POLICY=PASSIVE before torch loaded libgomp.
PASSIVE_WAIT = "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ
if PASSIVE_WAIT:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
