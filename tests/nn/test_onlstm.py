"""SparseONLSTM against a dense float64 ON-LSTM written here (Shen et al. 2019, as in
Selfish-RNN's ONLSTM code: batch-major, cell state as (B, chunks, chunk_size)) with the same weights."""
import pytest
import torch
from torch.func import functional_call

import sparse_engine as se
from sparse_engine import SparseWeight


def dense(w):
    return w.to_dense() if isinstance(w, SparseWeight) else w


def reference_cell(x_part, h, c, W_hh, b_hh, n, cs):
    """One step: x_part = W_ih x + b_ih (B, G); h (B, H); c (B, n, cs)."""
    g = x_part + h @ W_hh.t() + (0 if b_hh is None else b_hh)
    cin, cforget = g[:, :2 * n].chunk(2, 1)
    o, cell, i, f = g[:, 2 * n:].reshape(-1, 4 * n, cs).chunk(4, 1)
    cin = 1 - torch.cumsum(torch.softmax(cin, -1), -1)
    cforget = torch.cumsum(torch.softmax(cforget, -1), -1)
    cin, cforget = cin[:, :, None], cforget[:, :, None]
    w = cforget * cin
    f = torch.sigmoid(f) * w + (cforget - w)
    i = torch.sigmoid(i) * w + (cin - w)
    c = f * c + i * torch.tanh(cell)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h.reshape(h.shape[0], -1), c


def reference(p, x, h0, c0, n, cs, L, hh_scale=None):
    """p: parameter name -> dense tensor; returns output (T, B, H), h_n, c_n (L, B, H)."""
    layer_in, hs, cs_ = x, [], []
    for k in range(L):
        W_ih, W_hh = p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"]
        if hh_scale is not None:
            W_hh = W_hh * hh_scale[k]
        b_ih, b_hh = p.get(f"bias_ih_l{k}"), p.get(f"bias_hh_l{k}")
        h, c = h0[k], c0[k].reshape(h0.shape[1], n, cs)
        outs = []
        for t in range(x.shape[0]):
            h, c = reference_cell(layer_in[t] @ W_ih.t() + (0 if b_ih is None else b_ih), h, c, W_hh, b_hh, n, cs)
            outs.append(h)
        layer_in = torch.stack(outs)
        hs.append(h)
        cs_.append(c.reshape(h.shape))
    return layer_in, torch.stack(hs), torch.stack(cs_)


def dense_leaves(m):
    out = {}
    for name, p in m.named_parameters():
        key = name[: -len(".values")] if name.endswith(".values") else name
        t = dense(getattr(m, key)) if name.endswith(".values") else p
        out[key] = t.detach().clone().requires_grad_(True)
    return out


