"""benchmarks/bench_set_mlp.py --accuracy: both models train under the same protocol and learn;
the score's mean ± std."""
from argparse import Namespace

import pytest

from sparse_engine.data import load_mnist


@pytest.fixture
def bench(load_script):
    return load_script("benchmarks/bench_set_mlp.py")


def test_mean_std(bench):
    assert bench.mean_std([0.9, 0.92]) == "0.9100 ± 0.0141"
    assert bench.mean_std([0.95]) == "0.9500"


@pytest.mark.parametrize("name", ["SET-MLP", "dense MLP"])
def test_accuracy_curve_learns(name, shared_data, bench):
    """Checked once with lr 0 in accuracy_curve: both stay near chance."""
    X, y = load_mnist(shared_data("mnist_test"))
    X = X.reshape(len(X), -1)
    data = ((X[:2000], y[:2000]), (X[2000:2500], y[2000:2500]))
    accs, params, _ = bench.accuracy_curve(name, 64, 0, Namespace(epochs=5, epsilon=13.0, batch=40), data)
    assert len(accs) == 5 and accs[-1] > 0.7  # trained: 0.81 (SET-MLP), 0.84 (dense)
    assert params == (sum(min(round(13 * (a + b)), a * b) for a, b in ((784, 64), (64, 64), (64, 64), (64, 10))) + 64 * 3 + 10
                      if name == "SET-MLP" else 784 * 64 + 64 * 64 * 2 + 64 * 10 + 64 * 3 + 10)
