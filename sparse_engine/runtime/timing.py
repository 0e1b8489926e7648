"""Measurements used by ``sparse-engine bench``, the benchmark scripts (benchmarks/) and the
memory tests, kept in the package so that all of them measure the same way."""
from __future__ import annotations

import resource
import sys
import time


def best_of(fn, repeat: int = 3, warmup: int = 0) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn``, after ``warmup`` untimed calls."""
    return min(times_of(fn, repeat, warmup))


def times_of(fn, repeat: int = 3, warmup: int = 0) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def peak_rss_bytes() -> int:
    """Peak resident memory of this process, in bytes. On Linux the high-water mark of its own
    address space (``VmHWM``): ``getrusage``'s ``ru_maxrss`` survives ``exec``, so a child
    started by a large process (a test run, a benchmark driver) would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB
