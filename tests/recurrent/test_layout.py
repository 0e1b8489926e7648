"""batch_rows: the recurrence's step-major (T, F, B) output in torch's time-major (T, B, F) layout,
on each device's own path (per-step 2-D transposes on the CPU, one copy elsewhere)."""
import pytest
import torch

from sparse_engine.recurrent.layout import batch_rows

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 1, 1), (3, 0, 2), (2, 33, 1)])
def test_batch_rows_is_the_transposed_copy_and_its_gradient(device, shape, rng):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    y = torch.randn(shape, generator=rng, dtype=torch.float64).to(device).requires_grad_(True)
    out = batch_rows(y)
    assert out.is_contiguous() and out.shape == (shape[0], shape[2], shape[1])
    assert torch.equal(out, y.detach().transpose(1, 2))
    g = torch.randn(out.shape, generator=rng, dtype=torch.float64).to(device)
    out.backward(g)
    assert torch.equal(y.grad, g.transpose(1, 2))
    strided = torch.randn(shape[0], shape[2], shape[1], generator=rng, dtype=torch.float64).to(device)
    assert torch.equal(batch_rows(strided.transpose(1, 2)), strided)  # a non-contiguous input


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 1, 1), (3, 0, 2), (2, 33, 1), (4, 1, 6)])
def test_batch_rows_without_a_graph_is_the_same_copy(device, shape, rng):
    """Where no graph is recorded (no grad mode, or an input that needs none) batch_rows skips its
    Function: the same values, contiguous, a copy of its own (the one-column shape's single copy),
    from a contiguous or a transposed input."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    y = torch.randn(shape, generator=rng, dtype=torch.float64).to(device)
    strided = torch.randn(shape[0], shape[2], shape[1], generator=rng, dtype=torch.float64).to(device)
    for given, want in ((y, y.transpose(1, 2)), (strided.transpose(1, 2), strided)):
        kept = given.clone()
        for grad_mode in (False, True):
            with torch.set_grad_enabled(grad_mode):
                out = batch_rows(given)
            assert out.grad_fn is None and out.is_contiguous() and out.shape == want.shape
            assert torch.equal(out, want)
            out.add_(1.0)
            assert torch.equal(given, kept)
