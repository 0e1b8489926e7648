"""Every CPU kernel gives bitwise the same result on 1 and 2 threads (each output is summed in
one fixed order by one thread), at sizes above the parallel-work threshold so that the 2-thread
run really splits the work; and importing sparse_engine before torch makes OpenMP's idle
threads wait passively (sparse_engine/runtime/threads.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparse_engine import SparseWeight, ops
from sparse_engine.kernels.constants import PARALLEL_WORK, SCATTER_FROM_BYTES
from sparse_engine.nn.blocks import row_lookup
from sparse_engine.testing import num_threads, random_weight

_ops = torch.ops.sparse_engine



def same_on_1_and_2_threads(fn):
    """fn() on 1 thread and on 2; asserts the outputs are bitwise equal and returns them."""
    with num_threads(1):
        one = fn()
    with num_threads(2):
        two = fn()
    ones = one if isinstance(one, tuple) else (one,)
    twos = two if isinstance(two, tuple) else (two,)
    assert len(ones) == len(twos)
    for a, b in zip(ones, twos):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    return one


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 20, 33])
def test_spmm_spmm_t_sddmm(dtype, B):
    g = torch.Generator().manual_seed(B)
    W = random_weight(700, 500, 0.1, empty_rows=20, full_rows=2, dtype=dtype, generator=g)
    X = torch.randn(500, B, generator=g).to(dtype)
    G = torch.randn(700, B, generator=g).to(dtype)
    assert (W.nnz + 700) * B >= 2**15 or B == 1
    v_t = ops.transposed_values(W)
    same_on_1_and_2_threads(lambda: (ops.spmm(W, X), ops.spmm_t(W, G), ops.sddmm(W, G, X), ops.spmm_t(W, G, v_t)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 20])
def test_spmm_t_scatter(dtype, B):
    """spmm_t without values_t at a size where it scatters the CSR's rows (csrc/cpu/scatter.h):
    each thread owns a range of output rows, every sum runs over the rows in order."""
    g = torch.Generator().manual_seed(B)
    W = random_weight(2200, 1100, 0.9, empty_rows=20, full_rows=2, dtype=dtype, generator=g)
    assert W.nnz * W.values.element_size() >= SCATTER_FROM_BYTES
    G = torch.randn(2200, B, generator=g).to(dtype)
    same_on_1_and_2_threads(lambda: ops.spmm_t(W, G))


def test_row_lookup_gradient():
    """The embedding lookup's gradient (repeated ids accumulate into the values): more than 32,768
    gathered entries, where torch's index_put_(accumulate=True), the backward of plain indexing,
    adds float32 with atomics from several threads."""
    g = torch.Generator().manual_seed(3)
    W = random_weight(44, 200, 0.5, dtype=torch.float32, generator=g)
    ids = torch.randint(0, 44, (700,), generator=g)
    up = torch.randn(700, 200, generator=g)

    def gradient():
        W.values.grad = None
        (row_lookup(W, ids) * up).sum().backward()
        return W.values.grad.clone()

    assert int((W.row_ptr[ids + 1] - W.row_ptr[ids]).sum()) > 32_768
    same_on_1_and_2_threads(gradient)


def test_transpose_index():
    g = torch.Generator().manual_seed(1)
    W = random_weight(900, 800, 0.2, empty_rows=30, generator=g)
    csc = same_on_1_and_2_threads(lambda: _ops.transpose_index(W.row_ptr, W.col_idx, 800))
    for a, b in zip(csc, (W.csc_ptr, W.csc_row, W.csc_perm)):
        assert torch.equal(a, b)


H, B_STEP = 300, 20


def step_weight(gates: int, seed: int) -> SparseWeight:
    return SparseWeight.random(gates * H, H, 0.1, generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("B", [1, B_STEP])
def test_recurrent_steps_forward_and_backward(B):
    g = torch.Generator().manual_seed(2)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    h, c, dh, dc = rnd(H, B), rnd(H, B), rnd(H, B), rnd(H, B)
    lstm, gru, rnn = step_weight(4, 0), step_weight(3, 1), step_weight(1, 2)
    acts4 = torch.rand(4 * H, B, generator=g, dtype=torch.float64)
    cases = {
        "lstm": lambda: _ops.lstm_step(*lstm.index, lstm.values.detach(), rnd(4 * H, B), h, c),
        "lstm_backward": lambda *t: _ops.lstm_step_backward(*lstm.index, lstm.values.detach(), acts4, c, c, dh, dc, *t),
        "gru": lambda: _ops.gru_step(*gru.index, gru.values.detach(), rnd(3 * H, B), h, rnd(3 * H)),
        "gru_backward": lambda *t: _ops.gru_step_backward(*gru.index, gru.values.detach(), acts4, h, dh, *t),
        "rnn": lambda: _ops.rnn_step(*rnn.index, rnn.values.detach(), rnd(H, B), h, False),
        "rnn_backward": lambda *t: _ops.rnn_step_backward(*rnn.index, rnn.values.detach(), torch.tanh(h), dh, True,
                                                          *t),
        "ctrnn": lambda: _ops.ctrnn_step(*rnn.index, rnn.values.detach(), rnd(H, B), h, 0.1, 1.0),
        "ctrnn_backward": lambda *t: _ops.ctrnn_step_backward(*rnn.index, rnn.values.detach(), acts4[:H], dh, 0.1,
                                                              1.0, *t),
    }
    for name, W in (("lstm", lstm), ("gru", gru), ("rnn", rnn), ("ctrnn", rnn)):  # values in column order
        v_t = W.values.detach()[W.csc_perm.long()]
        cases[f"{name}_backward_values_t"] = lambda f=cases[f"{name}_backward"], v_t=v_t: f(v_t)
    for name, fn in cases.items():
        state = g.get_state()

        def reseeded(fn=fn):
            g.set_state(state)
            return fn()

        same_on_1_and_2_threads(reseeded)


def test_topology_kernels():
    g = torch.Generator().manual_seed(3)
    n = 200_000
    scores = torch.randn(n, generator=g)
    W = random_weight(1000, 800, 0.1, empty_rows=10, dtype=torch.float32, generator=g)
    keep = torch.rand(W.nnz, generator=g) < 0.7
    G, X = torch.randn(1000, 16, generator=g), torch.randn(800, 16, generator=g)
    same_on_1_and_2_threads(lambda: _ops.select_smallest(scores, n // 3))
    same_on_1_and_2_threads(lambda: _ops.set_prune(scores, 0.3))
    same_on_1_and_2_threads(lambda: _ops.set_prune((scores * 4).round(), 0.3))  # ties at both cuts, some kept
    row_ptr, col_idx, values, kept_pos = same_on_1_and_2_threads(
        lambda: _ops.compact(W.row_ptr, W.col_idx, W.values.detach(), keep))
    new_row, new_col = same_on_1_and_2_threads(lambda: _ops.random_empty(row_ptr, col_idx, 800, 20_000, 7))
    new_values = torch.randn(new_row.numel(), generator=g)
    merged = same_on_1_and_2_threads(
        lambda: _ops.merge(row_ptr, col_idx, values, 800, new_row, new_col, new_values))
    origin = same_on_1_and_2_threads(lambda: _ops.remap_index(kept_pos, merged[3], merged[1].numel()))
    state = torch.randn(W.nnz, 3, generator=g)
    same_on_1_and_2_threads(lambda: _ops.gather_or_zero(state, origin))

    def rewire():  # its outputs, the carried tensors' list flattened
        out = _ops.rewire(W.row_ptr, W.col_idx, W.values.detach(), 800, keep, None, None, None, None, 20_000, 7,
                          0, 0, 0, False, [state, state[:, 0]])
        return (*out[:8], *out[8])
    same_on_1_and_2_threads(rewire)
    rows = torch.repeat_interleave(torch.arange(1000), W.row_ptr.diff())
    same_on_1_and_2_threads(lambda: _ops.coo_dot(rows, W.col_idx, G, X))
    same_on_1_and_2_threads(lambda: _ops.grad_topk(W.row_ptr, W.col_idx, G, X, 5000, 256, 256))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_mlp_kernels(dtype):
    g = torch.Generator().manual_seed(5)
    # above both passes' parallel thresholds (csrc/cpu/mlp_cpu.cpp: 2^18 and 2^19 elements), so that
    # two threads do split them
    z = torch.randn(7000, 40, generator=g).to(dtype)
    param, buf, grad = (torch.randn(600_000, generator=g).to(dtype) for _ in range(3))

    def relu_dropout():
        out = z.clone()
        _ops.relu_dropout(out, 0.2, 12345)
        return out

    def sgd_step():
        p, b = param.clone(), buf.clone()
        _ops.sgd_step(p, b, grad, 0.05, 0.9, 2e-4)
        return p, b

    same_on_1_and_2_threads(relu_dropout)
    same_on_1_and_2_threads(sgd_step)


ROOT = Path(__file__).resolve().parents[1]


def wait_policy_after(code: str, variable: str = "OMP_WAIT_POLICY", **env) -> str:
    """``variable`` (OMP_WAIT_POLICY) in a fresh interpreter after running ``code``."""
    base = {k: v for k, v in os.environ.items() if k != variable}
    out = subprocess.run([sys.executable, "-c", code + f"; import os; print(os.environ.get({variable!r}))"],
                         env={**base, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def test_importing_sparse_engine_first_makes_waiting_passive():
    assert wait_policy_after("import sparse_engine; assert sparse_engine.runtime.threads.PASSIVE_WAIT") == "PASSIVE"
    # too late once torch has loaded libgomp: left alone, and PASSIVE_WAIT says so
    assert wait_policy_after("import torch, sparse_engine; assert not sparse_engine.runtime.threads.PASSIVE_WAIT") == "None"
    # a policy the user set is kept
    assert wait_policy_after("import sparse_engine", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def stderr_after(code: str, **env) -> list[str]:
    """The lines a fresh interpreter writes to stderr running ``code`` (no wait policy set unless given)."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True)
    return out.stderr.splitlines()


