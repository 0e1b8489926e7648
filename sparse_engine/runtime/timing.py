"""Measurements used by ``sparse-engine bench``, the benchmark scripts (benchmarks/) and the
memory tests, kept in the package so that all of them measure the same way; and the memory the
machine has free (the default budget of ``sparse-engine train --memory-budget``)."""
from __future__ import annotations

import os
import resource
import sys
import time


def best_of(fn, repeat: int = 3, warmup: int = 0, **options) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn``, after ``warmup`` untimed calls
    (``options``: those of :func:`times_of`)."""
    return min(times_of(fn, repeat, warmup, **options))


def times_of(fn, repeat: int = 3, warmup: int = 0, *, min_time: float = 0.0, setup=None, sync=None,
             clock=None) -> list[float]:
    """Seconds per call of ``fn`` in each of ``repeat`` samples, after ``warmup`` untimed calls.

    A sample is one call, or with ``min_time`` as many calls as fill that many seconds (their
    time / their number: for calls too short to time one at a time). ``setup()`` runs untimed
    before each sample and each warm-up call (to restore what a call changes); ``sync()`` (e.g.
    ``torch.cuda.synchronize``) runs before the clock starts and before it is read, so that work
    queued on a device counts; ``clock`` is the clock in seconds (``time.perf_counter`` unless
    given; ``time.thread_time`` counts only this thread's CPU time)."""
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        if sync is not None:
            sync()
        read = clock or time.perf_counter
        calls, t0 = 0, read()
        while True:
            fn()
            calls += 1
            if sync is not None:
                sync()
            elapsed = read() - t0
            if elapsed >= min_time:
                break
        times.append(elapsed / calls)
    return times


def cuda_times_of(fn, repeat: int, warmup: int = 1, *, setup=None, sync_each: bool = False) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn``, read from CUDA events recorded on the current
    stream just before and after each call, after ``warmup`` untimed calls and a synchronize.

    The calls are queued back to back and the events read after one synchronize at the end, so
    the host's launch latency hides behind the previous call, as in a training loop. With
    ``sync_each`` the device is synchronized before each call instead: the call starts on an idle
    device and its own launch latency counts. ``setup()`` runs untimed (on the host) before each
    call, warm-up included."""
    import torch  # here: this module runs without torch

    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    torch.cuda.synchronize()
    events = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        if sync_each:
            torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]


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


def rss_bytes() -> int:
    """Resident memory of this process now, in bytes (Linux: ``/proc/self/statm``; elsewhere the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def available_memory_bytes() -> int | None:
    """The memory the kernel says a new process can have without swapping (``MemAvailable`` of
    ``/proc/meminfo``), in bytes; None where there is no such file."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
