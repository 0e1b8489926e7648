"""How many threads the CPU kernels use, and the busy-machine rule.

The kernels run on ``torch.get_num_threads()`` threads (set it with ``torch.set_num_threads`` or
``OMP_NUM_THREADS``), except that while the machine is busy -- the 1-minute load average is at
least the number of online CPUs plus one -- they run on one thread: OpenMP threads that other
processes deschedule mid-region make every barrier wait, and 2 threads on a loaded 2-core
machine ran 3-40x slower than 1 (docs/cpu_kernels.md). The load average is read at most once a
second. ``SPARSE_ENGINE_BUSY_RULE=0`` in the environment (or :func:`set_busy_rule`) turns the
rule off. Results do not depend on the thread count either way (tests/test_threads.py).
"""
from __future__ import annotations

import os

__all__ = ["busy_rule", "set_busy_rule", "machine_busy"]

_VAR = "SPARSE_ENGINE_BUSY_RULE"


def busy_rule() -> bool:
    """Whether the kernels drop to one thread on a busy machine (the default)."""
    return not os.environ.get(_VAR, "1").startswith("0")


def set_busy_rule(on: bool) -> None:
    """Turns the busy-machine rule on or off for this process (the kernels read the variable)."""
    if not isinstance(on, bool):
        raise TypeError(f"on must be a bool, got {type(on).__name__}")
    os.environ[_VAR] = "1" if on else "0"


def machine_busy() -> bool:
    """The rule's test, as the kernels make it: 1-minute load average >= online CPUs + 1."""
    return os.getloadavg()[0] >= (os.cpu_count() or 1) + 1