@pytest.mark.parametrize("T,B,I,H,cs,L,sparse,bias", [
    (4, 3, 5, 6, 2, 1, "both", True),
    (1, 1, 1, 3, 3, 2, "both", True),     # one chunk, batch 1, one input feature
    (3, 2, 4, 8, 4, 2, "recurrent", False),
    (5, 2, 3, 4, 1, 3, "input", True),    # chunk size 1: master gates per unit
])
def test_matches_dense_reference_with_gradients(T, B, I, H, cs, L, sparse, bias, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = se.nn.SparseONLSTM(I, H, chunk_size=cs, num_layers=L, bias=bias, sparse=sparse, density=0.5,
                           dtype=torch.float64)
    x = torch.randn(T, B, I, generator=rng, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(L, B, H, generator=rng, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(L, B, H, generator=rng, dtype=torch.float64, requires_grad=True)
    y, (h_n, c_n) = m(x, (h0, c0))
    wy = torch.randn(y.shape, generator=rng, dtype=torch.float64)
    ((y * wy).sum() + h_n.sum() + (c_n * 0.5).sum()).backward()
    ours = {n: p.grad.clone() for n, p in m.named_parameters()}
    g_in = [t.grad.clone() for t in (x, h0, c0)]
    for t in (x, h0, c0):
        t.grad = None
    leaves = dense_leaves(m)
    ry, rh, rc = reference(leaves, x, h0, c0, H // cs, cs, L)
    for a, b in ((y, ry), (h_n, rh), (c_n, rc)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    ((ry * wy).sum() + rh.sum() + (rc * 0.5).sum()).backward()
    for a, t in zip(g_in, (x, h0, c0)):
        torch.testing.assert_close(a, t.grad, rtol=1e-10, atol=1e-10)
    for name, g in ours.items():
        key = name[: -len(".values")] if name.endswith(".values") else name
        ref = leaves[key].grad
        if name.endswith(".values"):
            row, col, _ = getattr(m, key).coo()
            ref = ref[row, col]
        torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-10, msg=lambda s: f"{name}: {s}")


def test_dropconnect_masks_weights_in_training_and_scales_in_eval(rng):
    torch.manual_seed(5)
    m = se.nn.SparseONLSTM(3, 6, chunk_size=3, num_layers=1, density=0.7, dropconnect=0.5, dtype=torch.float64)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    h0 = torch.randn(1, 2, 6, generator=rng, dtype=torch.float64)
    c0 = torch.randn(1, 2, 6, generator=rng, dtype=torch.float64)
    leaves = dense_leaves(m)
    m.eval()
    ye, _ = m(x, (h0, c0))
    ref_e = reference(leaves, x, h0, c0, 2, 3, 1, hh_scale=[0.5])[0]
    torch.testing.assert_close(ye, ref_e, rtol=1e-10, atol=1e-10)
    m.train()
    yt, _ = m(x, (h0, c0))
    yt.sum().backward()
    kept = m.weight_hh_l0.values.grad != 0  # a dropped weight gets no gradient
    assert 0 < int(kept.sum()) < kept.numel()
    row, col, _ = m.weight_hh_l0.coo()
    mask = torch.zeros(6 * 4 + 4, 6, dtype=torch.float64)
    mask[row, col] = kept.double()
    torch.testing.assert_close(yt.detach(), reference(leaves, x, h0, c0, 2, 3, 1, hh_scale=[mask])[0].detach(),
                               rtol=1e-10, atol=1e-10)


def test_layer_dropout_train_vs_eval(rng):
    torch.manual_seed(6)
    m = se.nn.SparseONLSTM(3, 4, chunk_size=2, num_layers=2, dropout=0.5, density=0.8, dtype=torch.float64)
    x = torch.randn(5, 3, 3, generator=rng, dtype=torch.float64)
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0], rtol=0, atol=0)
    ref = reference(dense_leaves(m), x, torch.zeros(2, 3, 4, dtype=torch.float64),
                    torch.zeros(2, 3, 4, dtype=torch.float64), 2, 2, 2)[0]
    torch.testing.assert_close(m(x)[0], ref.detach(), rtol=1e-10, atol=1e-10)
    m.train()
    assert not torch.allclose(m(x)[0], ref)


def test_shapes_batch_first_unbatched():
    torch.manual_seed(7)
    m = se.nn.SparseONLSTM(3, 4, chunk_size=2, num_layers=2, density=0.5, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    y, (h, c) = m(x)
    assert y.shape == (5, 2, 4) and h.shape == c.shape == (2, 2, 4)
    m.batch_first = True
    yb, (hb, cb) = m(x.transpose(0, 1))
    torch.testing.assert_close(yb, y.transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(cb, c, rtol=0, atol=0)
    yu, (hu, cu) = m(x[:, 0])
    assert yu.shape == (5, 4) and hu.shape == cu.shape == (2, 4)
    torch.testing.assert_close(yu, y[:, 0], rtol=1e-12, atol=1e-12)


def test_gradcheck(rng):
    torch.manual_seed(8)
    m = se.nn.SparseONLSTM(2, 4, chunk_size=2, num_layers=1, density=0.5, dtype=torch.float64)
    x = torch.randn(3, 2, 2, generator=rng, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 4, generator=rng, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 2, 4, generator=rng, dtype=torch.float64, requires_grad=True)
    names = ["weight_ih_l0.values", "weight_hh_l0.values", "bias_hh_l0"]
    params = [dict(m.named_parameters())[n].detach().clone().requires_grad_(True) for n in names]

    def f(x, h0, c0, *p):
        y, (h, c) = functional_call(m, dict(zip(names, p)), (x, (h0, c0)))
        return y, h, c
    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))


def test_state_dict_round_trip(rng):
    torch.manual_seed(9)
    a = se.nn.SparseONLSTM(3, 4, chunk_size=2, num_layers=2, density=0.4, dtype=torch.float64)
    b = se.nn.SparseONLSTM(3, 4, chunk_size=2, num_layers=2, density=0.4, dtype=torch.float64)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    assert not torch.allclose(a(x)[0], b(x)[0])
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=0, atol=0)


def test_checkpoint_round_trip(tmp_path, rng):
    from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(10)
    a = se.nn.SparseONLSTM(3, 4, chunk_size=2, num_layers=2, density=0.4, dtype=torch.float64)
    b = se.nn.SparseONLSTM(3, 4, chunk_size=2, num_layers=2, density=0.4, dtype=torch.float64)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    assert not torch.allclose(a(x)[0], b(x)[0])
    save_checkpoint(tmp_path / "onlstm.pt", a)
    load_checkpoint(tmp_path / "onlstm.pt", b)
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=0, atol=0)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        se.nn.SparseONLSTM(3, 5, chunk_size=2)
    with pytest.raises(ValueError, match="dropconnect"):
        se.nn.SparseONLSTM(3, 4, chunk_size=2, dropconnect=-0.1)
    m = se.nn.SparseONLSTM(3, 4, chunk_size=2, density=0.5)
    with pytest.raises(TypeError, match="hx must be a tuple"):
        m(torch.randn(2, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="c_0 must have shape"):
        m(torch.randn(2, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="input must be"):
        m(torch.randn(2, 2, 2))
