"""``torch.inference_mode`` before training: a module first called inside it (which builds and keeps the
transposed index and, on the dense path, its dense buffers) gives no_grad's outputs there, and afterwards
trains with the gradients of a copy never called inside it. Tensors made in inference mode and kept could
not be written or saved for a backward outside it: the dense path once failed there on its first call and
for good after."""
import copy

import pytest
import torch

import sparse_engine as se
from sparse_engine import ops
from sparse_engine.nn import SparseGRU, SparseGRUCell, SparseLinear, SparseLSTM, SparseLSTMCell, SparseRNN

COMPUTES = ["auto", "sparse", "persistent", "dense"]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _check(module, x):
    ref = copy.deepcopy(module)
    with torch.inference_mode():
        y = _first(module(x))
    with torch.no_grad():
        torch.testing.assert_close(y, _first(ref(x)), rtol=0, atol=0)
    grads = []
    for m in (module, ref):
        xi = x.clone().requires_grad_()
        _first(m(xi)).square().sum().backward()
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.inference_mode():  # and inside it again, after the training step
        torch.testing.assert_close(_first(module(x)), _first(ref(x)).detach(), rtol=0, atol=0)


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("cls", [SparseRNN, SparseLSTM, SparseGRU], ids=lambda c: c.__name__)
def test_layers_first_called_in_inference_mode_train_after(cls, compute, rng):
    torch.manual_seed(0)
    m = cls(6, 40, density=0.33, num_layers=2, bidirectional=True, compute=compute)
    _check(m, torch.randn(7, 3, 6, generator=rng))


def test_projected_lstm_and_cells(rng):
    torch.manual_seed(1)
    _check(SparseLSTM(6, 12, proj_size=4, density=0.4, compute="dense"), torch.randn(5, 2, 6, generator=rng))
    for cls in (SparseLSTMCell, SparseGRUCell):
        _check(cls(6, 9, density=0.4), torch.randn(3, 6, generator=rng))


def test_linear_and_its_transposed_index_built_in_inference_mode(rng):
    torch.manual_seed(2)
    lin = SparseLinear(50, 40, density=0.2)
    with torch.inference_mode():
        ops.spmm_t(lin.weight, torch.randn(40, 3, generator=rng))  # builds the transposed index there
        assert lin.weight.has_transpose
    assert not any(t.is_inference() for t in lin.weight.index)
    _check(lin, torch.randn(4, 50, generator=rng))
    assert isinstance(lin.weight, se.SparseWeight)