def test_importing_torch_first_is_said_in_one_line_unless_the_policy_is_chosen():
    torch_first = "import torch; torch.set_num_threads(2); import sparse_engine"
    lines = stderr_after(torch_first)
    assert len(lines) == 1 and "RuntimeWarning" in lines[0] and "import sparse_engine first" in lines[0]
    assert stderr_after("import sparse_engine, torch; torch.set_num_threads(2)") == []
    assert stderr_after(torch_first, OMP_WAIT_POLICY="ACTIVE") == []  # a choice: spinning kept, no warning
    assert stderr_after(torch_first, GOMP_SPINCOUNT="1000") == []
    assert stderr_after("import torch; torch.set_num_threads(1); import sparse_engine") == []  # nothing spins


def test_kernels_stay_on_one_thread_for_more_work_where_idle_threads_sleep():
    """Where libgomp's threads sleep at once (passive, no spin count) a parallel region first
    wakes one, so the work from which kernels go parallel is higher (csrc/cpu/common.h)."""
    # torch first, so that importing sparse_engine sets no policy: only the environment's counts
    read = "import torch, sparse_engine._C as C, os; os.environ['X'] = str(C._parallel_work())"
    spin, sleep = str(PARALLEL_WORK), str(1 << 19)
    assert wait_policy_after(read, "X") == spin  # libgomp's default: spin
    assert wait_policy_after("import sparse_engine; " + read, "X") == sleep  # the import's PASSIVE
    assert wait_policy_after(read, "X", OMP_WAIT_POLICY="passive") == sleep
    assert wait_policy_after(read, "X", OMP_WAIT_POLICY="ACTIVE") == spin
    assert wait_policy_after(read, "X", OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT="1000") == spin
    assert wait_policy_after(read, "X", GOMP_SPINCOUNT="0") == sleep
    assert wait_policy_after(read, "X", OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT="infinity") == spin


