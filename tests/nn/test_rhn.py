"""SparseRHN against a dense float64 recurrent highway network written here (Zilly et al. as in
Selfish-RNN's code) holding the same weights."""
import pytest
import torch
from torch.func import functional_call

import sparse_engine as se
from sparse_engine import SparseWeight


def dense(w):
    return w.to_dense() if isinstance(w, SparseWeight) else w


def reference(m, x, h0, mask=None):
    """Batch-major dense RHN: x (T, B, I), h0 (B, H) -> outputs (T, B, H), last state."""
    H = m.hidden_size
    W = dense(m.weight_ih)
    s, outs = h0, []
    for t in range(x.shape[0]):
        for layer in range(m.depth):
            R = dense(getattr(m, f"weight_hh_d{layer}"))
            sm = s if mask is None else s * mask
            pre = sm @ R.t()
            if m.has_bias:
                pre = pre + getattr(m, f"bias_hh_d{layer}")
            if layer == 0:
                pre = pre + x[t] @ W.t() + (m.bias_ih if m.has_bias else 0)
            h, g = torch.tanh(pre[:, :H]), torch.sigmoid(pre[:, H:2 * H])
            c = 1 - g if m.couple else torch.sigmoid(pre[:, 2 * H:])
            s = h * g + s * c
        outs.append(s)
    return torch.stack(outs), s


def grads(m):
    return {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("couple", [True, False])
@pytest.mark.parametrize("T,B,I,H,depth,sparse,bias", [
    (4, 3, 5, 6, 3, "both", True),
    (1, 1, 1, 1, 1, "both", True),     # one column, batch 1
    (3, 2, 4, 7, 2, "recurrent", False),
    (5, 2, 3, 4, 4, "input", True),
])
def test_matches_dense_reference_with_gradients(couple, T, B, I, H, depth, sparse, bias, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = se.nn.SparseRHN(I, H, depth=depth, couple=couple, bias=bias, sparse=sparse, density=0.5, dtype=torch.float64)
    x = torch.randn(T, B, I, generator=rng, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, B, H, generator=rng, dtype=torch.float64, requires_grad=True)
    y, h_n = m(x, h0)
    wy = torch.randn(y.shape, generator=rng, dtype=torch.float64)
    ((y * wy).sum() + h_n.sum()).backward()
    ours = grads(m)
    gx, gh = x.grad.clone(), h0.grad.clone()
    x.grad = h0.grad = None
    # the reference runs on dense copies; gradients at our nonzeros must agree
    dense_params = {n: (dense(getattr(m, n.rsplit(".", 1)[0])) if n.endswith(".values") else p)
                    for n, p in m.named_parameters()}
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in dense_params.items()}

    class View:  # the module's attributes, read from the dense leaves
        pass
    v = View()
    v.__dict__.update(hidden_size=H, depth=depth, couple=couple, has_bias=bias)
    for n, t in leaves.items():
        setattr(v, n.rsplit(".values", 1)[0], t)
    ry, rs = reference(v, x, h0[0])
    torch.testing.assert_close(y, ry, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_n[0], rs, rtol=1e-10, atol=1e-10)
    ((ry * wy).sum() + rs.sum()).backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gh, h0.grad, rtol=1e-10, atol=1e-10)
    for n, p in m.named_parameters():
        ref = leaves[n].grad
        if n.endswith(".values"):
            row, col, _ = getattr(m, n.rsplit(".", 1)[0]).coo()
            ref = ref[row, col]
        torch.testing.assert_close(ours[n], ref, rtol=1e-10, atol=1e-10, msg=lambda s: f"{n}: {s}")


