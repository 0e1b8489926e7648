"""benchmarks/common.py: the machine line every results file starts with, and the CUDA-event
timer (checked here with a fake device clock, so that it is checked without a GPU too)."""
import os

import pytest
import torch

from sparse_engine.kernels import HAS_CUDA_KERNELS


@pytest.fixture
def common(load_script):
    return load_script("benchmarks/common.py")


def test_machine_names_cpu_cores_threads_versions_and_the_cuda_build(monkeypatch, common):
    monkeypatch.setattr(common, "_lscpu", lambda: {"Model name": "Some CPU 9000", "Core(s) per socket": "4",
                                                   "Socket(s)": "2"})
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    line = common.machine()
    assert line.startswith("Some CPU 9000, 8 cores (32 logical CPUs), ")
    assert f"{torch.get_num_threads()} torch thread" in line and f"torch {torch.__version__}" in line
    assert ("CUDA kernels built" if HAS_CUDA_KERNELS else "CUDA kernels not built") in line
    assert ("GPU " if torch.cuda.is_available() else "no GPU") in line and line.endswith(" UTC")
    monkeypatch.setattr(common, "_lscpu", dict)  # no lscpu: the logical CPUs, and some name for the CPU
    assert ", 32 logical CPUs, " in common.machine()


def test_cuda_times_of_reads_events_around_each_call(monkeypatch, common):
    log, now = [], [0.0]  # the fake device: a call of fn takes 2 ms, a synchronize 0.5 ms

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            self.t = now[0]
            log.append("record")

        def elapsed_time(self, end):
            assert log[-1] == "sync", "events read before a synchronize"
            return end.t - self.t  # milliseconds, as torch's

    def synchronize():
        now[0] += 0.5
        log.append("sync")

    def fn():
        now[0] += 2.0
        log.append("fn")

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    times = common.cuda_times_of(fn, 2, warmup=1, setup=lambda: log.append("setup"))
    assert times == [0.002, 0.002]
    assert log == ["setup", "fn", "sync"] + ["setup", "record", "fn", "record"] * 2 + ["sync"]
    log.clear()
    assert common.cuda_times_of(fn, 2, warmup=0, sync_each=True) == [0.002, 0.002]
    assert log == ["sync"] + ["sync", "record", "fn", "record"] * 2 + ["sync"]


def test_write_result_takes_a_file_name_or_a_path(monkeypatch, tmp_path, common):
    """A bare name goes to benchmarks/results/; a path is used as given (bench_rnn_large's --out
    benchmarks/results/x.md was joined to benchmarks/results/ and its first row ended the run)."""
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    assert common.write_result("a.md", "T", "body") == tmp_path / "results" / "a.md"
    monkeypatch.chdir(tmp_path)
    path = common.write_result("some/dir/b.md", "T", "body")
    assert path.resolve() == (tmp_path / "some" / "dir" / "b.md").resolve()
    assert path.read_text().startswith("# T\n\nMachine: ") and path.read_text().endswith("\n\nbody\n")
