"""pytest-benchmark cases for the structure analysis (run: pytest benchmarks/test_bench_analysis.py).
The full comparison with networkx and the 20M-edge sizes are in bench_analysis.py."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import sparse_engine  # noqa: F401
from sparse_engine.analysis import nnstd
import torch  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_analysis", Path(__file__).with_name("bench_analysis.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(autouse=True)
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("kind", ["random", "power_law"])
def test_census_balance_100k_nodes_1m_edges(benchmark, kind):
    gen = bench.random_graph if kind == "random" else bench.power_law_graph
    g = gen(100_000, 1_000_000, seed=1)
    c, _ = benchmark(bench.census_and_balance, g)
    assert sum(c.counts.values()) == 100_000 * 99_999 * 99_998 // 6


def test_nnstd_784_layers(benchmark):
    rng = np.random.default_rng(3)
    A = sp.random(784, 784, density=0.006, random_state=rng, format="csr")
    B = sp.random(784, 784, density=0.006, random_state=rng, format="csr")
    res = benchmark(nnstd, [A], [B])
    assert 0 < res.distance <= 1
