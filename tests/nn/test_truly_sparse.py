"""Truly sparse: a 200,000 x 200,000 layer trains in a small fraction of one dense matrix."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import torch
    from sparse_engine.runtime.timing import peak_rss_bytes
    from sparse_engine.nn import SparseLinear
    torch.manual_seed(0)
    n = 200_000
    layer = SparseLinear(n, n, density=20 / n)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, n)
    for _ in range(2):
        opt.zero_grad()
        loss = layer(x).square().mean()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
    print(layer.weight.nnz, peak_rss_bytes())
""")


def test_200k_square_layer_trains_far_below_dense_memory():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, cwd=".")
    nnz, peak = (int(v) for v in out.stdout.split())
    dense_bytes = 200_000 * 200_000 * 4  # one float32 dense weight: 160 GB
    assert nnz == 4_000_000
    assert peak < 2 * 2**30, f"peak RSS {peak / 2**30:.2f} GiB"
    assert peak < dense_bytes / 50
