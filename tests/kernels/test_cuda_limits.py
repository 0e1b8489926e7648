"""What only a GPU can show about the CUDA kernels (skipped here; benchmarks/gpu_all.sh's first stage
runs it): sizes past the launch and 32-bit limits, a non-default stream, a training step captured in a
CUDA graph, and that every output element is written.

* batch tiles beyond grid.y's 65,535 (the launchers' grid-stride loop over tiles; the emulator lowers
  the limit to 2, a GPU has the real one), for spmm, spmm_t, sddmm and the fused LSTM step, every dtype;
* rows x batch beyond 2^31 elements (64-bit offsets into X, G and the outputs) and nnz beyond 2^31
  (64-bit positions in row_ptr and the values);
* the ops on a non-default stream while the default stream is busy: they finish without waiting for it;
* a SparseLSTM training step (forward, backward, SGD) captured in a CUDA graph and replayed, equal to the
  same steps run eagerly.

(Outputs allocated over memory filled with NaN, where no NaN may come out: the products' in
tests/ops/test_spmm.py, the fused steps' in tests/ops/test_rnn_step.py.)

The large cases need about 30 GB of GPU memory and a few seconds each. SPARSE_ENGINE_LIMITS_TEST_DEVICE=cpu
runs the size tests' logic on the CPU ops with small sizes (a check of the tests themselves); the stream
and graph tests need CUDA and skip there.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.kernels import HAS_CUDA_KERNELS
from sparse_engine.testing import random_weight, references, rounding_bound

DEV = os.environ.get("SPARSE_ENGINE_LIMITS_TEST_DEVICE", "cuda")
ON_GPU = DEV == "cuda"
RAW = torch.ops.sparse_engine
HALF = [torch.float16, torch.bfloat16]
DTYPES = [torch.float32, torch.float64, *HALF]
REL = {torch.float32: 2e-5, torch.float64: 1e-12}  # times sum |w x| (the CUDA tolerance of tests/ops/conftest.py's assert_close_to)
MAX_GRID_Y = 65535
WIDE = {torch.float32: 4, torch.float64: 2, torch.float16: 8, torch.bfloat16: 8}  # elements per 16-byte load

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(ON_GPU and not HAS_CUDA_KERNELS,
                       reason="sparse_engine._C was built without the CUDA kernels"),
]
cuda_only = pytest.mark.skipif(not ON_GPU, reason="needs CUDA (streams, graphs, the caching allocator)")


def _tiles_past_grid_y(dtype, vector: bool) -> int:
    """A batch whose row kernels need 65,537 tiles of 32 lanes: 16-byte loads (B a multiple of the
    vector width) or scalar loads (B odd). Small on the CPU."""
    if not ON_GPU:
        return 8 * 33 if vector else 67
    return WIDE[dtype] * 32 * (MAX_GRID_Y + 2) if vector else 32 * (MAX_GRID_Y + 1) + 1


def tolerance(ref: torch.Tensor, bound: torch.Tensor, terms: int, dtype) -> torch.Tensor:
    """REL[dtype] * bound in float32/float64 (bound = sum of |terms|); float16/bfloat16: float32
    accumulation and one rounding to storage (testing.rounding_bound)."""
    return REL[dtype] * bound + 1e-300 if dtype not in HALF else rounding_bound(ref, bound, terms, dtype)


def _check(out: torch.Tensor, ref, dtype, what: str) -> None:
    """|out - ref| within tolerance, and no NaN."""
    assert out.dtype == dtype and out.device.type == DEV, what
    out64 = out.detach().double().cpu()
    err = (out64 - ref.value).abs()
    bad = ~(err <= tolerance(ref.value, ref.abs_value, ref.terms, dtype))
    assert not bool(bad.any()), f"{what}: {int(bad.sum())} of {bad.numel()} off, worst {float(err.nan_to_num(1e300).max()):.3g}"


def _randn(*shape, dtype, seed, device=DEV):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)


# ------------------------------------------------------------------ tiles beyond grid.y
@pytest.mark.parametrize("vector", [True, False], ids=["vector", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_tiles_beyond_the_grid_y_limit(dtype, vector):
    B = _tiles_past_grid_y(dtype, vector)
    W = random_weight(5, 7, 0.5, seed=1, dtype=dtype)
    X = _randn(7, B, dtype=dtype, seed=2)
    G = _randn(5, B, dtype=dtype, seed=3)
    refs = references(W, X.cpu(), G.cpu())
    Wd = W.to(DEV)
    _check(se.ops.spmm(Wd, X), refs["spmm"], dtype, "spmm")
    _check(se.ops.spmm_t(Wd, G), refs["spmm_t"], dtype, "spmm_t")
    _check(se.ops.sddmm(Wd, G, X), refs["sddmm"], dtype, "sddmm")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fused_lstm_step_tiles_beyond_the_grid_y_limit(dtype):
    """The fused forward's grid.y loop over tiles and its backward's gather, against the CPU ops."""
    H, B = 3, _tiles_past_grid_y(dtype, vector=False)
    W = random_weight(4 * H, H, 0.6, seed=4, dtype=dtype)
    gx, h, c = (_randn(r, B, dtype=dtype, seed=s, device="cpu") for r, s in ((4 * H, 5), (H, 6), (H, 7)))
    dh, dc = _randn(H, B, dtype=dtype, seed=8, device="cpu"), _randn(H, B, dtype=dtype, seed=9, device="cpu")
    want = RAW.lstm_step(*W.index, W.values, gx, h, c)
    want_b = RAW.lstm_step_backward(*W.index, W.values, want[2], c, want[1], dh, dc)
    Wd = W.to(DEV)
    got = RAW.lstm_step(*Wd.index, Wd.values, gx.to(DEV), h.to(DEV), c.to(DEV))
    got_b = RAW.lstm_step_backward(*Wd.index, Wd.values, got[2], c.to(DEV), got[1], dh.to(DEV), dc.to(DEV))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    for a, b in zip([*got, *got_b], [*want, *want_b]):
        if a is not None and a.numel():
            torch.testing.assert_close(a.cpu(), b, **tol)


# ------------------------------------------------------------------ 64-bit offsets
def _rows_times_batch():
    """(rows, B) with rows * B > 2^31 on the GPU."""
    return (65_537, 32_768) if ON_GPU else (37, 9)


@pytest.mark.slow
def test_rows_times_batch_beyond_2_31():
    """Outputs (spmm), sources (spmm_t's G) and rows of G (sddmm) past 2^31 elements: 8.6 GB each in
    float32; checked on the last rows, where the offsets need 64 bits, and the first."""
    rows, B = _rows_times_batch()
    cols = 64
    # three entries per row, columns (7i, 7i + 13, 7i + 26) mod 64: distinct in a row
    i = torch.arange(rows, device=DEV).repeat_interleave(3)
    col_idx = ((i * 7 + torch.tensor([0, 13, 26], device=DEV).repeat(rows)) % cols).to(torch.int32)
    row_ptr = torch.arange(0, 3 * rows + 1, 3, device=DEV)
    values = _randn(3 * rows, dtype=torch.float32, seed=11)
    csc = RAW.transpose_index(row_ptr, col_idx, cols)
    index = (row_ptr, col_idx, *csc)
    sample = torch.cat([torch.arange(4), torch.arange(rows - 4, rows)]).to(DEV)
    # rows `sample` of W as a dense float64 matrix
    Ws = torch.zeros(len(sample), cols, dtype=torch.float64, device=DEV)
    for j in range(3):
        Ws[torch.arange(len(sample), device=DEV), col_idx[3 * sample + j].long()] = values[3 * sample + j].double()
    X = _randn(cols, B, dtype=torch.float32, seed=12)
    Y = RAW.spmm(*index, values, X)
    assert Y.shape == (rows, B)
    torch.testing.assert_close(Y[sample].double(), Ws @ X.double(), rtol=1e-5, atol=1e-5)
    del Y
    G = torch.zeros(rows, B, dtype=torch.float32, device=DEV)
    G[sample] = _randn(len(sample), B, dtype=torch.float32, seed=13)  # the other rows add nothing
    Z = RAW.spmm_t(*index, values, G, None)
    torch.testing.assert_close(Z.double(), Ws.T @ G[sample].double(), rtol=1e-5, atol=1e-5)
    S = RAW.sddmm(*index, G, X)
    k = (3 * sample[:, None] + torch.arange(3, device=DEV)).reshape(-1)
    products = G[sample].double().repeat_interleave(3, 0) * X[col_idx[k].long()].double()
    # a float32 dot product of B = 32,768 terms: its error scales with the sum of |terms| (the H200 run
    # gave 6e-4 on values near 20, 3e-8 of that sum), not with the value; a wrong offset is off by ~100
    want = products.sum(1)
    err = (S[k].double() - want).abs()
    assert bool((err <= tolerance(want, products.abs().sum(1), B, torch.float32)).all()), \
        f"sddmm past 2^31: worst error {float(err.max()):.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_nnz_beyond_2_31(dtype):
    """A full 65,537 x 32,768 pattern: 2,147,516,416 entries, so row_ptr and the positions into the
    values pass 2^31 (spmm and sddmm; spmm_t's csc_perm holds int32 positions, and the checks refuse
    its transposed index past 2^31). About 26 GB; checked on the last rows."""
    rows, cols = (65_537, 32_768) if ON_GPU else (9, 16)
    nnz, B = rows * cols, 2
    row_ptr = torch.arange(0, nnz + 1, cols, device=DEV)
    col_idx = torch.arange(cols, dtype=torch.int32, device=DEV).repeat(rows)
    gen = torch.Generator(device=DEV).manual_seed(21)
    values = torch.rand(nnz, generator=gen, device=DEV, dtype=torch.float32).sub_(0.5).to(dtype)
    no_csc = (torch.zeros(1, dtype=torch.int64, device=DEV).expand(cols + 1),
              torch.empty(0, dtype=torch.int32, device=DEV), torch.empty(0, dtype=torch.int32, device=DEV))
    index = (row_ptr, col_idx, *no_csc)
    X = _randn(cols, B, dtype=dtype, seed=22)
    G = _randn(rows, B, dtype=dtype, seed=23)
    last = values[(rows - 3) * cols:].view(3, cols).double()
    Y = RAW.spmm(*index, values, X)
    ref = last @ X.double()
    bound = last.abs() @ X.double().abs()
    err = (Y[rows - 3:].double() - ref).abs()
    u = 2.0 ** -24 if dtype == torch.float32 else 2.0 ** -8
    assert bool((err <= u * ref.abs() + 2 * (cols + 1) * 2.0 ** -24 * bound + 1e-30).all()), float(err.max())
    del Y
    S = RAW.sddmm(*index, G, X)
    want = (G[rows - 3:].double()[:, None, :] * X.double()[None]).sum(2).reshape(-1)
    got = S[(rows - 3) * cols:].double()
    torch.testing.assert_close(got, want, rtol=u * 4, atol=u * 4)


# ------------------------------------------------------------------ a non-default stream
@cuda_only
def test_ops_run_on_the_current_stream_not_the_default_one():
    """With the default stream busy (torch.cuda._sleep), every op on a side stream completes while the
    default stream still runs: it launched, copied and scanned only on the current stream."""
    W = random_weight(300, 257, 0.1, seed=31, dtype=torch.float32).to(DEV)
    X, G = _randn(257, 20, dtype=torch.float32, seed=32), _randn(300, 20, dtype=torch.float32, seed=33)
    H = 16
    Wh = random_weight(4 * H, H, 0.3, seed=34, dtype=torch.float32).to(DEV)
    gx, h, c = _randn(4 * H, 20, dtype=torch.float32, seed=35), _randn(H, 20, dtype=torch.float32, seed=36), \
        _randn(H, 20, dtype=torch.float32, seed=37)
    calls = {
        "spmm": lambda: se.ops.spmm(W, X),
        "spmm_t": lambda: se.ops.spmm_t(W, G),
        "sddmm": lambda: se.ops.sddmm(W, G, X),
        "transpose_index": lambda: RAW.transpose_index(W.row_ptr, W.col_idx, 257)[2],
        "lstm_step": lambda: RAW.lstm_step(*Wh.index, Wh.values, gx, h, c)[0],
    }
    want = {name: f() for name, f in calls.items()}  # also checks every index, so no scan below
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    default = torch.cuda.default_stream()
    for name, f in calls.items():
        torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU cycles on the default stream
        with torch.cuda.stream(side):
            got = f()
        side.synchronize()
        assert not default.query(), f"{name} waited for the default stream"
        default.synchronize()
        assert torch.equal(got, want[name]), name


# ------------------------------------------------------------------ CUDA graph of a training step
@cuda_only
def test_training_step_captured_in_a_cuda_graph_equals_eager_steps():
    """SparseLSTM + linear head, MSE loss, SGD: three warm-up steps, one captured step replayed three
    times on new data, against the same six steps run eagerly. The index checks happen in the warm-up
    (nothing may sync during the capture)."""
    torch.manual_seed(41)
    model = torch.nn.ModuleDict({"rnn": se.nn.SparseLSTM(16, 64, density=0.2), "head": torch.nn.Linear(64, 8)})
    model = model.to(DEV)
    eager = copy.deepcopy(model)
    g = torch.Generator().manual_seed(42)
    data = [(torch.randn(12, 5, 16, generator=g).to(DEV), torch.randn(12, 5, 8, generator=g).to(DEV)) for _ in range(6)]

    def step(m, opt, x, y):
        out, _ = m["rnn"](x)
        loss = torch.nn.functional.mse_loss(m["head"](out), y)
        loss.backward()
        opt.step()
        return loss

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    static_x, static_y = data[0][0].clone(), data[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for x, y in data[:3]:
            static_x.copy_(x), static_y.copy_(y)
            opt.zero_grad(set_to_none=True)
            step(model, opt, static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = step(model, opt, static_x, static_y)
    losses = []
    for x, y in data[3:]:
        static_x.copy_(x), static_y.copy_(y)
        graph.replay()
        losses.append(static_loss.item())
    eager_opt = torch.optim.SGD(eager.parameters(), lr=0.1)
    eager_losses = []
    for x, y in data:
        eager_opt.zero_grad(set_to_none=True)
        eager_losses.append(step(eager, eager_opt, x, y).item())
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses[3:]), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda s: f"{name}: {s}")
