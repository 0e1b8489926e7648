"""float16 / bfloat16 SparseWeight, SparseLinear and the recurrent modules: conversion (the same
Parameter, new storage), construction in the dtype, state dict and scipy round trips, SparseLinear
within float32 accumulation plus its roundings of the float64 reference, and the LSTM's composed path
in bfloat16. (The ops in float16/bfloat16: tests/ops/test_spmm.py.)"""
import pytest
import torch

from sparse_engine import SparseWeight
from sparse_engine.nn import SparseLinear, SparseLSTM
from sparse_engine.testing import random_weight, rounding_bound

HALF = [torch.float16, torch.bfloat16]


def stored(t, dtype):
    """The float64 value of what a tensor holds once stored in ``dtype``."""
    return t.detach().to(dtype).double()


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
    b = rounding_bound(ref, stored(x, dtype).abs() @ D.abs().T, 20, dtype)
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


# ------------------------------------------------------------------------------ recurrent modules
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