def test_importing_sparse_engine_first_asks_torch_for_huge_pages():
    thp = "THP_MEM_ALLOC_ENABLE"
    assert wait_policy_after("import sparse_engine; assert sparse_engine.runtime.threads.HUGE_PAGES", thp) == "1"
    assert wait_policy_after("import torch, sparse_engine; assert not sparse_engine.runtime.threads.HUGE_PAGES", thp) == "None"
    assert wait_policy_after("import sparse_engine", thp, THP_MEM_ALLOC_ENABLE="0") == "0"


MMAPPED_AFTER_64MB = """
import ctypes, sys, torch
import sparse_engine.runtime.threads as threads
kept = threads.keep_freed_memory() if sys.argv[1] == "keep" else None
class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
x = torch.ones(16 * 2**20)  # 64 MiB
print(kept, mallinfo2().hblkhd >= 64 * 2**20)
"""


def glibc_version() -> tuple[int, ...]:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (ValueError, OSError, AttributeError):
        return ()
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else ()


@pytest.mark.skipif(glibc_version() < (2, 33), reason="needs glibc's mallinfo2 (2.33 and later)")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    def run(mode, **env):
        base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        out = subprocess.run([sys.executable, "-c", MMAPPED_AFTER_64MB, mode], env={**base, "PYTHONPATH": str(ROOT), **env},
                             capture_output=True, text=True, check=True)
        return out.stdout.split()
    assert run("default") == ["None", "True"]  # glibc mmaps a 64 MiB block of its own
    assert run("keep") == ["True", "False"]  # from the heap
    # malloc settings the user chose are left alone
    assert run("keep", GLIBC_TUNABLES="glibc.malloc.check=0") == ["False", "True"]


def _first_import_line(tree, package: str):
    """Line of the first top-level statement that imports ``package`` (or a submodule), or None."""
    import ast

    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(n == package or n.startswith(package + ".") for n in names):
            return node.lineno
    return None


SCRIPTS = sorted((ROOT / "examples").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_import_sparse_engine_before_torch(script):
    """A script that imports torch first leaves libgomp spinning (a busy machine made the Selfish
    example's first epoch 187 s instead of 9 s, and benchmark tables ran with another policy than
    a user's): sparse_engine (or benchmarks/common.py, which imports it first) comes before torch."""
    import ast

    tree = ast.parse(script.read_text())
    theirs = _first_import_line(tree, "torch")
    ours = min((line for line in (_first_import_line(tree, "sparse_engine"), _first_import_line(tree, "common"))
                if line is not None), default=None)
    if script.parent.name == "examples":
        assert ours is not None, f"{script.name} does not import sparse_engine"
    assert theirs is None or (ours is not None and ours < theirs), \
        f"{script.parent.name}/{script.name}: torch at line {theirs}, sparse_engine at {ours}"
