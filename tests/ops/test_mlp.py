"""The mlp ops (csrc/cpu/mlp_cpu.cpp), SET-MLP's fused CPU passes: relu_dropout (relu and dropout
in place, its mask a documented hash of the seed and position) against its definition, through its
autograd Function, and the same on 1 and 2 threads; sgd_step against torch's ops. The SET-MLP
recipe built on them: tests/training/test_set_mlp.py."""
import math

import numpy as np
import pytest
import torch

from sparse_engine.nn.mlp import _ReluDropout


@pytest.mark.parametrize("inplace", [False, True])
def test_fused_relu_dropout_against_its_definition(inplace):
    torch.manual_seed(0)
    z = torch.randn(300, 40, dtype=torch.float64, requires_grad=True)
    out = _ReluDropout.apply(z * 1 if inplace else z, 0.3, inplace)  # in place only on a non-leaf
    kept = out.detach() != 0
    torch.testing.assert_close(out[kept], torch.relu(z)[kept] / 0.7)
    positive = z.detach() > 0
    assert not kept[~positive].any()
    assert abs(float((~kept[positive]).double().mean()) - 0.3) < 0.02  # dropped fraction of live units
    g = torch.randn(300, 40, dtype=torch.float64)
    out.backward(g)
    torch.testing.assert_close(z.grad, torch.where(kept, g / 0.7, torch.zeros_like(g)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_relu_dropout_kernel(dtype):
    """Exactly relu(z) * keep / (1 - p); the kept fraction is 1 - p, the same for each seed and
    column (no pattern along the position counter); the mask is a function of the seed alone;
    NaN stays NaN."""
    p, n = 0.2, 1_000_000
    z = torch.rand(n // 40, 40).to(dtype) + 0.5  # all positive: the mask shows in full
    masks = []
    for seed in (0, 1, -5, 2**62):
        out = z.clone()
        torch.ops.sparse_engine.relu_dropout(out, p, seed)
        kept = out != 0
        wide = torch.promote_types(dtype, torch.float32)  # the kernel computes half in float
        assert torch.equal(out[kept], (z[kept].to(wide) * (1 / (1 - p))).to(dtype))
        assert abs(float(kept.double().mean()) - (1 - p)) < 0.003
        assert float((kept[:, 0].double().mean() - (1 - p)).abs()) < 0.02
        masks.append(kept)
    assert all(not torch.equal(masks[0], m) for m in masks[1:])
    again = z.clone()
    torch.ops.sparse_engine.relu_dropout(again, p, 0)
    assert torch.equal(again != 0, masks[0])
    unscaled = z.clone()
    torch.ops.sparse_engine.relu_dropout(unscaled, p, 0, 1.0)  # faithful mode's dropout: the same mask, no scale
    assert torch.equal(unscaled != 0, masks[0]) and torch.equal(unscaled[masks[0]], z[masks[0]])
    neg = torch.tensor([-1.0, float("nan"), 0.0, 2.0], dtype=dtype)
    torch.ops.sparse_engine.relu_dropout(neg, 0.0, 3)
    assert neg[0] == 0 and neg[1].isnan() and neg[2] == 0 and neg[3] == 2
    z = torch.rand(10, 10) + 1
    torch.ops.sparse_engine.relu_dropout(z, 0.0, 1)
    assert (z > 1).all()  # p = 0 keeps everything


def test_relu_dropout_mask_is_the_documented_hash():
    """keep = top 24 bits of mix64(mix64(seed) + i * golden) >= ceil(p 2^24) (csrc/cpu/mlp_cpu.cpp),
    computed here in numpy: the masks of a seed stay the same across versions of the kernel."""
    def mix64(x):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    with np.errstate(over="ignore"):
        for seed, p, n in [(0, 0.2, 1000), (2**62, 0.5, 777), (12345, 0.3, 70_000)]:
            r = mix64(mix64(np.uint64(seed)) + np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
            keep = (r >> np.uint64(40)) >= np.uint64(math.ceil(p * 2**24))
            z = torch.ones(n)
            torch.ops.sparse_engine.relu_dropout(z, p, seed)
            assert np.array_equal(z.numpy() != 0, keep)


def test_sgd_step_kernel_against_torch_ops():
    g = torch.Generator().manual_seed(2)
    param, buf, grad = (torch.randn(10_000, dtype=torch.float64, generator=g) for _ in range(3))
    p, b = param.clone(), buf.clone()
    torch.ops.sparse_engine.sgd_step(p, b, grad, 0.05, 0.9, 2e-4)
    b_ref = 0.9 * buf + grad
    torch.testing.assert_close(b, b_ref, rtol=1e-14, atol=1e-15)  # one rounding or two (fma)
    torch.testing.assert_close(p, param * (1 - 2e-4) - 0.05 * b_ref, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="one shape"):
        torch.ops.sparse_engine.sgd_step(p, b[:5], grad, 0.05, 0.9, 2e-4)


TWO_BYTES = [torch.float16, torch.bfloat16]
# float16 goes through units of 64 floats (csrc/cpu/mlp_cpu.cpp, update_block): sizes below, at and
# past a unit and past a block of 16,384
SIZES = [1, 7, 63, 64, 65, 1000, 16384 + 77]


@pytest.mark.parametrize("dtype", TWO_BYTES)
@pytest.mark.parametrize("n", SIZES)
def test_two_byte_relu_dropout_is_the_float32_result_rounded_once(dtype, n):
    """The 2-byte kernel computes in float and rounds once: its bits are the float32 kernel's output
    on the same numbers, converted by torch; NaN stays NaN."""
    g = torch.Generator().manual_seed(n)
    z = (torch.randn(n, generator=g) * 3).to(dtype)
    if n > 10:
        z[3] = float("nan")
    for scale in (None, 1.0, 1.7):
        out, ref = z.clone(), z.float()
        torch.ops.sparse_engine.relu_dropout(out, 0.3, 99, scale)
        torch.ops.sparse_engine.relu_dropout(ref, 0.3, 99, scale)
        nan = ref.isnan()
        assert torch.equal(out.isnan(), nan)
        assert torch.equal(out[~nan], ref.to(dtype)[~nan]), f"scale {scale}"


@pytest.mark.parametrize("dtype", TWO_BYTES)
@pytest.mark.parametrize("n", SIZES)
def test_two_byte_sgd_step_rounds_the_moment_then_the_step(dtype, n):
    """buf <- round(m buf + grad); param <- round(keep param - lr buf) with the rounded buf, each in
    float: the expected values from float64 (the constants as float32) with those two roundings,
    allowed one unit in the last place of the 2-byte type for a fused multiply-add in float (almost
    every entry is exact)."""
    g = torch.Generator().manual_seed(n + 1)
    param, buf, grad = ((torch.randn(n, generator=g) * 2).to(dtype) for _ in range(3))
    p, b = param.clone(), buf.clone()
    torch.ops.sparse_engine.sgd_step(p, b, grad, 0.05, 0.9, 2e-4)
    m, keep, lr = (float(torch.tensor(c, dtype=torch.float32)) for c in (0.9, 1 - 2e-4, 0.05))  # as the kernel has them
    b_ref = (m * buf.double() + grad.double()).to(dtype)
    p_ref = (keep * param.double() - lr * b_ref.double()).to(dtype)
    for got, want in ((b, b_ref), (p, p_ref)):
        ulp = torch.finfo(dtype).eps * want.double().abs().clamp_min(torch.finfo(dtype).tiny)
        assert ((got.double() - want.double()).abs() <= ulp).all()
        assert float((got == want).double().mean()) >= 0.98


# --------------------------------------------------------------------------------- 1 vs 2 threads
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_mlp_kernels_on_1_and_2_threads(dtype, same_on_1_and_2_threads):
    g = torch.Generator().manual_seed(5)
    # above both passes' parallel thresholds (csrc/cpu/mlp_cpu.cpp: 2^18 and 2^19 elements), so that
    # two threads do split them
    z = torch.randn(7000, 40, generator=g).to(dtype)
    param, buf, grad = (torch.randn(600_000, generator=g).to(dtype) for _ in range(3))

    def relu_dropout():
        out = z.clone()
        torch.ops.sparse_engine.relu_dropout(out, 0.2, 12345)
        return out

    def sgd_step():
        p, b = param.clone(), buf.clone()
        torch.ops.sparse_engine.sgd_step(p, b, grad, 0.05, 0.9, 2e-4)
        return p, b

    same_on_1_and_2_threads(relu_dropout)
    same_on_1_and_2_threads(sgd_step)
