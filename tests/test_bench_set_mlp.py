"""benchmarks/bench_set_mlp.py --accuracy: both models train under the same protocol and learn;
the score's mean ± std."""
import importlib.util
from argparse import Namespace
from pathlib import Path

import pytest

from sparse_engine.data import load_mnist
from _paths import DATA

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_set_mlp.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_set_mlp", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mean_std():
    bench = load_bench()
    assert bench.mean_std([0.9, 0.92]) == "0.9100 ± 0.0141"
    assert bench.mean_std([0.95]) == "0.9500"


@pytest.mark.skipif(not (DATA / "mnist_test").exists(), reason="shared data folder is not present")
@pytest.mark.parametrize("name", ["SET-MLP", "dense MLP"])
def test_accuracy_curve_learns(name):
    """Checked once with lr 0 in accuracy_curve: both stay near chance."""
    bench = load_bench()
    X, y = load_mnist(DATA / "mnist_test")
    X = X.reshape(len(X), -1)
    data = ((X[:2000], y[:2000]), (X[2000:2500], y[2000:2500]))
    accs, params, _ = bench.accuracy_curve(name, 64, 0, Namespace(epochs=5, epsilon=13.0, batch=40), data)
    assert len(accs) == 5 and accs[-1] > 0.7  # trained: 0.81 (SET-MLP), 0.84 (dense)
    assert params == (sum(min(round(13 * (a + b)), a * b) for a, b in ((784, 64), (64, 64), (64, 64), (64, 10))) + 64 * 3 + 10
                      if name == "SET-MLP" else 784 * 64 + 64 * 64 * 2 + 64 * 10 + 64 * 3 + 10)
