"""sparse_engine.nn.blocks: the embedding lookup's gradient is the same on 1 and 2 threads."""
import torch

from sparse_engine.nn.blocks import row_lookup
from sparse_engine.testing import num_threads, random_weight


def test_row_lookup_gradient():
    """The embedding lookup's gradient (repeated ids accumulate into the values): more than 32,768
    gathered entries, where torch's index_put_(accumulate=True), the backward of plain indexing,
    adds float32 with atomics from several threads."""
    g = torch.Generator().manual_seed(3)
    W = random_weight(44, 200, 0.5, dtype=torch.float32, generator=g)
    ids = torch.randint(0, 44, (700,), generator=g)
    up = torch.randn(700, 200, generator=g)

    def gradient():
        W.values.grad = None
        (row_lookup(W, ids) * up).sum().backward()
        return W.values.grad.clone()

    assert int((W.row_ptr[ids + 1] - W.row_ptr[ids]).sum()) > 32_768
    with num_threads(1):
        one = gradient()
    with num_threads(2):
        two = gradient()
    assert one.dtype == two.dtype and one.shape == two.shape
    assert torch.equal(one, two)
