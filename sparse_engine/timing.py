"""Wall-clock timing used by ``sparse-engine bench`` and by the benchmark scripts
(benchmarks/), kept in the package so that both time operators the same way."""
from __future__ import annotations

import time


def best_of(fn, repeat: int = 3, warmup: int = 0) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
