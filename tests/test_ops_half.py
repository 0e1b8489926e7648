"""float16 / bfloat16 storage with float32 accumulation in spmm, spmm_t and sddmm (CPU).

References are float64 dense math on the stored (already rounded) inputs. The bound is what
float32 accumulation plus one rounding of the result to the storage type allows:
``|out - ref| <= u |ref| + 2 (n + 1) u32 sum|terms| + (half the smallest subnormal step)``
with u the storage type's unit roundoff (2^-11 float16, 2^-8 bfloat16), u32 = 2^-24 and n the
number of terms. A float16/bfloat16 accumulator (error ~ n u sum|terms|) does not fit in it.
"""
import pytest
import torch

from sparse_engine import SparseWeight, ops
from sparse_engine.nn import SparseLinear, SparseLSTM
from sparse_engine.testing import (AWKWARD_SHAPES, copy_weight, dense, power_law_weight, random_weight, references,
                                   with_layout)

HALF = [torch.float16, torch.bfloat16]
U32 = 2.0 ** -24

# 1 and 3: the narrow tail; 16/32/64: each compile-time block of a 2-byte type; 67: a block
# plus a tail; 300: several blocks and more than one sddmm batch tile (256 two-byte values)
BATCHES = [1, 3, 16, 67, 300]


def bound(ref, abs_ref, terms, dtype):
    fi = torch.finfo(dtype)
    u = fi.eps / 2
    return u * ref.abs() + 2 * (max(terms, 1) + 1) * U32 * abs_ref + fi.smallest_normal * fi.eps / 2


def assert_within(out, ref, abs_ref, terms, dtype):
    assert out.dtype == dtype and out.shape == ref.shape
    err = (out.double() - ref).abs()
    b = bound(ref, abs_ref, terms, dtype)
    assert bool((err <= b).all()), f"max error/bound {float((err / b).max()):.3g}"


