"""The recurrent modules' ``saved_dtype`` (issue 46): a run that keeps every step keeps LSTM's c's and
the saved activations in bfloat16 (or float16) and reads them back for each step's backward.

Checked against the same module without it: the forward is the same bit for bit (only what the
backward reads is rounded); the gradients move by bfloat16's rounding and no more (a bound from
float64, where the option's error is the rounding alone); what autograd keeps is narrower, by the
bytes it should be; fused and composed steps, stacked and per-step runs alike; the options it does
not combine with are refused in one line. Training on real tasks within the float32 seeds' spread:
tests/training/test_small_card_options_training.py."""
import pytest
import torch

import sparse_engine.recurrent.sequence as recurrence
from sparse_engine.nn import SparseGRU, SparseLSTM, SparseRNN

CELLS = {"lstm": SparseLSTM, "gru": SparseGRU, "rnn": SparseRNN}


def run(cell, saved_dtype, dtype=torch.float64, fused=True, T=9, B=5, H=40, n_in=7, seed=0, **kwargs):
    """Outputs and every gradient of one forward and backward of a fixed batch."""
    torch.manual_seed(seed)
    module = CELLS[cell](n_in, H, density=0.2, dtype=dtype, fused=fused, saved_dtype=saved_dtype, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(T, B, n_in, generator=g, dtype=dtype, requires_grad=True)
    out, _ = module(x)
    (out * torch.randn(out.shape, generator=g, dtype=dtype)).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return out.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("per_step", [False, True], ids=["stacked", "per-step"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_forward_is_the_same_and_the_gradients_move_by_bfloat16s_rounding(cell, fused, per_step, monkeypatch):
    if per_step:
        monkeypatch.setattr(recurrence, "STACK_BYTES", 0)
    out, dx, grads = run(cell, None, fused=fused)
    out_b, dx_b, grads_b = run(cell, torch.bfloat16, fused=fused)
    assert torch.equal(out, out_b)  # the forward computes in the values' dtype as before
    moved = []
    for name, want in [("x", dx), *grads.items()]:
        got = dx_b if name == "x" else grads_b[name]
        rel = ((got - want).norm() / want.norm()).item()
        moved.append(rel)
        assert rel < 2e-2, (name, rel)  # bfloat16 keeps 8 significant bits: 2^-8 = 0.4% a value
    assert max(moved) > 1e-5  # and it does round (float64 would otherwise match to 1e-15)


def test_float16_too_and_a_cell_without_saved_activations_is_unchanged():
    out, dx, grads = run("lstm", None)
    _, dx_h, grads_h = run("lstm", torch.float16)
    assert ((dx_h - dx).norm() / dx.norm()) < 5e-3  # 11 significant bits
    # the Elman RNN's step backward reads h' (from the output), nothing else: the same bits
    a, b = run("rnn", None), run("rnn", torch.bfloat16)
    assert torch.equal(a[1], b[1]) and all(torch.equal(a[2][n], b[2][n]) for n in a[2])


def saved_bytes(module, x) -> dict:
    """Bytes autograd keeps for the backward (pack hook), by dtype."""
    kept = {}

    def pack(t):
        kept[t.dtype] = kept.get(t.dtype, 0) + t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)[0].sum()
    return kept


@pytest.mark.parametrize("cell, blocks", [("lstm", 5), ("gru", 4)])  # LSTM: c and 4 gates; GRU: 4 activations
def test_what_is_kept_is_narrower_by_the_bytes_it_should_be(cell, blocks):
    T, B, H = 6, 3, 30
    torch.manual_seed(0)
    x = torch.randn(T, B, 4)
    wide = saved_bytes(CELLS[cell](4, H, density=0.3), x)
    torch.manual_seed(0)
    narrow = saved_bytes(CELLS[cell](4, H, density=0.3, saved_dtype=torch.bfloat16), x)
    per_step = blocks * H * B
    assert narrow[torch.bfloat16] == T * per_step * 2
    assert wide[torch.float32] - narrow[torch.float32] == T * per_step * 4


@pytest.mark.parametrize("kwargs, words", [
    (dict(saved_dtype=torch.float32), "saved_dtype must be None, torch.bfloat16 or torch.float16"),
    (dict(saved_dtype=torch.bfloat16, recompute_every=3), "not recompute_every"),
    (dict(saved_dtype=torch.bfloat16, compute="dense"), "not compute='dense'"),
    (dict(saved_dtype=torch.bfloat16, compute="persistent"), "not compute='persistent'"),
    (dict(saved_dtype=torch.bfloat16, proj_size=3), "not proj_size"),
])
def test_what_it_does_not_combine_with_is_refused_in_one_line(kwargs, words):
    with pytest.raises(ValueError, match=words) as e:
        SparseLSTM(4, 8, density=0.5, **kwargs)
    assert "\n" not in str(e.value)


def test_repr_names_it():
    assert "saved_dtype=torch.bfloat16" in repr(SparseGRU(3, 5, density=0.5, saved_dtype=torch.bfloat16))


@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cuda_the_same_forward_and_gradients_within_bfloat16s_rounding(cell):
    """On a GPU (gpu_all.sh's test stages): the fused CUDA steps around the same copies."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")

    def on_cuda(saved_dtype):
        torch.manual_seed(0)
        module = CELLS[cell](7, 40, density=0.2, saved_dtype=saved_dtype).cuda()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(9, 5, 7, generator=g).cuda().requires_grad_()
        out, _ = module(x)
        (out * torch.randn(out.shape, generator=g).cuda()).sum().backward()
        return out.detach(), x.grad

    (out, dx), (out_b, dx_b) = on_cuda(None), on_cuda(torch.bfloat16)
    assert torch.equal(out, out_b)
    rel = ((dx_b - dx).norm() / dx.norm()).item()
    assert 0 < rel < 2e-2, rel
