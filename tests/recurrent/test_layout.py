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
