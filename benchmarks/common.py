"""Timing and reporting helpers shared by the benchmark scripts."""
from __future__ import annotations

import datetime
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def timeit(fn, *, repeat: int = 7, min_time: float = 0.2, warmup: int = 1) -> float:
    """Median seconds per call; each sample loops until ``min_time`` has passed."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    if time.perf_counter() - start > 1.0:  # slow baselines: three single calls are enough
        repeat, min_time = 3, 0.0
    samples = []
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time / repeat:
                break
        samples.append(elapsed / n)
    return statistics.median(samples)


def machine() -> str:
    """One line naming the machine the numbers come from."""
    cpu = platform.processor() or "cpu"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return (f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}")


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, body: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(f"# {title}\n\nMachine: {machine()}\n\n{body}\n")
    return path


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def ratio(baseline: float | None, ours: float) -> str:
    return "-" if baseline is None else f"{baseline / ours:.2f}x"


def random_csr_on(rows: int, cols: int, nnz: int, device, seed: int = 0):
    """(row_ptr, col_idx, values) of a uniformly random rows x cols pattern of exactly nnz
    entries, drawn on ``device`` (the topology ops' random_empty: O(nnz) there). On a GPU this
    takes milliseconds where SparseWeight.random, which draws on the host, takes minutes at
    100M+ entries. Values: uniform(+-1/sqrt(nnz per row)), like SparseWeight.random."""
    from sparse_engine.kernels import topology_cuda

    device = torch.device(device)
    empty = torch.zeros(rows + 1, dtype=torch.int64, device=device)
    no_cols = torch.empty(0, dtype=torch.int32, device=device)
    row, col_idx = topology_cuda.random_empty_cuda(empty, no_cols, cols, nnz, seed)
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64, device=device)
    torch.cumsum(torch.bincount(row, minlength=rows), 0, out=row_ptr[1:])
    del row
    bound = 1.0 / max(1.0, nnz / max(rows, 1)) ** 0.5
    g = torch.Generator(device=device).manual_seed(seed)
    values = torch.empty(nnz, device=device).uniform_(-bound, bound, generator=g)
    return row_ptr, col_idx, values
