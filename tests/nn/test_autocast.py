"""torch.autocast: SparseLinear runs in the autocast dtype like torch.mm, with gradients reaching the
float32 values; the sparse recurrent layers run in their parameters' dtype (inputs cast, autocast off
inside) and give exactly the non-autocast result; errors outside autocast. (The ops under autocast:
tests/ops/test_spmm.py.)"""
import pytest
import torch
from torch import nn

from sparse_engine import SparseWeight, ops
from sparse_engine.kernels import HAS_CUDA_KERNELS
from sparse_engine.nn import SparseCTRNN, SparseGRU, SparseLinear, SparseLSTM, SparseLSTMCell, SparseRNN

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_CUDA_KERNELS), reason="needs a CUDA device and the CUDA kernels"))]



@pytest.mark.parametrize("device", DEVICES)
def test_sparse_linear_under_autocast_matches_float32_within_bfloat16_rounding(device, rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), SparseLinear(64, 10, density=0.3)).to(device)
    x = torch.randn(8, 16, generator=rng).to(device)
    ref = model(x)
    with torch.autocast(device, dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() <= 2 ** -6 * ref.abs().max() + 1e-3
    y.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.grad.isfinite().all()
               for p in model.parameters())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [SparseLSTM, SparseGRU, SparseRNN, SparseCTRNN])
def test_recurrent_layers_run_in_their_parameters_dtype_under_autocast(device, cls, rng):
    torch.manual_seed(1)
    layer = cls(12, 24, batch_first=True, density=0.3).to(device)
    x = torch.randn(3, 7, 12, generator=rng).to(device).to(torch.bfloat16)  # as a bf16 layer would hand it on
    out_ref, _ = layer(x.float())
    grads_ref = torch.autograd.grad(out_ref.square().sum(), list(layer.parameters()))
    with torch.autocast(device, dtype=torch.bfloat16):
        out, _ = layer(x)
        grads = torch.autograd.grad(out.square().sum(), list(layer.parameters()))  # backward inside autocast
    assert out.dtype == torch.float32 and torch.equal(out, out_ref)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_ref))


def test_cells_and_errors_outside_autocast(rng):
    cell = SparseLSTMCell(5, 9, density=0.5)
    x = torch.randn(4, 5, generator=rng)
    h_ref, c_ref = cell(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, c = cell(x.to(torch.bfloat16))
    assert torch.equal(h, cell(x.to(torch.bfloat16).float())[0]) and h.dtype == torch.float32
    assert h_ref.dtype == torch.float32
    with pytest.raises(TypeError, match="input must have dtype"):
        cell(x.to(torch.bfloat16))  # no autocast: a dtype mismatch is still an error
    W = SparseWeight.random(5, 5, 0.5, generator=rng)
    with pytest.raises(TypeError, match="X must have dtype"):
        ops.spmm(W, torch.randn(5, 2, generator=rng, dtype=torch.bfloat16))


@pytest.mark.parametrize("faithful", [False, True])
def test_sparse_mlp_trains_under_autocast_within_bfloat16_rounding(faithful):
    """SET-MLP with bfloat16 activations (docs/set_mlp.md): the same step (same dropout masks: the
    hash seeds come from torch's generator) as in float32, within bfloat16's rounding; the gradients
    reach the float32 values and biases."""
    from sparse_engine.nn import SparseMLP

    torch.manual_seed(2)
    model = SparseMLP((50, 64, 64, 10), epsilon=5, faithful=faithful)
    x, y = torch.rand(16, 50), torch.randint(10, (16,))
    runs = []
    for half in (False, True):
        torch.manual_seed(3)  # the dropout masks' seeds
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            logits = model(x)
        model.loss(logits.float(), y).backward()
        runs.append((logits, [p.grad.clone() for p in model.parameters()]))
    (ref, ref_grads), (out, grads) = runs
    assert out.dtype == torch.bfloat16 and ref.dtype == torch.float32
    # three layers, each rounding its inputs and values to 8 bits: a few 2^-8 of the output's scale
    assert (out.float() - ref).abs().max() <= 2 ** -5 * ref.abs().max()
    # in norm: a pre-activation near 0 may change sign under the rounding, which moves that unit's
    # gradient as a whole (measured 0.2-0.8%, and 5% in faithful mode, whose delta passes dropped units)
    bound = 2 ** -3 if faithful else 2 ** -5
    for g, r in zip(grads, ref_grads):
        assert g.dtype == torch.float32
        assert (g - r).norm() <= bound * r.norm()
        assert not torch.equal(g, r)  # the products did run in bfloat16
