"""SparseODERNN (Zhang et al.'s Neural-ODE RNN) against a dense float64 classic-RK4 reference
written here, and its torchdiffeq paths (other solvers, adjoint) against the direct one."""
import pytest
import torch
from torch.func import functional_call

import sparse_engine as se
from sparse_engine import SparseWeight


def dense(w):
    return w.to_dense() if isinstance(w, SparseWeight) else w.detach()


def reference(W_ih, W_hh, b, x, h0, dt, unfolds):
    """Batch-major: h <- RK4 steps of dh/dt = tanh(x W_ih^T + h W_hh^T + b), per input step."""
    h, outs = h0, []
    for t in range(x.shape[0]):
        gx = x[t] @ W_ih.t() + b
        f = lambda h: torch.tanh(gx + h @ W_hh.t())  # noqa: E731
        for _ in range(unfolds):
            k1 = f(h)
            k2 = f(h + dt / 2 * k1)
            k3 = f(h + dt / 2 * k2)
            k4 = f(h + dt * k3)
            h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        outs.append(h)
    return torch.stack(outs)


@pytest.mark.parametrize("T,B,I,H,sparse,dt,unfolds", [
    (4, 3, 5, 8, "recurrent", 0.01, 6),
    (1, 1, 1, 1, "recurrent", 0.01, 6),   # one unit, batch 1
    (3, 2, 4, 6, "both", 0.3, 2),         # steps large enough that the rule matters
])
def test_matches_classic_rk4_reference_with_gradients(T, B, I, H, sparse, dt, unfolds, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = se.nn.SparseODERNN(I, H, dt=dt, unfolds=unfolds, sparse=sparse, density=0.5, dtype=torch.float64)
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(T, B, I, generator=rng, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, B, H, generator=rng, dtype=torch.float64, requires_grad=True)
    y, h_n = m(x, h0)
    (y.pow(2).sum() + h_n.sum()).backward()
    W_ih, W_hh = (dense(w).clone().requires_grad_(True) for w in (m.weight_ih, m.weight_hh))
    b = m.bias.detach().clone().requires_grad_(True)
    x2, h2 = x.detach().clone().requires_grad_(True), h0.detach().clone().requires_grad_(True)
    ry = reference(W_ih, W_hh, b, x2, h2[0], dt, unfolds)
    torch.testing.assert_close(y, ry, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_n[0], ry[-1], rtol=1e-10, atol=1e-10)
    (ry.pow(2).sum() + ry[-1].sum()).backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h0.grad, h2.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m.bias.grad, b.grad, rtol=1e-10, atol=1e-10)
    row, col, _ = m.weight_hh.coo()
    torch.testing.assert_close(m.weight_hh.values.grad, W_hh.grad[row, col], rtol=1e-10, atol=1e-10)
    g_ih = m.weight_ih.values.grad if isinstance(m.weight_ih, SparseWeight) else m.weight_ih.grad
    if isinstance(m.weight_ih, SparseWeight):
        r, c, _ = m.weight_ih.coo()
        torch.testing.assert_close(g_ih, W_ih.grad[r, c], rtol=1e-10, atol=1e-10)
    else:
        torch.testing.assert_close(g_ih, W_ih.grad, rtol=1e-10, atol=1e-10)


def test_paper_defaults():
    torch.manual_seed(0)
    m = se.nn.SparseODERNN(7, 64, density=0.2)
    assert (m.dt, m.unfolds, m.method) == (0.01, 6, "rk4")
    assert isinstance(m.weight_hh, SparseWeight) and not isinstance(m.weight_ih, SparseWeight)
    assert torch.count_nonzero(m.bias) == 0
    # W_ih ~ N(0, 1), W_hh values ~ N(0, 1/H): loose bounds on the sample standard deviations
    assert 0.8 < float(m.weight_ih.detach().std()) < 1.2
    assert 0.8 < float(m.weight_hh.values.detach().std() * 8) < 1.2


def test_torchdiffeq_solvers_and_adjoint_agree_with_the_direct_solver(rng):
    torch.manual_seed(1)
    m = se.nn.SparseODERNN(3, 6, density=0.5, dtype=torch.float64)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    y0, _ = m(x)
    y0.pow(2).sum().backward()
    g0 = m.weight_hh.values.grad.clone()
    # torchdiffeq's rk4 is the 3/8 rule: equal to the classic rule up to O(dt^5) per step
    for method, adjoint, tol in (("rk4", False, 1e-9), ("dopri5", False, 1e-6), ("rk4", True, 1e-9)):
        m.zero_grad()
        m.method, m.adjoint = method, adjoint
        y, _ = m(x)
        torch.testing.assert_close(y, y0, rtol=tol, atol=tol)
        y.pow(2).sum().backward()
        torch.testing.assert_close(m.weight_hh.values.grad, g0, rtol=1e-6, atol=1e-6)


def test_gradcheck(rng):
    torch.manual_seed(2)
    m = se.nn.SparseODERNN(2, 3, dt=0.2, unfolds=2, density=0.6, dtype=torch.float64)
    x = torch.randn(2, 2, 2, generator=rng, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 3, generator=rng, dtype=torch.float64, requires_grad=True)
    names = ["weight_hh.values", "weight_ih", "bias"]
    params = [dict(m.named_parameters())[n].detach().clone().requires_grad_(True) for n in names]

    def f(x, h0, *p):
        return functional_call(m, dict(zip(names, p)), (x, h0))
    assert torch.autograd.gradcheck(f, (x, h0, *params))


def test_shapes_and_state_dict(rng):
    torch.manual_seed(3)
    a = se.nn.SparseODERNN(3, 5, density=0.4, batch_first=True, dtype=torch.float64)
    b = se.nn.SparseODERNN(3, 5, density=0.4, batch_first=True, dtype=torch.float64)
    x = torch.randn(2, 4, 3, generator=rng, dtype=torch.float64)
    y, h = a(x)
    assert y.shape == (2, 4, 5) and h.shape == (1, 2, 5)
    yu, hu = a(x[0])  # unbatched (T, I)
    assert yu.shape == (4, 5) and hu.shape == (1, 5)
    torch.testing.assert_close(yu, y[0], rtol=1e-12, atol=1e-12)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x)[0], y, rtol=0, atol=0)


def test_checkpoint_round_trip(tmp_path, rng):
    from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(4)
    a = se.nn.SparseODERNN(3, 5, density=0.4, dtype=torch.float64)
    b = se.nn.SparseODERNN(3, 5, density=0.4, dtype=torch.float64)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    assert not torch.allclose(a(x)[0], b(x)[0])
    save_checkpoint(tmp_path / "ode.pt", a)
    load_checkpoint(tmp_path / "ode.pt", b)
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=0, atol=0)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="dt"):
        se.nn.SparseODERNN(3, 4, dt=0)
    with pytest.raises(ValueError, match="method"):
        se.nn.SparseODERNN(3, 4, method="rk5")
    with pytest.raises(ValueError, match="unfolds"):
        se.nn.SparseODERNN(3, 4, unfolds=0)
    m = se.nn.SparseODERNN(3, 4, density=0.5)
    with pytest.raises(ValueError, match="hx must have shape"):
        m(torch.randn(2, 2, 3), torch.zeros(2, 4))
