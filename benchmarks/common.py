"""What the benchmark scripts share: how they time, how they name the machine, how they write
their results.

* Timing: wall time (or another clock) through ``sparse_engine.runtime.timing.times_of`` /
  ``best_of``, the helpers ``sparse-engine bench`` uses too; :func:`timeit` is their median of
  adaptive samples for calls of microseconds; ``cuda_times_of`` (sparse_engine.runtime.timing)
  times work queued on a GPU with CUDA events; ``random_csr_on`` (sparse_engine.sparse.patterns)
  draws a large random pattern on the device.
* :func:`machine`: the one line every results file's header gives (CPU, cores, threads, load,
  versions, GPU, whether this build has the CUDA kernels, date).
* :func:`write_result`, :func:`markdown_table`, :func:`ms`, :func:`ratio`: the results files.

sparse_engine is imported before torch, here and in every script (tests/runtime/test_import_order.py checks),
so that the benchmarks run with the OpenMP waiting policy a user gets: passive waiting, which
``import sparse_engine`` sets only when it comes first (sparse_engine/runtime/threads.py).
Tables measured before 2026-11-25 by scripts that imported torch first ran with libgomp's
spinning waits; benchmarks/results/README.md lists them.
"""
from __future__ import annotations

import datetime
import functools
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not
from sparse_engine.kernels import HAS_CUDA_KERNELS  # noqa: E402
from sparse_engine.runtime.timing import cuda_times_of, times_of  # noqa: E402,F401  (cuda_times_of: the scripts')
from sparse_engine.sparse.patterns import random_csr_on  # noqa: E402,F401  (the scripts')
import torch  # noqa: E402  (after sparse_engine: see above)

RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------------- timing
def timeit(fn, *, repeat: int = 7, min_time: float = 0.2, warmup: int = 1) -> float:
    """Median seconds per call over ``repeat`` samples, each calling ``fn`` until
    ``min_time / repeat`` seconds have passed; a call whose warm-up took over a second (a slow
    baseline) is timed in three single calls instead."""
    if sum(times_of(fn, warmup)) > 1.0:
        repeat, min_time = 3, 0.0
    return statistics.median(times_of(fn, repeat, min_time=min_time / repeat))


# --------------------------------------------------------------------------- machine
@functools.lru_cache(maxsize=None)
def _lscpu() -> dict:
    """``lscpu``'s "field: value" lines (empty where there is no lscpu)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v.strip()}


def _cores() -> str:
    info, logical = _lscpu(), os.cpu_count()
    try:
        cores = int(info["Core(s) per socket"]) * int(info.get("Socket(s)", 1))
    except (KeyError, ValueError):
        return f"{logical} logical CPUs"
    return f"{cores} cores" + (f" ({logical} logical CPUs)" if logical != cores else "")


def machine() -> str:
    """One line naming where and when the numbers were taken, for every results file's header:
    the CPU model and its cores, torch's threads, the 1-minute load average now, python and torch
    (and CUDA) versions, the GPU, whether this build has the CUDA kernels, the date and time (UTC)."""
    cpu = _lscpu().get("Model name") or platform.processor() or "unknown CPU"
    gpu = (f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})" if torch.cuda.is_available()
           else "no GPU")
    threads = torch.get_num_threads()
    return (f"{cpu}, {_cores()}, {threads} torch thread{'s' * (threads != 1)}, 1-min load average "
            f"{os.getloadavg()[0]:.1f}; python {platform.python_version()}, torch {torch.__version__}; {gpu}, "
            f"CUDA kernels {'built' if HAS_CUDA_KERNELS else 'not built'}; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


# --------------------------------------------------------------------------- results
def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, body: str) -> Path:
    """Writes a results file: ``name`` is a file name (put in benchmarks/results/) or a path with a
    folder (taken as given, like the scripts whose --out is a path; the folder is made)."""
    path = Path(name)
    if path.parent == Path("."):
        path = RESULTS / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\nMachine: {machine()}\n\n{body}\n")
    return path


def parse_hidden(text: str) -> int:
    """A layer size written as on the command lines of the benchmarks: ``10000``, ``10k``, ``1M``."""
    import argparse
    text = text.strip().lower()
    scale = {"k": 10**3, "m": 10**6}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 10k,100k,1M; got {text!r}") from None


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def ratio(baseline: float | None, ours: float) -> str:
    return "-" if baseline is None else f"{baseline / ours:.2f}x"
