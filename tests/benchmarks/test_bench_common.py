"""benchmarks/common.py: the machine line every results file starts with, the CUDA-event
timer (checked here with a fake device clock, so that it is checked without a GPU too), where a
script's results go (a fresh file without --out) and what its console shows (the header, a line
as each cell starts and ends, flushed)."""
import datetime
import os
import re
import select
import subprocess
import sys
import time
import types
from pathlib import Path

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


# ------------------------------------------------------------------ where the results go
def test_without_out_a_fresh_file_under_results_local(monkeypatch, tmp_path, common):
    """No --out: benchmarks/results/local/<default stem>-<UTC time>.md, a file that does not exist
    yet (``-2`` after the time when one does), never the committed table."""
    path = common.results_path(None, "cpu_ops.md")
    assert path.parent == common.RESULTS / "local" == common.LOCAL and not path.exists()
    assert re.fullmatch(r"cpu_ops-\d{8}-\d{6}\.md", path.name)
    assert path != common.RESULTS / "cpu_ops.md"
    # the stem of a default that names the device or the options is kept
    assert re.fullmatch(r"cuda_ops_nvidia_h200_bf16_quick-\d{8}-\d{6}\.md",
                        common.results_path(None, "cuda_ops_nvidia_h200_bf16_quick.md").name)
    fixed = datetime.datetime(2026, 11, 26, 12, 34, 56, tzinfo=datetime.timezone.utc)
    monkeypatch.setattr(common, "datetime", types.SimpleNamespace(
        datetime=types.SimpleNamespace(now=lambda tz: fixed), timezone=datetime.timezone))
    monkeypatch.setattr(common, "LOCAL", tmp_path / "local")
    first = common.results_path(None, "rnn_cpu.md")
    assert first == tmp_path / "local" / "rnn_cpu-20261126-123456.md"
    first.parent.mkdir()
    first.write_text("an earlier run in the same second")
    assert common.results_path(None, "rnn_cpu.md") == tmp_path / "local" / "rnn_cpu-20261126-123456-2.md"


def test_results_local_is_ignored_by_git(common):
    probe = common.results_path(None, "cpu_ops.md")
    try:
        done = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=common.ROOT)
    except OSError:
        pytest.skip("no git")
    if done.returncode == 128:
        pytest.skip("not a git checkout")
    assert done.returncode == 0, f"{probe} is not ignored: .gitignore needs benchmarks/results/local/"


def test_out_a_name_a_path_or_a_folder(monkeypatch, tmp_path, common):
    """--out NAME: benchmarks/results/NAME (the committed table, rewritten on purpose); a path with
    a folder: as given; a folder (a trailing / or one that exists): the default name in it."""
    assert common.results_path("cpu_ops.md", "x.md") == common.RESULTS / "cpu_ops.md"
    assert common.results_path("a/b.md", "x.md") == Path("a/b.md")
    assert common.results_path(str(tmp_path / "t.md"), "x.md") == tmp_path / "t.md"
    assert common.results_path(Path("a/b.md"), "x.md") == Path("a/b.md")
    assert common.results_path("benchmarks/results/", "cuda_ops_h100_quick.md") == \
        Path("benchmarks/results/cuda_ops_h100_quick.md")
    assert common.results_path(str(tmp_path), "topology_h100.md") == tmp_path / "topology_h100.md"
    # what --append / --only read: --out's file, else the committed table (read, not written)
    assert common.previous_results(None, "memory_model_cpu.md") == common.RESULTS / "memory_model_cpu.md"
    assert common.previous_results("other.md", "memory_model_cpu.md") == common.RESULTS / "other.md"
    assert common.previous_results("a/b.md", "memory_model_cpu.md") == Path("a/b.md")


# ------------------------------------------------------------------ what the console shows
def test_header_then_a_line_when_a_cell_starts_and_one_when_it_ends(capsys, common):
    path = common.results_path(None, "t.md")
    common.announce("A table", ["hidden", "ms"], path)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# A table" and out[1].startswith("Machine: ") and out[1].endswith(" UTC")
    assert out[2] == f"results: {common.shown(path)}" and out[3] == "| hidden | ms |"
    with common.cell("hidden 100,000") as c:
        assert capsys.readouterr().out == "hidden 100,000 ...\n"  # printed before the cell's work ends
        c.result = ["100,000", "1.5"]
    assert re.fullmatch(r"hidden 100,000: 100,000 \| 1\.5 \(\d+\.\d s\)\n", capsys.readouterr().out)
    with pytest.raises(ValueError):
        with common.cell("hidden 1") as c:
            raise ValueError("out of memory")
    assert capsys.readouterr().out.splitlines()[-1].startswith("hidden 1: failed: ValueError: out of memory (")
    c = common.cell_starts("largest")
    common.cell_ends(c)
    assert re.fullmatch(r"largest \.\.\.\nlargest: done \(\d+\.\d s\)\n", capsys.readouterr().out)
    common.finish(path)
    assert capsys.readouterr().out == f"results: {common.shown(path)}\n"


CHILD = """
import sys
sys.path.insert(0, "benchmarks")
import os
import common
common.announce("T", ["a", "b"], common.results_path("/tmp/unused.md", "t.md"))
with common.cell("cell one"):
    os.read(0, 1)  # the parent lets it end once it has read the start line (a raw read: no flush on the way)
"""


def test_lines_are_flushed_through_a_pipe(common):
    """Into a pipe (a log, `tee`) Python's stdout is block-buffered: the start line of a long cell
    must arrive while the cell runs, not when the script ends."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as a user's run is
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=common.ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)
    try:
        got, deadline = b"", time.monotonic() + 120
        while b"cell one ...\n" not in got:  # read as it arrives (no buffered reader in between)
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no start line while the cell runs (got {got!r})"
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the script ended first: {got!r}"
            got += chunk
        assert proc.poll() is None  # still inside the cell
        seen = got.decode().splitlines()
        assert seen[0] == "# T" and seen[1].startswith("Machine: ") and seen[-2:] == ["| a | b |", "cell one ..."]
        rest, _ = proc.communicate(b"\n", timeout=60)
        assert re.fullmatch(r"cell one: done \(\d+\.\d s\)\n", rest.decode())
    finally:
        proc.kill()
        proc.wait()
