"""pytest-benchmark cases for the CPU operators (run: pytest benchmarks/ --benchmark-only).

Each group holds ours and its baselines on the same inputs, so the table pytest-benchmark
prints compares them directly. Not part of the test suite (tests/ is).
"""
import pytest

from sparse_engine import SparseWeight, ops
import torch  # noqa: E402

SHAPES = [(4096, 0.05), (16384, 0.01)]
B = 32


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"N{s[0]}-d{s[1]}")
def case(request):
    n, density = request.param
    g = torch.Generator().manual_seed(0)
    W = SparseWeight.random(n, n, density, generator=g)
    return W, torch.randn(n, B, generator=g), torch.randn(n, B, generator=g)


@pytest.mark.benchmark(group="spmm")
def test_spmm_ours(benchmark, case):
    W, X, _ = case
    benchmark(ops.spmm, W, X)


@pytest.mark.benchmark(group="spmm")
def test_spmm_torch_sparse_csr(benchmark, case):
    W, X, _ = case
    csr = W.to_torch_sparse_csr()
    benchmark(torch.sparse.mm, csr, X)


@pytest.mark.benchmark(group="spmm")
def test_spmm_scipy(benchmark, case):
    W, X, _ = case
    m, x = W.to_scipy(), X.numpy()
    benchmark(lambda: m @ x)


@pytest.mark.benchmark(group="spmm_t")
def test_spmm_t_ours(benchmark, case):
    """values in column order made outside the timing, like the baseline's transposed CSR"""
    W, _, G = case
    values_t = ops.transposed_values(W)
    benchmark(ops.spmm_t, W, G, values_t)


@pytest.mark.benchmark(group="spmm_t")
def test_spmm_t_ours_gathering_each_call(benchmark, case):
    W, _, G = case
    benchmark(ops.spmm_t, W, G)


@pytest.mark.benchmark(group="spmm_t")
def test_spmm_t_torch_sparse_csr(benchmark, case):
    W, _, G = case
    csr_t = W.to_torch_sparse_csr().t().to_sparse_csr()
    benchmark(torch.sparse.mm, csr_t, G)


@pytest.mark.benchmark(group="sddmm")
def test_sddmm_ours(benchmark, case):
    W, X, G = case
    benchmark(ops.sddmm, W, G, X)


@pytest.mark.benchmark(group="sddmm")
def test_sddmm_torch_sampled_addmm(benchmark, case):
    W, X, G = case
    csr = W.to_torch_sparse_csr()
    benchmark(lambda: torch.sparse.sampled_addmm(csr, G, X.T, beta=0.0))


@pytest.mark.benchmark(group="fwd+bwd")
def test_fwd_bwd_ours(benchmark, case):
    W, X, G = case

    def step():
        ops.spmm(W, X.requires_grad_()).backward(G)
        W.values.grad = None

    benchmark(step)


@pytest.mark.benchmark(group="fwd+bwd")
def test_fwd_bwd_torch_sparse_csr(benchmark, case):
    W, X, G = case
    v = W.values.detach().clone().requires_grad_()

    def step():
        w = torch.sparse_csr_tensor(W.row_ptr, W.col_idx.long(), v, size=W.shape)
        torch.sparse.mm(w, X.requires_grad_()).backward(G)
        v.grad = None

    benchmark(step)
