"""Checkpoints: atomic writes and bit-exact reloads, including changed topologies."""
import pytest
import torch
from torch import nn

from sparse_engine.checkpoint import load_checkpoint, save_checkpoint
from sparse_engine.nn import SparseLinear


def model_and_optimizer(density):
    model = nn.Sequential(SparseLinear(30, 20, density=density), nn.Tanh(), SparseLinear(20, 5, density=density))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def train_steps(model, opt, x, n=3):
    for _ in range(n):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def test_round_trip_is_bit_exact_and_training_continues_identically(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(8, 30)
    a, opt_a = model_and_optimizer(0.3)
    train_steps(a, opt_a, x)
    path = save_checkpoint(tmp_path / "ck.pt", a, opt_a, epoch=3)
    b, opt_b = model_and_optimizer(0.1)  # other topology and nnz
    payload = load_checkpoint(path, b, opt_b)
    assert payload["extra"] == {"epoch": 3}
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), ka
    train_steps(a, opt_a, x)
    train_steps(b, opt_b, x)
    assert torch.equal(a(x), b(x))


def test_write_is_atomic(tmp_path, monkeypatch):
    model, opt = model_and_optimizer(0.3)
    path = save_checkpoint(tmp_path / "ck.pt", model)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before  # the old checkpoint is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a sparse-engine checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    model, opt = model_and_optimizer(0.3)
    save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "m.pt", model, opt)
