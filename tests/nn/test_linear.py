"""SparseLinear: drop-in for nn.Linear with a CSR weight."""
import io

import pytest
import torch
from torch import nn

from sparse_engine import SparseWeight
from sparse_engine.nn import SparseLinear


def dense_twin(layer: SparseLinear) -> nn.Linear:
    """An nn.Linear holding the same weights (zeros where the sparse layer has no entry)."""
    lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=layer.weight.values.dtype)
    with torch.no_grad():
        lin.weight.copy_(layer.weight.to_dense())
        if layer.bias is not None:
            lin.bias.copy_(layer.bias)
    return lin


@pytest.mark.parametrize("lead", [(), (1,), (5,), (3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_nn_linear_forward_and_backward(lead, bias, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (), generator=rng)))
    layer = SparseLinear(23, 17, bias=bias, density=0.3, dtype=torch.float64)
    lin = dense_twin(layer)
    x = torch.randn(*lead, 23, generator=rng, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = layer(x), lin(x2)
    assert y.shape == (*lead, 17)
    torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
    up = torch.randn(y.shape, generator=rng, dtype=y.dtype)
    (y * up).sum().backward()
    (y2 * up).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    row, col, _ = layer.weight.coo()
    torch.testing.assert_close(layer.weight.values.grad, lin.weight.grad[row, col])
    if bias:
        torch.testing.assert_close(layer.bias.grad, lin.bias.grad)


def test_density_epsilon_and_defaults():
    assert SparseLinear(100, 50, density=0.1).weight.nnz == 500
    eps = SparseLinear(1000, 400, epsilon=5).weight
    assert eps.nnz == round(5 * 1400)
    assert SparseLinear(1000, 400).weight.nnz == round(20 * 1400)  # SET's epsilon=20
    with pytest.raises(ValueError, match="at most one of density= and epsilon="):
        SparseLinear(4, 4, density=0.5, epsilon=2)
    with pytest.raises(ValueError, match="density must be in \\(0, 1\\]"):
        SparseLinear(4, 4, density=0.0)
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        SparseLinear(0, 4)


def test_bad_input_shape_names_in_features(rng):
    layer = SparseLinear(8, 3, density=0.5)
    with pytest.raises(ValueError, match="in_features=8"):
        layer(torch.randn(2, 7, generator=rng))


def test_state_dict_round_trip_is_bit_exact(rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (), generator=rng)))
    a = SparseLinear(40, 30, density=0.2)
    b = SparseLinear(40, 30, density=0.05)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    x = torch.randn(6, 40, generator=rng)
    assert torch.equal(a(x), b(x))


def test_to_dtype_and_repr(rng):
    layer = SparseLinear(10, 5, density=0.4).to(torch.float64)
    assert layer.weight.values.dtype == torch.float64 and layer.bias.dtype == torch.float64
    assert layer(torch.randn(2, 10, generator=rng, dtype=torch.float64)).dtype == torch.float64
    text = repr(layer)
    assert "density=0.4" in text and f"nnz={layer.weight.nnz}" in text


def test_from_dense_keeps_masked_weights(rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (), generator=rng)))
    lin = nn.Linear(12, 6)
    mask = torch.rand(6, 12, generator=rng) < 0.5
    layer = SparseLinear.from_dense(lin, mask)
    assert layer.weight.nnz == int(mask.sum())
    x = torch.randn(3, 12, generator=rng)
    torch.testing.assert_close(layer(x), x @ (lin.weight * mask).T + lin.bias)


def test_trains_inside_torch_compile():
    torch.manual_seed(0)
    model = nn.Sequential(SparseLinear(20, 32, density=0.3), nn.ReLU(), SparseLinear(32, 3, density=0.5))
    compiled = torch.compile(model, fullgraph=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 20, generator=g)
    y = (x @ torch.randn(20, 3, generator=g)).argmax(1)  # a learnable teacher
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    torch.testing.assert_close(compiled(x), model(x))


def test_optimizer_sees_one_values_parameter_per_weight():
    layer = SparseLinear(10, 5, density=0.4)
    names = dict(layer.named_parameters())
    assert set(names) == {"bias", "weight.values"}
    assert names["weight.values"].shape == (layer.weight.nnz,)
    assert isinstance(layer.weight, SparseWeight)
