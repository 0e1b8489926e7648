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
* Where they go, one rule for every script (:func:`results_path`): ``--out NAME`` writes
  benchmarks/results/NAME (how a committed table is rewritten, on purpose), ``--out a/b.md`` that
  path as given, ``--out DIR/`` the script's default name in DIR; without ``--out`` a fresh file
  benchmarks/results/local/<default stem>-<UTC YYYYmmdd-HHMMSS>.md (git ignores that folder), so
  that a run never overwrites a committed table by default. :func:`previous_results` is the file a
  script reads its earlier rows from (--out's, else the committed default).
* What the console shows (:func:`announce`, :func:`cell`, :func:`finish`): before the first
  measurement the table's title, the machine line, the results file and the column names; then a
  line when each cell starts (``hidden 100,000 ...``) and one when it ends (its numbers and
  seconds), each flushed, so that a cell of minutes is not silence; at the end the results file
  again.

sparse_engine is imported before torch, here and in every script (tests/runtime/test_import_order.py checks),
so that the benchmarks run with the OpenMP waiting policy a user gets: passive waiting, which
``import sparse_engine`` sets only when it comes first (sparse_engine/runtime/threads.py).
Tables measured before 2026-11-25 by scripts that imported torch first ran with libgomp's
spinning waits; benchmarks/results/README.md lists them.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not
from sparse_engine.kernels import HAS_CUDA_KERNELS  # noqa: E402
from sparse_engine.runtime.timing import cuda_times_of, times_of  # noqa: E402,F401  (cuda_times_of: the scripts')
from sparse_engine.sparse.patterns import random_csr_on  # noqa: E402,F401  (the scripts')
import torch  # noqa: E402  (after sparse_engine: see above)

RESULTS = ROOT / "benchmarks" / "results"
#: where a run without --out writes (in .gitignore): never a committed table
LOCAL = RESULTS / "local"


def out_help(default: str) -> str:
    """The help of every script's --out, ``default`` its default file name."""
    return (f"results file: a name, written in benchmarks/results/ (the committed table's, {default}, rewrites "
            "it), a path with a folder (as given) or a folder ending in / (the default name in it); default: a "
            f"fresh file benchmarks/results/local/{_stem(default)}-<UTC time>.md")


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


def write_result(name: str, title: str, body: str, copy_to: Path | None = None) -> Path:
    """Writes a results file: ``name`` is a file name (put in benchmarks/results/) or a path with a
    folder (taken as given, like the scripts whose --out is a path; the folder is made); with
    ``copy_to`` (--copy-to) a copy too."""
    path = Path(name)
    if path.parent == Path("."):
        path = RESULTS / path
    write_text(path, f"# {title}\n\nMachine: {machine()}\n\n{body}\n", copy_to)
    return path


def add_copy_to(parser) -> None:
    """The --copy-to option: a GPU session's $OUT, where the runner brings files back from."""
    parser.add_argument("--copy-to", type=Path, default=None, help="also write the results file into this folder")


def write_text(path: Path, text: str, copy_to: Path | None = None) -> None:
    """``text`` into ``path`` and, with ``copy_to``, into a file of the same name there (folders made)."""
    for target in [path] + ([Path(copy_to) / path.name] if copy_to else []):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def _stem(default: str | os.PathLike) -> str:
    return Path(default).name.removesuffix(".md")


def results_path(out: str | os.PathLike | None, default: str | os.PathLike) -> Path:
    """Where a script writes its results; ``default`` is its default file name (``cpu_ops.md``,
    or one that names the device or the options: ``rnn_gpu.md``, ``cuda_ops_<gpu>_quick.md``).

    * ``out`` None (no --out): a fresh file ``benchmarks/results/local/<default stem>-<UTC
      YYYYmmdd-HHMMSS>.md`` (``-2``, ``-3``, ... after the time if that exists), which no committed
      file can be; the folder is in .gitignore;
    * a bare name (``cpu_ops.md``): ``benchmarks/results/<name>``, e.g. the committed table, rewritten
      on purpose;
    * a folder: a path ending in ``/`` or an existing folder: ``default`` in it (gpu_all.sh's
      ``--out benchmarks/results/`` for the tables named after the GPU);
    * any other path (``a/b.md``, ``/tmp/x.md``): as given.
    """
    if out is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        path, n = LOCAL / f"{_stem(default)}-{stamp}.md", 1
        while path.exists():
            n += 1
            path = LOCAL / f"{_stem(default)}-{stamp}-{n}.md"
        return path
    text = os.fspath(out)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / Path(default).name
    return RESULTS / path if path.parent == Path(".") else path


def previous_results(out: str | os.PathLike | None, default: str | os.PathLike) -> Path:
    """The file a script reads its earlier rows from (bench_memory_model.py --append, bench_analysis.py
    --only): --out's file when given (it is rewritten too), else the committed ``benchmarks/results/
    <default>`` (read only: the run writes a fresh file, :func:`results_path`)."""
    return results_path(out, default) if out is not None else RESULTS / Path(default).name


def shown(path: str | os.PathLike) -> str:
    """``path`` as the console shows it: relative to the working directory when under it."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _line(values) -> str:
    return values if isinstance(values, str) else " | ".join(str(v) for v in values)


def announce(title: str, columns=None, path: str | os.PathLike | None = None) -> None:
    """Printed before a script's first measurement: its table's title, the machine line, where the
    results go (``results: <path>``) and the column names (a list, as the table's header row; a
    script with several tables announces the next ones' with :func:`announce_columns`)."""
    print(f"# {title}", flush=True)
    print(f"Machine: {machine()}", flush=True)
    if path is not None:
        print(f"results: {shown(path)}", flush=True)
    if columns:
        announce_columns(columns)


def announce_columns(columns) -> None:
    """The column names of a table, as its markdown header row."""
    print("| " + " | ".join(str(c) for c in columns) + " |", flush=True)


class Cell:
    """One cell of a table being measured (see :func:`cell`): ``label`` names it, ``result`` is
    what its end line shows (a row: a list, shown as ``a | b | c``; or a string)."""

    def __init__(self, label: str):
        self.label, self.result = label, None
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def cell_starts(label: str) -> Cell:
    """Prints ``<label> ...`` (flushed) and returns the cell, for :func:`cell_ends`."""
    print(f"{label} ...", flush=True)
    return Cell(label)


def cell_ends(c: Cell, result=None) -> None:
    """Prints ``<label>: <result> (<seconds> s)``, flushed; ``result`` (or ``c.result``) a row or
    a string; none: ``done``."""
    result = c.result if result is None else result
    print(f"{c.label}: {'done' if result is None else _line(result)} ({c.seconds():.1f} s)", flush=True)


@contextlib.contextmanager
def cell(label: str):
    """``with cell("hidden 100,000") as c: ...; c.result = row``: a line when the cell starts and one
    when it ends, with its numbers (``c.result``) and how long it took; a cell that raises ends with
    ``failed: <error>`` and the error goes on."""
    c = cell_starts(label)
    try:
        yield c
    except BaseException as exc:
        cell_ends(c, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise
    cell_ends(c)


def finish(path: str | os.PathLike) -> None:
    """The last line of a run: where its results are."""
    print(f"results: {shown(path)}", flush=True)


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


def copy_bandwidth(device: str = "cpu") -> float:
    """The device's memory bandwidth in bytes/s (read + write) from a float32 copy past its caches: on
    a GPU 1 GiB, the median of 10 timed with CUDA events; on the CPU 256 MiB, the best of 5 on torch's
    threads. The floor columns' denominator."""
    from sparse_engine.runtime.timing import best_of

    n = 1 << (28 if device == "cuda" else 26)
    a = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    copy = functools.partial(torch.empty_like(a).copy_, a)
    if device == "cuda":
        seconds = statistics.median(cuda_times_of(copy, 10, warmup=2))
    else:
        seconds = best_of(copy, 5, warmup=1)
    del a, copy
    if device == "cuda":
        torch.cuda.empty_cache()
    return 8 * n / seconds


def ratio(baseline: float | None, ours: float) -> str:
    return "-" if baseline is None else f"{baseline / ours:.2f}x"
