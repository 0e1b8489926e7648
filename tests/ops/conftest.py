"""Fixtures of the op tests (tests/ops: a file per op family, tests/ops/test_<family>.py, and the
cross-family files). Test files import nothing from here; they ask for these fixtures by name:

* ``device``: each device ("cpu", and "cuda", marked ``cuda``); ``cuda_device``: "cuda" alone, for the
  tests of the CUDA kernels (mark them ``cuda`` too). Both skip the CUDA case without a CUDA device or
  without the CUDA kernels in sparse_engine._C;
* ``pattern(name, seed=0)``: one of the sparsity patterns of the CUDA tests (PATTERNS) as numpy
  (row_ptr, col_idx, shape), chosen to reach every code path of the CUDA kernels; ``pattern_weight(name,
  dtype=float32, seed=0, device="cuda")``: that pattern with standard normal values, built on the CPU;
  ``pattern_case``: each (pattern, dtype, batch width) of the families' CUDA reference tests;
* ``nan_filled_pool``: the test's CUDA allocations carved from memory full of NaN (every output written);
* ``same_on_1_and_2_threads(fn)``: ``fn()`` on 1 thread and on 2 (every parallel loop split, whatever
  the size), the same bits;
* the inputs that test_spmm.py and test_sddmm.py share (a test of one name in both checks spmm and
  spmm_t in the one, sddmm in the other, on the same inputs): ``batches(W, B, generator)`` and
  ``seeded_batches(W, B, seeds)`` (X and G for W), ``gradcheck_inputs``, ``eager_and_compiled``
  (torch.compile against eager), ``half_gradient_case`` (float16/bfloat16 gradients against float32),
  and for the CUDA tests ``assert_close_to`` (their tolerance), ``cpu_f64_references``,
  ``layout_batches``, ``many_long_rows`` and ``nan_pool_inputs``;
* ``driver_runs``, ``rnn_driver_runs`` and ``seq_driver_runs``: the CUDA emulator's drivers
  (tests/cuda_emu/driver.cpp: spmm, sddmm, transpose_index and the index scan; rnn_driver.cpp: the fused
  steps; seq_driver.cpp: the persistent whole-sequence kernels), built and run once
  per session for every seed (tests/cuda_emu/emu_testing.py); each family's test asserts on its lines.

The references, factories and assertions that code outside the op tests needs too are in
sparse_engine.testing.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cuda_emu import emu_testing
from sparse_engine import SparseWeight, _C, ops
from sparse_engine.kernels import HAS_CUDA_KERNELS
from sparse_engine.testing import (LAYOUTS, copy_weight, num_threads, randn, random_weight, references,
                                   rounding_bound, weight_with_row_lengths, with_layout)

#: why the CUDA cases skip here, or None
NO_CUDA = ("no CUDA device (torch.cuda.is_available() is False)" if not torch.cuda.is_available()
           else None if HAS_CUDA_KERNELS else "sparse_engine._C was built without the CUDA kernels "
           "(build with a CUDA torch and nvcc, or SPARSE_ENGINE_CUDA=1)")


# ------------------------------------------------------------------------- devices
@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> str:
    """Each device: "cpu", then "cuda" (skipped without a CUDA device or the CUDA kernels)."""
    if request.param == "cuda" and NO_CUDA:
        pytest.skip(NO_CUDA)
    return request.param


@pytest.fixture
def cuda_device() -> str:
    """The device for a test of the CUDA kernels (mark it ``cuda``); skips without a CUDA device or kernels."""
    if NO_CUDA:
        pytest.skip(NO_CUDA)
    return "cuda"


# ------------------------------------------------------------------------- patterns
def _power_law_lengths(rows: int, cols: int, rng, long_rows=(1.0, 0.75, 0.4)) -> np.ndarray:
    """Pareto row lengths (mean ~10) plus a few rows of the given fractions of cols, long
    enough (> max(1024, 4 * mean)) for the block-per-row kernel."""
    lengths = np.minimum(cols, (rng.pareto(1.5, rows) * 5).astype(np.int64))
    pos = rng.choice(rows, size=len(long_rows), replace=False)
    lengths[pos] = [int(f * cols) for f in long_rows]
    return lengths


def csr_pattern(name: str, seed: int = 0):
    """(row_ptr, col_idx, shape) as numpy arrays."""
    if name == "power_cols":  # long columns: the block-per-row path of spmm_t
        rp, ci, (rows, cols) = csr_pattern("power_rows", seed)
        m = sp.csr_matrix((np.ones(ci.size), ci, rp), shape=(rows, cols)).T.tocsr()
        m.sort_indices()
        return m.indptr.astype(np.int64), m.indices.astype(np.int32), (cols, rows)
    rng = np.random.default_rng(seed)
    if name == "uniform":
        rows, cols = 300, 257
        lengths = rng.binomial(cols, 0.05, rows)
    elif name == "power_rows":
        rows, cols = 400, 4096
        lengths = _power_law_lengths(rows, cols, rng)
    elif name == "empty_rows":
        rows, cols = 200, 100
        lengths = rng.integers(1, 20, rows) * (rng.random(rows) < 0.3)
    elif name == "zero_nnz":
        rows, cols, lengths = 50, 40, np.zeros(50, np.int64)
    elif name == "one_col":
        rows, cols, lengths = 100, 1, rng.integers(0, 2, 100)
    elif name == "no_rows":
        rows, cols, lengths = 0, 10, np.zeros(0, np.int64)
    elif name == "no_cols":
        rows, cols, lengths = 10, 0, np.zeros(10, np.int64)
    elif name == "wide":  # > 2^16 columns: a 17-bit radix sort in transpose_index
        rows, cols = 40, 70_000
        lengths = rng.integers(0, 400, rows)
    else:
        raise ValueError(name)
    W = weight_with_row_lengths(lengths, cols, seed=seed)
    return W.row_ptr.numpy(), W.col_idx.numpy(), (rows, cols)


def weight(name: str, dtype=torch.float32, seed: int = 0, device="cuda") -> SparseWeight:
    """The pattern ``name`` with standard normal values, built on the CPU and moved to ``device``."""
    rp, ci, shape = csr_pattern(name, seed)
    values = randn(ci.size, dtype=dtype, seed=seed + 1, device="cpu")
    return SparseWeight(torch.from_numpy(rp), torch.from_numpy(ci), values, shape).to(device)


@pytest.fixture(scope="session")
def pattern():
    """``pattern(name, seed=0)``: (row_ptr, col_idx, shape) as numpy arrays, name in PATTERNS of the
    CUDA tests ("uniform", "power_rows", "power_cols", "empty_rows", "zero_nnz", "one_col", "no_rows",
    "no_cols", "wide")."""
    return csr_pattern


@pytest.fixture(scope="session")
def pattern_weight():
    """``pattern_weight(name, dtype=torch.float32, seed=0, device="cuda")``: the pattern ``name`` with
    standard normal values, built on the CPU and moved to ``device``."""
    return weight


#: the patterns of csr_pattern that the CUDA tests of each family run on
PATTERNS = ["uniform", "power_rows", "power_cols", "empty_rows", "zero_nnz", "one_col", "no_rows", "no_cols", "wide"]
F32_BATCHES = [1, 2, 3, 4, 20, 32, 33, 64, 256, 300]  # scalar/vector loads, 1..32 lanes, 1-3 tiles
F64_BATCHES = [1, 2, 3, 20, 64, 300]
# 2-byte types load 8 per 16 bytes: 8..256 reach 1..32 lanes, 520 three tiles; 1, 3, 300 scalar
HALF_BATCHES = [1, 3, 8, 16, 32, 64, 128, 256, 300, 520]
DTYPE_BATCHES = ([(torch.float32, b) for b in F32_BATCHES] + [(torch.float64, b) for b in F64_BATCHES]
                 + [(dt, b) for dt in (torch.float16, torch.bfloat16) for b in HALF_BATCHES])
PATTERN_CASES = [(name, dtype, B) for dtype, B in DTYPE_BATCHES for name in PATTERNS]


@pytest.fixture(params=PATTERN_CASES,
                ids=[f"dtype{i // len(PATTERNS)}-{B}-{name}" for i, (name, _, B) in enumerate(PATTERN_CASES)])
def pattern_case(request) -> tuple:
    """(name, dtype, B): each pattern of PATTERNS at each dtype and batch width of DTYPE_BATCHES (batch
    widths that select each lane layout of the CUDA kernels: scalar and 16-byte vector loads, 1..32
    lanes per tile, several tiles), the cases of the families' test_ops_match_dense_reference (ids
    ``dtype<i>-<B>-<name>``, as ``parametrize("dtype,B", DTYPE_BATCHES)`` and ``parametrize("name",
    PATTERNS)`` gave them)."""
    return request.param


# ------------------------------------------------------------------------- memory
@pytest.fixture
def nan_filled_pool():
    """A private memory pool (torch.cuda.MemPool) holding one 1 GiB segment of NaN, in use for the
    test's allocations: outputs of more than 1 MB are carved from it, so an element a kernel leaves
    unwritten stays NaN. Yields the segment's (start, end) addresses. A private pool, not the
    default one: after the other tests of a session the default pool's segments (some holding live
    tensors) can serve the outputs instead (seen on the first H200 run)."""
    if os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") == "1":
        pytest.skip("needs the caching allocator (PYTORCH_NO_CUDA_MEMORY_CACHING=1 here)")
    torch.cuda.synchronize()
    pool = torch.cuda.MemPool()
    with torch.cuda.use_mem_pool(pool):
        junk = torch.full((1 << 28,), float("nan"), device="cuda")
        span = (junk.data_ptr(), junk.data_ptr() + junk.numel() * 4)
        del junk  # back to the pool, NaN inside
        yield span
    torch.cuda.synchronize()
    del pool
    torch.cuda.empty_cache()


# ------------------------------------------------------------------------- threads
def _same_on_1_and_2_threads(fn):
    """fn() on 1 thread and on 2; asserts the outputs are bitwise equal and returns them. Both runs
    with the kernels' parallel bound at 0 (sparse_engine._C._set_parallel_work), so that on 2
    threads every parallel loop splits whatever the input's size; the 2-thread run must have run
    jobs on the thread pool (csrc/cpu/thread_pool.h: _pool_stats' first count)."""
    old = _C._set_parallel_work(0)
    try:
        with num_threads(1):
            one = fn()
        jobs = _C._pool_stats()[0]
        with num_threads(2):
            two = fn()
        assert _C._pool_stats()[0] > jobs, "the 2-thread run ran no parallel job"
    finally:
        _C._set_parallel_work(old)
    ones = one if isinstance(one, tuple) else (one,)
    twos = two if isinstance(two, tuple) else (two,)
    assert len(ones) == len(twos)
    for a, b in zip(ones, twos):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    return one


@pytest.fixture(scope="session")
def same_on_1_and_2_threads():
    """``same_on_1_and_2_threads(fn)``: ``fn()`` on 1 thread and on 2, the kernels' parallel bound at 0
    so that every parallel loop splits the work; asserts that the 2-thread run ran parallel jobs and
    that the outputs (a tensor or a tuple of them) are bitwise equal, and returns them."""
    return _same_on_1_and_2_threads


# ------------------------------------------------------------------------- the products' inputs
# test_spmm.py and test_sddmm.py check spmm/spmm_t and sddmm on the same inputs: a test split in two
# builds them here, once for both files.
def _arranged(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t if layout == "contiguous" else with_layout(t, layout)


def _batches(W: SparseWeight, B: int, generator: torch.Generator, *, draw=None, layout="contiguous"):
    """(X, G): X (cols x B), then G (rows x B), standard normal drawn from ``generator`` in ``draw``
    (default: W's dtype), stored in W's dtype on W's device, in ``layout``: "contiguous", one of
    sparse_engine.testing.LAYOUTS, or a pair of them (X's, G's)."""
    rows, cols = W.shape
    dtype = W.values.dtype
    x_layout, g_layout = (layout, layout) if isinstance(layout, str) else layout
    X = torch.randn(cols, B, generator=generator, dtype=draw or dtype).to(dtype).to(W.values.device)
    G = torch.randn(rows, B, generator=generator, dtype=draw or dtype).to(dtype).to(W.values.device)
    return _arranged(X, x_layout), _arranged(G, g_layout)


@pytest.fixture(scope="session")
def batches():
    """``batches(W, B, generator, draw=None, layout="contiguous")``: (X, G), the inputs of spmm(W, X),
    spmm_t(W, G) and sddmm(W, G, X): X (cols x B), then G (rows x B), drawn from ``generator`` in
    ``draw`` (default: W's dtype; torch.float32 draws a float16/bfloat16 batch as torch.randn(...).to(dtype)),
    stored in W's dtype on W's device, contiguous or in a layout of sparse_engine.testing.LAYOUTS (one
    for both, or a pair: X's, G's)."""
    return _batches


def _seeded_batches(W: SparseWeight, B: int, seeds=(1, 2)):
    """(X, G) in W's dtype on W's device: X (cols x B) from seeds[0], G (rows x B) from seeds[1]."""
    rows, cols = W.shape
    dtype, device = W.values.dtype, W.values.device
    return (randn(cols, B, dtype=dtype, seed=seeds[0], device=device),
            randn(rows, B, dtype=dtype, seed=seeds[1], device=device))


@pytest.fixture(scope="session")
def seeded_batches():
    """``seeded_batches(W, B, seeds=(1, 2))``: (X, G) as ``batches`` gives them, each from its own seed
    (sparse_engine.testing.randn: drawn on the CPU in W's dtype, then moved to W's device)."""
    return _seeded_batches


def _gradcheck_inputs(shape, B: int, generator: torch.Generator):
    W = random_weight(*shape, generator=generator)
    rows, cols = W.shape
    v = W.values.detach().clone().requires_grad_()
    X = torch.randn(cols, B, generator=generator, dtype=torch.float64, requires_grad=True)
    G = torch.randn(rows, B, generator=generator, dtype=torch.float64, requires_grad=True)
    return W.index, v, X, G


@pytest.fixture(scope="session")
def gradcheck_inputs():
    """``gradcheck_inputs(shape, B, generator)``: (index, values, X, G) for gradcheck of the raw ops:
    a float64 random_weight(*shape)'s index and a leaf copy of its values, then X (cols x B) and
    G (rows x B) drawn from ``generator``, all three requiring grad."""
    return _gradcheck_inputs


def _eager_and_compiled(f, values: torch.Tensor, *inputs):
    v1 = values.detach().clone().requires_grad_()
    v2 = v1.detach().clone().requires_grad_()
    eager = f(v1, *inputs)
    eager.backward()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(v2, *inputs)
    compiled.backward()
    return eager, compiled, v1.grad, v2.grad


@pytest.fixture(scope="session")
def eager_and_compiled():
    """``eager_and_compiled(f, values, *inputs)``: the scalar f(values, *inputs) and its gradient in
    values, eager and under torch.compile(fullgraph=True, backend="aot_eager"), each from its own copy
    of values: (eager, compiled, eager gradient, compiled gradient)."""
    return _eager_and_compiled


def _stored(t, dtype):
    """The float64 value of what a tensor holds once stored in ``dtype``."""
    return t.detach().to(dtype).double()


def _half_gradient_case(op: str, dtype, generator: torch.Generator):
    """Gradients of sum(out * R) for one op, in ``dtype`` and in float32 on the same stored
    inputs, plus float64 sums of |terms| for the bound."""
    W = random_weight(60, 45, 0.15, empty_rows=4, generator=generator)
    B = 13
    rows, cols = W.shape
    A = torch.randn(cols if op == "spmm" else rows, B, generator=generator)  # X (spmm, sddmm) or G (spmm_t)
    C = torch.randn(rows, B, generator=generator)  # G for sddmm
    if op == "sddmm":
        A = torch.randn(cols, B, generator=generator)
    out_len = {"spmm": (rows, B), "spmm_t": (cols, B), "sddmm": (W.nnz,)}[op]
    R = torch.randn(*out_len, generator=generator).to(dtype)  # upstream gradient, stored in dtype

    def grads(dt):
        Wd = copy_weight(W, values=W.values.to(dtype), dtype=dt)
        a = A.to(dtype).to(dt).requires_grad_()
        c = C.to(dtype).to(dt).requires_grad_()
        if op == "spmm":
            out, inputs = ops.spmm(Wd, a), (Wd.values, a)
        elif op == "spmm_t":
            out, inputs = ops.spmm_t(Wd, a), (Wd.values, a)
        else:
            out, inputs = ops.sddmm(Wd, c, a), (c, a)
        assert out.dtype == dt
        out.backward(R.to(dt))
        return [t.grad for t in inputs]

    D = _stored(W.to_dense(), dtype).abs()
    Ra, Aa, Ca = R.double().abs(), _stored(A, dtype).abs(), _stored(C, dtype).abs()
    row, col, _ = W.coo()
    if op == "spmm":  # d_values = sddmm(R, X), d_X = W^T R
        abs_refs, terms = [(Ra @ Aa.T)[row, col], D.T @ Ra], [B, rows]
    elif op == "spmm_t":  # d_values = sddmm(G, R), d_G = W R
        abs_refs, terms = [(Aa @ Ra.T)[row, col], D @ Ra], [B, cols]
    else:  # d_G = S(R) X, d_X = S(R)^T G with S(R) the pattern holding R
        S = torch.zeros(rows, cols, dtype=torch.float64)
        S[row, col] = Ra
        abs_refs, terms = [S @ Aa, S.T @ Ca], [cols, rows]
    return grads(dtype), grads(torch.float32), abs_refs, terms


@pytest.fixture(scope="session")
def half_gradient_case():
    """``half_gradient_case(op, dtype, generator)``, op "spmm", "spmm_t" or "sddmm": (the gradients of
    sum(op(...) * R) in ``dtype``, the same in float32 on the same stored inputs, float64 sums of
    |terms| of each, the number of terms of each), for the float16/bfloat16 gradient tests."""
    return _half_gradient_case


# ------------------------------------------------------------------------- the CUDA tests' inputs and bound
DEV = "cuda"
REL = {torch.float32: 2e-5, torch.float64: 1e-12}  # times sum |w x|: catches any wrong term


def _tolerance(ref: torch.Tensor, bound: torch.Tensor, terms: int, dtype) -> torch.Tensor:
    """float32/float64: REL[dtype] * bound (bound = sum of |terms|). float16/bfloat16 (the
    reference is exact math on the stored inputs): float32 accumulation over ``terms`` terms
    plus one rounding to storage, u |ref| + 2 (terms + 1) u32 bound (+ half the smallest
    subnormal step), which a 2-byte accumulator would not meet."""
    if dtype in REL:
        return REL[dtype] * bound + 1e-300
    return rounding_bound(ref, bound, terms, dtype)


def _assert_close_to(out: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, terms: int, dtype) -> None:
    """|out - ref| <= _tolerance(...) elementwise."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == dtype and out.device.type == "cuda"
    err = (out.detach().cpu().double() - ref).abs()
    tol = _tolerance(ref, bound, terms, dtype)
    bad = err > tol
    assert not bool(bad.any()), f"{int(bad.sum())} of {bad.numel()} entries off; worst error {float(err.max()):.3g}"


@pytest.fixture(scope="session")
def assert_close_to():
    """``assert_close_to(out, ref, bound, terms, dtype)`` (a Reference unpacked after ``out``): a CUDA
    output of ``dtype`` within the CUDA tests' tolerance of the float64 reference everywhere: float32/float64
    2e-5 / 1e-12 times the sum of |terms| (catches any wrong term); float16/bfloat16 float32 accumulation
    plus one rounding to storage (sparse_engine.testing.rounding_bound), which a 2-byte accumulator would
    not meet."""
    return _assert_close_to


def _cpu_f64_refs(W: SparseWeight, X: torch.Tensor, G: torch.Tensor):
    """References from the CPU kernels in float64 (themselves tested against dense math),
    for sizes where a dense matrix would be too big."""
    Wc = copy_weight(W, device="cpu", dtype=torch.float64)
    Wa = copy_weight(Wc, values=Wc.values.abs())
    Xc, Gc = X.cpu().double(), G.cpu().double()
    rows, cols = W.shape
    return {
        "spmm": (ops.spmm(Wc, Xc), ops.spmm(Wa, Xc.abs()), cols),
        "spmm_t": (ops.spmm_t(Wc, Gc), ops.spmm_t(Wa, Gc.abs()), rows),
        "sddmm": (ops.sddmm(Wc, Gc, Xc), ops.sddmm(Wc, Gc.abs(), Xc.abs()), X.shape[1]),
    }


@pytest.fixture(scope="session")
def cpu_f64_references():
    """``cpu_f64_references(W, X, G)``: {"spmm", "spmm_t", "sddmm": (value, sum of |terms|, terms)} from
    the CPU kernels in float64 (themselves tested against dense math), for sizes where a dense matrix
    would be too big."""
    return _cpu_f64_refs


def _layout_batches(W: SparseWeight, B: int = 32):
    rows, cols = W.shape
    dtype = W.values.dtype
    # misaligned: contiguous but one element off 16-byte alignment, the scalar-load path
    views = {layout: with_layout(randn(cols, B, dtype=dtype, seed=1 + i, device=DEV), layout)
             for i, layout in enumerate(LAYOUTS)}
    G = with_layout(randn(rows, B, dtype=dtype, seed=4, device=DEV), "misaligned")
    return views, G


@pytest.fixture(scope="session")
def layout_batches():
    """``layout_batches(W, B=32)``: ({layout: X}, G) on CUDA in W's dtype: X (cols x B) in each layout of
    sparse_engine.testing.LAYOUTS (seeds 1, 2, 3), G (rows x B) misaligned (seed 4)."""
    return _layout_batches


def _many_long_rows():
    rng = np.random.default_rng(7)
    rows, cols = 20_000, 4096
    lengths = rng.integers(0, 10, rows)
    lengths[rng.choice(rows, 700, replace=False)] = 2048
    base = weight_with_row_lengths(lengths, cols, seed=7)
    for dtype, B in [(torch.float32, 32), (torch.float32, 5), (torch.float64, 300), (torch.float16, 32),
                     (torch.bfloat16, 8), (torch.bfloat16, 5)]:
        W = copy_weight(base, dtype=dtype).to(DEV)  # built on the CPU, then moved
        X, G = randn(cols, B, dtype=dtype, seed=1, device=DEV), randn(rows, B, dtype=dtype, seed=2, device=DEV)
        yield dtype, W, X, G


@pytest.fixture(scope="session")
def many_long_rows():
    """``many_long_rows()``: (dtype, W, X, G) on CUDA for float32 (B 32, 5), float64 (300), float16 (32) and
    bfloat16 (8, 5): 700 rows of 2048 entries among 20,000 short ones (4096 columns), more long rows
    than the block-per-row kernel's grid."""
    return _many_long_rows


def _nan_pool_inputs(dtype):
    def draw(*shape, seed):
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)

    W = random_weight(1000, 900, 0.6, seed=51, dtype=dtype)  # 540k entries: sddmm's output > 1 MB
    X, G = draw(900, 600, seed=52), draw(1000, 600, seed=53)
    refs = references(W, X, G)
    Wd, Xd, Gd = W.to(DEV), X.to(DEV), G.to(DEV)
    Wd.index  # noqa: B018  (the transposed index, built before the pool is used)
    torch.cuda.synchronize()
    return Wd, Xd, Gd, refs


@pytest.fixture(scope="session")
def nan_pool_inputs():
    """``nan_pool_inputs(dtype)``: (W, X, G, their float64 references) of the tests with ``nan_filled_pool``:
    W 1000 x 900 of density 0.6 (540k entries: every output over 1 MB, sddmm's too), X (900 x 600) and G
    (1000 x 600), drawn on the CPU (seeds 51, 52, 53), then moved to CUDA, W's transposed index built."""
    return _nan_pool_inputs


# ------------------------------------------------------------------------- the CUDA emulator
@pytest.fixture(scope="session")
def driver_runs(tmp_path_factory) -> dict:
    """{seed: CompletedProcess} of tests/cuda_emu/driver.cpp: the kernels of spmm_cuda.cu, sddmm_cuda.cu and
    transpose_cuda.cu, and the index scan, against float64 references on the emulator."""
    return emu_testing.driver_runs(tmp_path_factory, "driver")


@pytest.fixture(scope="session")
def rnn_driver_runs(tmp_path_factory) -> dict:
    """{seed: CompletedProcess} of tests/cuda_emu/rnn_driver.cpp: rnn_step_cuda.cu (+ spmm_cuda.cu, whose
    gather its backward calls), a separate executable from the driver's."""
    return emu_testing.driver_runs(tmp_path_factory, "rnn_driver")

@pytest.fixture(scope="session")
def seq_driver_runs(tmp_path_factory) -> dict:
    """{seed: CompletedProcess} of tests/cuda_emu/seq_driver.cpp: the persistent kernels of
    rnn_sequence_cuda.cu (cooperative launches, a grid-wide barrier per step) against float64 references."""
    return emu_testing.driver_runs(tmp_path_factory, "seq_driver")
