"""benchmarks/bench_set_impl2.py's plumbing, without SET implementation 2 itself (its code is not
part of the project): a stand-in module with the same interface shows what the harness passes to
it and reads back; the ratio; the NumPy and scipy shims; the one-line errors."""
import argparse
import sys
import textwrap

import numpy as np
import pytest
import torch

FAKE = """
import numpy as np
from scipy.sparse import coo_matrix, random as sparse_random
calls = []
class Relu: pass
class Sigmoid: pass
class MSE: pass
class SET_MLP:
    def __init__(self, dimensions, activations, epsilon=20):
        calls.append(("init", dimensions, epsilon))
        self.w = {i + 1: sparse_random(a, b, density=1.0, format="csr", random_state=0)
                  for i, (a, b) in enumerate(zip(dimensions, dimensions[1:]))}
    def fit(self, x, y_true, x_test, y_test, loss, epochs, batch_size, learning_rate=1e-3, momentum=0.9,
            weight_decay=0.0002, zeta=0.3, @DROPOUT@testing=True, save_filename=""):
        if testing:  # the --curve mode: its own loop and metrics, accuracy in the last column
            return np.column_stack([np.zeros((epochs, 3)), np.arange(1, epochs + 1) / 10])
        calls.append(("fit", x.dtype, x.shape, y_true.shape, epochs, batch_size, learning_rate, @DROPOUT_VALUE@))
        flag = np.in1d(np.zeros((3, 1)), np.zeros(1))  # implementation 2's array_intersect: 2-D in, 1-D out
        calls.append(("in1d", flag.shape))
        dw = coo_matrix(self.w[1])  # the kernel writes the gradient into dw.data
        dw.data[:] = 0
        calls.append(("weights kept", bool(self.w[1].data.all())))
    def predict(self, x_test, y_test, batch_size=1):
        return 0.5, None
    def @EVOLVE@(self):
        calls.append(("evolve",))
"""


@pytest.fixture
def bench(load_script, monkeypatch):
    mod = load_script("benchmarks/bench_set_impl2.py")
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(80, 784, generator=g), torch.randint(10, (80,), generator=g),
            torch.rand(20, 784, generator=g), torch.randint(10, (20,), generator=g))
    monkeypatch.setattr(mod, "mnist", lambda path, train: data)
    return mod


@pytest.mark.parametrize("tutorial", [True, False])
def test_implementation_2_is_called_as_its_own_main_calls_it(tmp_path, bench, monkeypatch, tutorial):
    name = "fake_impl2_tutorial" if tutorial else "fake_impl2_original"
    source = (FAKE.replace("@DROPOUT@", "dropoutrate=0, " if tutorial else "")
              .replace("@DROPOUT_VALUE@", "dropoutrate" if tutorial else "None")
              .replace("@EVOLVE@", "weightsEvolution_II" if tutorial else "weightsEvolution_Amar"))
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(np, "in1d", None, raising=False)  # gone while the test runs, as in NumPy 2.4,
    monkeypatch.delattr(np, "in1d")  # and afterwards as it was (the harness sets it)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the harness prepends --build and --impl2
    args = argparse.Namespace(child=6, build=str(tmp_path), impl2=str(tmp_path), module=name, data="unused",
                              train=80, seed=0, curve=0)
    out = bench.impl2(args)
    calls = sys.modules[name].calls
    assert calls[0] == ("init", (784, 6, 6, 6, 10), 13)
    assert calls[1] == ("fit", np.float64, (80, 784), (80, 10), 1, 40, 0.05, 0.2 if tutorial else None)
    assert calls[2] == ("in1d", (3,))  # the shim flattens as NumPy's in1d did
    assert calls[3] == ("weights kept", True)  # coo_matrix(csr) copies, as in the scipy it was written for
    assert calls[4] == ("evolve",)
    assert out["nnz"] == 784 * 6 + 6 * 6 + 6 * 6 + 6 * 10  # summed over its layers
    assert out["acc"] == 0.5 and out["train"] >= 0 and out["evolution"] >= 0


def test_row_ratio_and_per_connection(bench):
    ours = dict(nnz=1_000_000, train=1.5, evolution=0.5, acc=0.9, build=0.1)
    theirs = dict(nnz=2_000_000, train=8.0, evolution=2.0, acc=0.8, build=30.0)
    row = bench.row_of(1000, ours, theirs, 1.0)
    assert row[2] == "float32"  # ours' configuration
    assert row[6] == "0.200x"  # (1.5 + 0.5) / (8 + 2)
    assert row[7] == "2.00 / 5.00"  # microseconds per connection
    assert bench.row_of(1000, ours, None, 1.0)[5:7] == ["-", "-"]
    assert bench.row_of(1000, ours, None, 1.0, "bfloat16")[2] == "bfloat16"


@pytest.mark.parametrize("argv, says", [
    (["--data", "/nonexistent/mnist"], "--data /nonexistent/mnist does not exist"),
    (["--impl2", "EMPTY"], "holds no set_mlp.py and sparseoperations.pyx"),
    (["--ours", "float32,float16"], "--ours must list float32 or bfloat16, each optionally +keep, got float32,float16"),
])
def test_bad_paths_are_one_line(tmp_path, load_script, argv, says):
    bench = load_script("benchmarks/bench_set_impl2.py")
    argv = [str(tmp_path) if a == "EMPTY" else a for a in argv]
    if "--data" not in argv:
        argv += ["--data", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_curve_mode_reads_implementation_2s_own_metrics(tmp_path, bench, monkeypatch):
    source = FAKE.replace("@DROPOUT@", "dropoutrate=0, ").replace("@DROPOUT_VALUE@", "dropoutrate")
    (tmp_path / "fake_impl2_curve.py").write_text(textwrap.dedent(source.replace("@EVOLVE@", "weightsEvolution_II")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    args = argparse.Namespace(child=6, build=str(tmp_path), impl2=str(tmp_path), module="fake_impl2_curve",
                              data="unused", train=80, seed=1, curve=3)
    assert bench.impl2(args)["accs"] == pytest.approx([0.1, 0.2, 0.3])
    assert sys.modules["fake_impl2_curve"].batchSize == 40  # its fit's testing reads this global


def test_command_names_the_impl2_checkout_by_its_folder_or_not_at_all(bench):
    """The results files' command line; --curve without --impl2 (ours alone) failed on the missing path."""
    assert bench.command(argparse.Namespace(impl2="/home/me/src/sparse-evolutionary"), " --hidden 30") == \
        "python benchmarks/bench_set_impl2.py --impl2 impl2/sparse-evolutionary --hidden 30"
    assert bench.command(argparse.Namespace(impl2=None), " --curve 2") == "python benchmarks/bench_set_impl2.py --curve 2"


@pytest.mark.parametrize("config", ["float32", "bfloat16"])
def test_ours_runs_its_products_on_activations_of_the_named_dtype(bench, config):
    """--ours bfloat16: every forward product of the epoch and of the test pass reads bfloat16
    activations; float32 (the default) none."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Products(TorchDispatchMode):  # below autocast: the dtypes the kernels receive
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.sparse_engine.spmm.default:
                seen.add(args[-1].dtype)  # X
            return func(*args, **(kwargs or {}))

    args = argparse.Namespace(child=6, threads=1, seed=0, data="unused", train=80, curve=0, config=config)
    with Products():
        out = bench.ours(args)
    assert seen == {getattr(torch, config)}
    assert out["nnz"] > 0 and 0.0 <= out["acc"] <= 1.0
