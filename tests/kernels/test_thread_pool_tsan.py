"""The CPU kernels' thread pool (csrc/cpu/thread_pool.h) under ThreadSanitizer: tests/kernels/
thread_pool_driver.cpp, a driver of the header alone (no torch), built with -fsanitize=thread and
run: jobs back to back on 1 to 4 threads (workers waking after their job ended), per-slot scratch,
nested calls, two callers at once and chunks that throw, every chunk once and every output right,
and no race reported. A planted race (a counter every chunk adds to without an atomic) must be
reported, so that a silent sanitizer does not pass for a clean pool."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "kernels" / "thread_pool_driver.cpp"
PLANTED = """
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include "thread_pool.h"
int main() {
  long total = 0;
  for (int r = 0; r < 50; ++r) {
    // Each chunk waits (2 s at most) until both slots have run a chunk, so that the race happens
    // even where the caller could claim every chunk before the worker wakes (a slow CI machine).
    // The flag is relaxed: no happens-before for ThreadSanitizer, so it hides nothing.
    std::atomic<int> seen{0};
    sparse_engine::run_chunks(64, 2, [&](long long c, int slot) {
      seen.fetch_or(1 << slot, std::memory_order_relaxed);
      const auto t0 = std::chrono::steady_clock::now();
      while (seen.load(std::memory_order_relaxed) != 3 &&
             std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2))
        std::this_thread::yield();
      total += c;
    });
  }
  std::printf("%ld\\n", total);
}
"""

def build(cxx: str, source: Path, exe: Path, sanitize: bool) -> subprocess.CompletedProcess:
    flags = ["-O1", "-g", "-fsanitize=thread"] if sanitize else ["-O2"]
    return subprocess.run([cxx, "-std=c++17", *flags, "-pthread", f"-I{ROOT / 'csrc' / 'cpu'}", str(source), "-o",
                           str(exe)], capture_output=True, text=True, timeout=600)


def run(exe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1:exitcode=66:report_signal_unsafe=0"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def tsan_cxx(host_cxx, tmp_path_factory):
    cxx = host_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler")
    probe = tmp_path_factory.mktemp("tsan_probe")
    (probe / "p.cpp").write_text("int main() { return 0; }\n")
    out = build(cxx, probe / "p.cpp", probe / "p", sanitize=True)
    if out.returncode or run(probe / "p").returncode:
        pytest.skip(f"{cxx} cannot build or run -fsanitize=thread here: {(out.stderr or '')[-500:]}")
    return cxx


def test_pool_driver_passes_thread_sanitizer(tsan_cxx, tmp_path):
    exe = tmp_path / "pool_tsan"
    out = build(tsan_cxx, DRIVER, exe, sanitize=True)
    assert out.returncode == 0, out.stderr[-3000:]
    res = run(exe, "120")
    assert "ThreadSanitizer" not in res.stderr, res.stderr[-5000:]
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "ok", res.stdout + res.stderr[-3000:]
    jobs = int(res.stdout.split("jobs ")[1].split(",")[0])
    assert jobs > 100  # the calls ran on the pool


def test_pool_driver_without_sanitizer(host_cxx, tmp_path):
    cxx = host_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler")
    exe = tmp_path / "pool"
    out = build(cxx, DRIVER, exe, sanitize=False)
    assert out.returncode == 0, out.stderr[-3000:]
    res = run(exe, "2000")
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "ok", res.stdout + res.stderr[-3000:]


def test_thread_sanitizer_sees_a_planted_race_in_a_chunk(tsan_cxx, tmp_path):
    (tmp_path / "planted.cpp").write_text(PLANTED)
    exe = tmp_path / "planted"
    out = build(tsan_cxx, tmp_path / "planted.cpp", exe, sanitize=True)
    assert out.returncode == 0, out.stderr[-3000:]
    res = run(exe)
    assert res.returncode == 66 and "data race" in res.stderr, (res.returncode, res.stderr[-3000:])