def stored(t, dtype):
    """The float64 value of what a tensor holds once stored in ``dtype``."""
    return t.detach().to(dtype).double()


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("B", BATCHES)
def test_kernels_match_float64_reference(shape, B, dtype, rng):
    rows, cols = shape.rows, shape.cols
    W = random_weight(*shape, generator=rng).to(dtype)
    assert W.values.dtype == dtype and W.col_idx.dtype == torch.int32 and W.row_ptr.dtype == torch.int64
    X = torch.randn(cols, B, generator=rng).to(dtype)
    G = torch.randn(rows, B, generator=rng).to(dtype)
    refs = references(W, X, G)  # float64 math on the stored (rounded) values
    assert_within(ops.spmm(W, X), *refs["spmm"], dtype)
    assert_within(ops.spmm_t(W, G), *refs["spmm_t"], dtype)
    assert_within(ops.sddmm(W, G, X), *refs["sddmm"], dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_non_contiguous_inputs(dtype, rng):
    W = random_weight(40, 30, 0.2, empty_rows=3, generator=rng).to(dtype)
    D = dense(W)
    X = with_layout(torch.randn(30, 9, generator=rng).to(dtype), "transposed")
    G = with_layout(torch.randn(40, 9, generator=rng).to(dtype), "strided")
    assert not X.is_contiguous() and not G.is_contiguous()
    Xd, Gd = X.double(), G.double()
    assert_within(ops.spmm(W, X), D @ Xd, D.abs() @ Xd.abs(), 40, dtype)
    assert_within(ops.spmm_t(W, G), D.T @ Gd, D.abs().T @ Gd.abs(), 40, dtype)
    row, col, _ = W.coo()
    assert_within(ops.sddmm(W, G, X), (Gd @ Xd.T)[row, col], (Gd.abs() @ Xd.abs().T)[row, col], 9, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_power_law_rows_large(dtype, rng):
    rows, cols, B = 1500, 1200, 40
    W = power_law_weight(rows, cols, generator=rng).to(dtype)
    X = torch.randn(cols, B, generator=rng).to(dtype)
    G = torch.randn(rows, B, generator=rng).to(dtype)
    D, Xd, Gd = dense(W), X.double(), G.double()
    assert_within(ops.spmm(W, X), D @ Xd, D.abs() @ Xd.abs(), cols, dtype)
    assert_within(ops.spmm_t(W, G), D.T @ Gd, D.abs().T @ Gd.abs(), rows, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_accumulation_is_float32_and_rounded_once(dtype):
    """n = 3001 products 1 * 1: a float16 running sum stops at 2048 (2048 + 1 rounds back to
    2048), a bfloat16 one at 256; float32 holds 3001 exactly, rounded once to the storage type.
    The n entries are one row (spmm), one column (spmm_t) and one batch (sddmm)."""
    n = 3001
    assert torch.tensor(2048.0, dtype=torch.float16) + 1 == 2048  # what a half accumulator would do
    assert torch.tensor(256.0, dtype=torch.bfloat16) + 1 == 256
    expected = torch.tensor(float(n), dtype=torch.float64).to(dtype)  # exact sum, one rounding
    row = SparseWeight(torch.tensor([0, n, n]), torch.arange(n, dtype=torch.int32), torch.ones(n, dtype=dtype), (2, n))
    y = ops.spmm(row, torch.ones(n, 5, dtype=dtype))
    assert torch.equal(y[0], expected.expand(5)) and torch.equal(y[1], torch.zeros(5, dtype=dtype))
    col = SparseWeight(torch.arange(n + 1), torch.zeros(n, dtype=torch.int32), torch.ones(n, dtype=dtype), (n, 2))
    z = ops.spmm_t(col, torch.ones(n, 70, dtype=dtype))
    assert torch.equal(z[0], expected.expand(70)) and torch.equal(z[1], torch.zeros(70, dtype=dtype))
    one = SparseWeight(torch.tensor([0, 1]), torch.tensor([0], dtype=torch.int32), torch.ones(1, dtype=dtype), (1, 1))
    s = ops.sddmm(one, torch.ones(1, n, dtype=dtype), torch.ones(1, n, dtype=dtype))  # several batch tiles
    assert torch.equal(s, expected.reshape(1))


# ---------------------------------------------------------------------- gradients
def _grad_case(op, dtype, rng):
    """Gradients of sum(out * R) for one op, in ``dtype`` and in float32 on the same stored
    inputs, plus float64 sums of |terms| for the bound."""
    W = random_weight(60, 45, 0.15, empty_rows=4, generator=rng)
    B = 13
    rows, cols = W.shape
    A = torch.randn(cols if op == "spmm" else rows, B, generator=rng)  # X (spmm, sddmm) or G (spmm_t)
    C = torch.randn(rows, B, generator=rng)  # G for sddmm
    if op == "sddmm":
        A = torch.randn(cols, B, generator=rng)
    out_len = {"spmm": (rows, B), "spmm_t": (cols, B), "sddmm": (W.nnz,)}[op]
    R = torch.randn(*out_len, generator=rng).to(dtype)  # upstream gradient, stored in dtype

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

    D = stored(W.to_dense(), dtype).abs()
    Ra, Aa, Ca = R.double().abs(), stored(A, dtype).abs(), stored(C, dtype).abs()
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


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("op", ["spmm", "spmm_t", "sddmm"])
def test_gradients_match_float32_autograd(op, dtype, rng):
    half, single, abs_refs, terms = _grad_case(op, dtype, rng)
    for h, s, a, n in zip(half, single, abs_refs, terms):
        assert h.dtype == dtype and s.dtype == torch.float32 and h.shape == s.shape
        # both are float32 sums of the same products: the float32 result's own error is
        # within the same accumulation term, hence the factor 2 on it
        b = bound(s.double(), 2 * a, n, dtype)
        err = (h.double() - s.double()).abs()
        assert bool((err <= b).all()), f"{op}: max error/bound {float((err / b).max()):.3g}"


# ------------------------------------------------------------------------ compile
@pytest.mark.parametrize("dtype", HALF)
def test_torch_compile_fullgraph_forward_and_backward(dtype, rng):
    W = random_weight(50, 40, 0.2, empty_rows=4, generator=rng).to(dtype)

    def f(v, X, G):
        idx = W.index
        sp = torch.ops.sparse_engine
        y = sp.spmm(*idx, v, X)
        z = sp.spmm_t(*idx, v, G)
        s = sp.sddmm(*idx, G, X)
        return (y.float() ** 2).sum() + (z.float() ** 2).sum() + (s.float() * v.float()).sum()

    X = torch.randn(40, 7, generator=rng).to(dtype)
    G = torch.randn(50, 7, generator=rng).to(dtype)
    v1 = W.values.detach().clone().requires_grad_()
    v2 = v1.detach().clone().requires_grad_()
    eager = f(v1, X, G)
    eager.backward()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(v2, X, G)
    compiled.backward()
    assert v2.grad.dtype == dtype
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)  # the same kernels, deterministic
    torch.testing.assert_close(v2.grad, v1.grad, rtol=0, atol=0)


# ------------------------------------------------------------------ modules, dtypes
@pytest.mark.parametrize("dtype", HALF)
def test_sparse_weight_and_linear_convert(dtype, rng):
    W = random_weight(30, 20, 0.3, dtype=torch.float32, generator=rng)
    param = W.values
    values32 = W.values.detach().clone()
    W.to(dtype)
    assert W.values is param and W.values.dtype == dtype  # same Parameter, new storage
    assert all(t.dtype == d for t, d in zip(W.index, (torch.int64, torch.int32, torch.int64, torch.int32, torch.int32)))
    assert torch.equal(W.values.detach(), values32.to(dtype))
    assert "dtype=" + str(dtype) in repr(W)

    lin = SparseLinear(20, 30, density=0.3)
    x = torch.randn(4, 20, generator=rng)
    y32 = lin(x)
    lin = lin.half() if dtype == torch.float16 else lin.to(dtype)
    assert lin.weight.values.dtype == dtype and lin.bias.dtype == dtype
    assert lin.weight.col_idx.dtype == torch.int32
    y = lin(x.to(dtype))
    assert y.dtype == dtype
    D = stored(lin.weight.to_dense(), dtype)
    ref = stored(x, dtype) @ D.T
    exact = ref + lin.bias.double()
    # the product is rounded once, then the bias add rounds again
    b = bound(ref, stored(x, dtype).abs() @ D.abs().T, 20, dtype)
    b = b + torch.finfo(dtype).eps / 2 * (ref.abs() + b + lin.bias.double().abs())
    assert bool(((y.double() - exact).abs() <= b).all())
    torch.testing.assert_close(y.float(), y32, atol=0.1, rtol=0.05)  # same layer, coarse sanity
    y.float().sum().backward()
    assert lin.weight.values.grad.dtype == dtype and lin.bias.grad.dtype == dtype
    built = SparseLinear(20, 30, density=0.3, dtype=dtype)  # built in the dtype directly
    assert built.weight.values.dtype == dtype and built.bias.dtype == dtype
    assert built(x.to(dtype)).dtype == dtype


@pytest.mark.parametrize("dtype", HALF)
def test_constructor_and_round_trips(dtype, rng):
    W = SparseWeight.random(12, 9, 0.4, generator=rng, dtype=dtype)
    assert W.values.dtype == dtype
    back = SparseWeight.from_scipy(W.to_scipy(), dtype=dtype)
    assert torch.equal(back.values.detach(), W.values.detach())
    state = W.state_dict()
    W2 = SparseWeight.random(12, 9, 0.1, generator=rng, dtype=dtype)
    W2.load_state_dict(state)
    assert torch.equal(W2.values.detach(), W.values.detach()) and W2.values.dtype == dtype


def test_mixed_dtypes_raise_clear_errors(rng):
    W = random_weight(4, 6, 0.5, generator=rng).to(torch.bfloat16)
    with pytest.raises(TypeError, match="X must have dtype torch.bfloat16 like the weight values, got torch.float16"):
        ops.spmm(W, torch.randn(6, 2, generator=rng).half())
    with pytest.raises(TypeError, match="G must have dtype torch.bfloat16 like the weight values, got torch.float32"):
        ops.spmm_t(W, torch.randn(4, 2, generator=rng))
    sp = torch.ops.sparse_engine
    with pytest.raises(TypeError, match="X must have dtype BFloat16, got Half"):
        sp.spmm(*W.index, W.values, torch.randn(6, 2, generator=rng).half())
    with pytest.raises(TypeError, match="X must have dtype Half, got BFloat16"):
        sp.sddmm(*W.index, torch.randn(4, 2, generator=rng).half(), torch.randn(6, 2, generator=rng).bfloat16())
    with pytest.raises(TypeError, match=r"values must be float32 or float64 \(or float16/bfloat16\)"):
        SparseWeight(W.row_ptr, W.col_idx, W.values.detach().to(torch.int16), W.shape)


# -------------------------------------------------------------- recurrent modules
def test_half_lstm_takes_composed_path_or_fails_clearly(rng):
    """The fused RNN step kernels are float32/float64 only. In bfloat16 the composed path
    (spmm + torch elementwise ops) runs and agrees with float32; the fused path must either
    be skipped for this dtype or raise a TypeError that names the dtypes it takes."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    lstm = SparseLSTM(12, 16, density=0.3)
    x = torch.randn(5, 3, 12, generator=rng)  # (T, B, features)
    y32, _ = lstm(x)
    lstm = lstm.to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    try:
        y_default, _ = lstm(xb)
    except TypeError as e:
        assert "float32 or float64" in str(e)
    else:
        assert y_default.dtype == torch.bfloat16
    lstm.fused = False
    y, _ = lstm(xb)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y32, atol=0.05, rtol=0.05)
    y.float().sum().backward()
    assert lstm.weight_hh_l0.values.grad.dtype == torch.bfloat16
