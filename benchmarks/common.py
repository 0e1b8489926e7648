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
