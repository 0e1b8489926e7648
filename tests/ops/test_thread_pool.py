"""The CPU kernels' thread pool (csrc/cpu/thread_pool.h), on the real kernels and on a job of its own
(sparse_engine._C._pool_check: chunk c counts its runs, one chunk may throw, chunk 0 may sleep, every
chunk may make a nested parallel call). Its contract: every chunk runs once, the results are the same
bits on 1 and 2 threads and on repeated calls; a call from inside a chunk, or while another Python
thread's job holds the pool, runs on its calling thread alone (no deadlock, no waiting for the
pool); an exception in a chunk reaches the caller as the op's error, the pool going on; a child made
by fork() runs parallel ops on a pool of its own; torch.set_num_threads may change between calls.
(The per-family *_on_1_and_2_threads tests split every parallel loop of the kernels on 2 threads.)"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from sparse_engine import SparseWeight, _C, ops
from sparse_engine.testing import num_threads

ROOT = Path(__file__).resolve().parents[2]
RAW = torch.ops.sparse_engine


def test_every_parallel_loop_of_the_kernels_is_the_pools():
    """No OpenMP parallel region, worksharing loop or thread number in csrc/cpu, nor a torch parallel
    loop (at::parallel_*, on OpenMP) there or in the index content check: `#pragma omp simd` (a
    vectorisation hint, no threads) is the only OpenMP left."""
    found = []
    for path in sorted((ROOT / "csrc" / "cpu").glob("*")) + [ROOT / "csrc" / "index_check.h"]:
        for no, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//")[0]
            if (("#pragma omp" in code and "omp simd" not in code) or "omp_get_" in code or "<omp.h>" in code
                    or "at::parallel_" in code):
                found.append(f"{path.name}:{no}: {line.strip()}")
    assert found == [], found


def stats() -> dict:
    jobs, worker_chunks, busy, nested, workers, stalls = _C._pool_stats()
    return {"jobs": jobs, "worker_chunks": worker_chunks, "busy": busy, "nested": nested, "workers": workers,
            "stalls": stalls}


def products(W: SparseWeight, X: torch.Tensor, G: torch.Tensor):
    with torch.no_grad():
        return ops.spmm(W, X), ops.spmm_t(W, G), ops.sddmm(W, G, X)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(5)
    W = SparseWeight.random(3000, 2000, 0.02, generator=g)
    X, G = torch.randn(2000, 20, generator=g), torch.randn(3000, 20, generator=g)
    assert (W.nnz + 3000) * 20 >= _C._parallel_work()  # the kernels go parallel on 2 threads
    return W, X, G


def run_in_thread(fn, timeout: float = 120.0):
    """fn()'s result, run on a thread that must end within ``timeout`` seconds (a hang fails the test)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001  (handed to the test)
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still running after {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_every_chunk_runs_once_and_the_workers_take_part():
    before = stats()
    for _ in range(50):
        once, off_caller, _ = _C._pool_check(1000, 2, -1, 0, 0)
        assert once
        assert 0 <= off_caller <= 1000
    # a job whose first chunk sleeps leaves the others to the worker: it runs them, off the caller
    once, off_caller, _ = _C._pool_check(64, 2, -1, 200, 0)
    assert once and off_caller > 0
    after = stats()
    assert after["jobs"] >= before["jobs"] + 51 and after["workers"] >= 1
    assert after["worker_chunks"] > before["worker_chunks"]
    # one thread: the calling thread alone, no job
    assert _C._pool_check(1000, 1, -1, 0, 0) == (True, 0, True)
    assert stats()["jobs"] == after["jobs"]
    assert _C._pool_check(0, 2, -1, 0, 0) == (True, 0, True)


def test_kernels_give_the_same_bits_on_1_and_2_threads_and_on_repeated_calls(inputs):
    W, X, G = inputs
    with num_threads(1):
        one = products(W, X, G)
    jobs = stats()["jobs"]
    with num_threads(2):
        for _ in range(10):
            for a, b in zip(one, products(W, X, G)):
                assert torch.equal(a, b)
    assert stats()["jobs"] >= jobs + 30  # every call split


def test_a_nested_call_runs_on_the_thread_of_its_chunk():
    nested = stats()["nested"]
    once, _, inner_same = _C._pool_check(64, 2, -1, 0, 16)
    assert once and inner_same
    assert stats()["nested"] >= nested + 64  # each chunk's call ran on its own thread, not on the pool


def test_a_call_while_another_thread_holds_the_pool_runs_on_its_own_thread():
    """Thread A's job holds the pool for a second (its chunk 0 sleeps); thread B's call meanwhile runs
    on B alone and ends long before A's: neither waits for the other, nothing deadlocks."""
    busy = stats()["busy"]
    ends = {}

    def job_a():
        out = _C._pool_check(32, 2, -1, 1000, 0)
        ends["a"] = time.monotonic()
        return out

    a = threading.Thread(target=lambda: ends.setdefault("a_result", job_a()), daemon=True)
    a.start()
    time.sleep(0.2)  # A is inside its job by now
    b_result = run_in_thread(lambda: _C._pool_check(1000, 2, -1, 0, 0))
    ends["b"] = time.monotonic()
    a.join(60)
    assert not a.is_alive()
    assert ends["a_result"][0] and b_result == (True, 0, True)  # B's chunks all on B
    assert ends["b"] < ends["a"]
    assert stats()["busy"] > busy


def test_kernels_called_from_several_python_threads_at_once(inputs):
    W, X, G = inputs
    with num_threads(1):
        expected = products(W, X, G)
    errors = []

    def work():
        try:
            for _ in range(15):
                for a, b in zip(expected, products(W, X, G)):
                    if not torch.equal(a, b):
                        errors.append("different bits")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    with num_threads(2):
        threads = [threading.Thread(target=work, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.parametrize("throw_at,hold_ms", [(0, 0), (500, 0), (999, 0), (40, 100)])
def test_a_chunk_that_throws_raises_in_the_caller_and_the_pool_goes_on(throw_at, hold_ms):
    """(40, 100): chunk 0 sleeps on the caller, so chunk 40 throws on the worker."""
    with pytest.raises(ValueError, match=f"chunk {throw_at} of the pool check failed"):
        run_in_thread(lambda: _C._pool_check(1000, 2, throw_at, hold_ms, 0))
    assert run_in_thread(lambda: _C._pool_check(1000, 2, -1, 0, 0))[0]


def test_an_ops_value_error_from_a_parallel_size_and_the_op_after_it():
    g = torch.Generator().manual_seed(1)
    state = torch.randn(300_000, 2, generator=g)
    origin = torch.arange(300_000)
    bad = origin.clone()
    bad[250_000] = 300_000  # past the state's rows
    with num_threads(2):
        with pytest.raises(ValueError, match="origin entries must be < 300000"):
            run_in_thread(lambda: RAW.gather_or_zero(state, bad))
        assert torch.equal(run_in_thread(lambda: RAW.gather_or_zero(state, origin)), state)


FORKED = textwrap.dedent("""
    import multiprocessing as mp
    import sparse_engine, torch
    from sparse_engine import SparseWeight, _C, ops

    torch.set_num_threads(2)
    W = SparseWeight.random(3000, 2000, 0.02, generator=torch.Generator().manual_seed(5))
    X = torch.randn(2000, 20, generator=torch.Generator().manual_seed(6))
    # a pattern the child checks first: the index content check runs on the pool too
    W2 = SparseWeight.random(3000, 2000, 0.02, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        parent = ops.spmm(W, X)
        parent2 = ops.spmm(W2, X)
    W2 = SparseWeight(W2.row_ptr.clone(), W2.col_idx.clone(), W2.values, W2.shape, validate=False)
    torch.ones(1 << 20).sum()  # the parent has used libgomp's team (a torch op on it would hang the child)
    assert _C._pool_stats()[4] >= 1  # the parent's pool has its worker

    def child(queue):  # (no torch op that runs on libgomp's team: that one hangs after a fork)
        jobs = _C._pool_stats()[0]
        with torch.no_grad():
            y = ops.spmm(W, X)
            y2 = ops.spmm(W2, X)  # a fresh copy of the index: checked here, on the pool
        check = _C._pool_check(1000, 2, -1, 50, 0)
        same = y.numpy().tobytes() == parent.numpy().tobytes() and y2.numpy().tobytes() == parent2.numpy().tobytes()
        queue.put((same, check, _C._pool_stats()[0] - jobs, _C._pool_stats()[4]))

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=child, args=(queue,))
    p.start()
    same, check, jobs, workers = queue.get(timeout=120)
    p.join(60)
    print(same, check[0], check[1] > 0, jobs >= 2, workers >= 1, p.exitcode)
""")


def test_a_forked_child_runs_parallel_ops_on_a_pool_of_its_own():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FORKED], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # the same bits, every chunk once, the child's worker took chunks, its calls split, exit 0
    assert out.stdout.split() == ["True", "True", "True", "True", "True", "0"], out.stdout + out.stderr[-2000:]


def test_the_thread_count_may_change_between_calls(inputs):
    W, X, G = inputs
    with num_threads(1):
        jobs = stats()["jobs"]
        one = products(W, X, G)
        assert stats()["jobs"] == jobs  # one thread: no job
    for n in (2, 1, 3, 2):
        with num_threads(n):
            jobs = stats()["jobs"]
            for a, b in zip(one, products(W, X, G)):
                assert torch.equal(a, b)
            assert (stats()["jobs"] > jobs) == (n > 1)
            assert stats()["workers"] >= n - 1
