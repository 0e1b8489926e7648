"""pytest-benchmark cases for one topology update (run: pytest benchmarks/ --benchmark-only):
truly sparse prune + random regrow vs the masked-dense torch.topk way, same layer.
Not part of the test suite (tests/ is); bench_topology.py has the large cases."""
import pytest

from sparse_engine import SparseWeight
from sparse_engine.training import magnitude_keep, random_empty, rewire
import torch  # noqa: E402

N, NNZ, FRACTION = 4096, 1_000_000, 0.3


@pytest.mark.benchmark(group="topology-update")
def test_update_truly_sparse(benchmark):
    g = torch.Generator().manual_seed(0)
    base = SparseWeight.random(N, N, nnz=NNZ, generator=g)
    w = SparseWeight(base.row_ptr.clone(), base.col_idx.clone(), base.values.detach().clone(), (N, N))
    state = (base.row_ptr, base.col_idx, base.values.detach())
    n = int(FRACTION * NNZ)

    def setup():
        w.set_pattern(*(t.clone() for t in state), validate=False)
        return (), {}

    def update():
        rewire(w, magnitude_keep(w.values, n), lambda rp, ci: random_empty(rp, ci, N, n, seed=1))

    benchmark.pedantic(update, setup=setup, rounds=5)


@pytest.mark.benchmark(group="topology-update")
def test_update_masked_dense_topk(benchmark):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(N, N, generator=g)
    mask0 = torch.zeros(N * N, dtype=torch.bool)
    mask0[torch.randperm(N * N, generator=g)[:NNZ]] = True
    mask0 = mask0.view(N, N)
    n = int(FRACTION * NNZ)

    def update():
        m = mask0.clone()
        drop = torch.topk(W.abs().masked_fill_(~m, float("inf")).view(-1), n, largest=False).indices
        m.view(-1)[drop] = False
        grow = torch.topk(torch.rand(N, N).masked_fill_(m, -1.0).view(-1), n).indices
        m.view(-1)[grow] = True

    benchmark.pedantic(update, rounds=5)
