"""Measuring on a machine that other people's jobs share: wait until it is idle, and know whether a
measurement ran beside someone else's work. (No torch here: the thread-pool benchmarks,
bench_busy_core.py and bench_import_order.py, run their configurations in child interpreters.)

* :func:`wait_quiet`: until the CPUs are idle for a short window (or a time limit);
* :func:`run_clean`: runs a child command and says how much CPU time processes other than the
  child (and a busy-loop process of our own, given) took while it ran, in CPUs on average (from
  /proc/stat and the children's rusage); reruns it, after waiting for quiet, while that exceeds a
  limit, so that a table is not made of another job's load.
"""
from __future__ import annotations

import os
import resource
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat() -> tuple[int, int]:
    """(all jiffies, idle jiffies) of all CPUs so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v), v[3] + v[4]


def idle_fraction(seconds: float = 0.5) -> float:
    """The fraction of all CPUs' time idle over the next ``seconds`` (1.0 where /proc/stat is missing)."""
    try:
        t0, i0 = _stat()
        time.sleep(seconds)
        t1, i1 = _stat()
    except OSError:
        return 1.0
    return (i1 - i0) / max(1, t1 - t0)


def wait_quiet(threshold: float = 0.9, max_wait: float = 300.0) -> float:
    """Waits (up to ``max_wait`` s) until the CPUs are at least ``threshold`` idle over 0.5 s;
    returns the last idle fraction."""
    end = time.monotonic() + max_wait
    while True:
        idle = idle_fraction()
        if idle >= threshold or time.monotonic() > end:
            return idle


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def run_clean(cmd: list[str], env: dict, hog: int | None = None, limit: float = 0.15, tries: int = 4,
              quiet: float = 0.9, before_hog: bool = True) -> tuple[subprocess.CompletedProcess, float, int]:
    """Runs ``cmd`` until others' CPU use during the run averages at most ``limit`` CPUs (at most
    ``tries`` times, waiting before each retry until the CPUs other than ``hog``'s are idle):
    (the last run, others' CPUs during it, the number of runs). ``hog``: the pid of our own
    busy-loop process, whose CPU time is not counted as others'."""
    runs = 0
    while True:
        runs += 1
        busy0 = _busy_seconds()
        child0 = _children_seconds()
        hog0 = cpu_seconds(hog) if hog else 0.0
        t0 = time.monotonic()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        others = (_busy_seconds() - busy0 - (_children_seconds() - child0)
                  - ((cpu_seconds(hog) - hog0) if hog else 0.0)) / max(wall, 1e-9)
        if out.returncode or others <= limit or runs >= tries:
            return out, max(0.0, others), runs
        _wait_others_quiet(hog, quiet)


def _busy_seconds() -> float:
    total, idle = _stat()
    return (total - idle) / TICK


def _children_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _wait_others_quiet(hog: int | None, quiet: float, max_wait: float = 300.0) -> None:
    """Waits until the CPUs, less our busy-loop process's share, are ``quiet`` idle over 0.5 s."""
    end = time.monotonic() + max_wait
    cpus = os.cpu_count() or 1
    while time.monotonic() < end:
        t0, i0 = _stat()
        h0 = cpu_seconds(hog) if hog else 0.0
        time.sleep(0.5)
        t1, i1 = _stat()
        h1 = cpu_seconds(hog) if hog else 0.0
        idle = (i1 - i0) / max(1, t1 - t0) + (h1 - h0) / (0.5 * cpus)
        if idle >= quiet:
            return