def test_batch_first_unbatched_and_noncontiguous_input(rng):
    torch.manual_seed(1)
    m = se.nn.SparseRHN(3, 5, depth=2, density=0.6, dtype=torch.float64)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    y, h = m(x)
    assert y.shape == (4, 2, 5) and h.shape == (1, 2, 5)
    m.batch_first = True
    yb, hb = m(x.transpose(0, 1))  # a non-contiguous (B, T, I) view
    torch.testing.assert_close(yb, y.transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(hb, h, rtol=0, atol=0)
    yu, hu = m(x[:, 1])  # unbatched (T, I) whatever batch_first says
    assert yu.shape == (4, 5) and hu.shape == (1, 5)
    torch.testing.assert_close(yu, y[:, 1], rtol=1e-12, atol=1e-12)


def test_gradcheck(rng):
    torch.manual_seed(2)
    m = se.nn.SparseRHN(2, 3, depth=2, density=0.5, dtype=torch.float64)
    x = torch.randn(3, 2, 2, generator=rng, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 3, generator=rng, dtype=torch.float64, requires_grad=True)
    names = ["weight_ih.values", "weight_hh_d1.values", "bias_hh_d0"]
    params = [dict(m.named_parameters())[n].detach().clone().requires_grad_(True) for n in names]

    def f(x, h0, *p):
        y, h = functional_call(m, dict(zip(names, p)), (x, h0))
        return y, h
    assert torch.autograd.gradcheck(f, (x, h0, *params))


def test_state_dropout_is_one_mask_for_all_steps(rng):
    """Training with dropout_state equals the reference run with ONE (B, H) mask on the state
    wherever it enters R (every step and micro-step); the mask is drawn here as the module draws
    it, from the same seed. Eval mode has no mask."""
    torch.manual_seed(3)
    m = se.nn.SparseRHN(3, 4, depth=2, density=1.0, dtype=torch.float64, dropout_state=0.5)
    x = torch.randn(5, 2, 3, generator=rng, dtype=torch.float64)
    h0 = torch.randn(1, 2, 4, generator=rng, dtype=torch.float64)
    m.eval()
    ye, _ = m(x, h0)
    torch.testing.assert_close(ye, reference(m, x, h0[0])[0], rtol=1e-10, atol=1e-10)
    m.train()
    torch.manual_seed(7)
    yt, _ = m(x, h0)
    # the same draw as the module's: bernoulli on an (H, B) tensor, then transposed
    torch.manual_seed(7)
    mask = (torch.empty(4, 2, dtype=torch.float64).bernoulli_(0.5) / 0.5).t()
    assert 0 < int((mask == 0).sum()) < mask.numel()
    torch.testing.assert_close(yt, reference(m, x, h0[0], mask)[0], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(yt, ye)


def test_state_dict_round_trip_and_checkpoint(tmp_path, rng):
    torch.manual_seed(4)
    a = se.nn.SparseRHN(3, 5, depth=3, density=0.4, dtype=torch.float64)
    b = se.nn.SparseRHN(3, 5, depth=3, density=0.4, dtype=torch.float64)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    assert not torch.allclose(a(x)[0], b(x)[0])
    from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint
    save_checkpoint(tmp_path / "rhn.pt", a)
    load_checkpoint(tmp_path / "rhn.pt", b)
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=0, atol=0)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="depth"):
        se.nn.SparseRHN(3, 4, depth=0)
    with pytest.raises(ValueError, match="dropout_state"):
        se.nn.SparseRHN(3, 4, dropout_state=1.0)
    with pytest.raises(ValueError, match="sparse"):
        se.nn.SparseRHN(3, 4, sparse="all")
    m = se.nn.SparseRHN(3, 4, depth=1, density=0.5)
    with pytest.raises(ValueError, match="input must be"):
        m(torch.randn(2, 2, 5))
    with pytest.raises(ValueError, match="hx must have shape"):
        m(torch.randn(2, 2, 3), torch.randn(2, 4))
    with pytest.raises(TypeError, match="dtype"):
        m(torch.randn(2, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="PackedSequence"):
        m(torch.nn.utils.rnn.pack_sequence([torch.randn(2, 3)]))
