"""One recurrent training step, ours against masked-dense and torch.sparse (sparse_engine.runs.step_bench,
``sparse-engine bench --model``, benchmarks/bench_rnn.py): the masked-dense baseline without cuDNN where
cuDNN's RNN fails (on the first GPU run, nn.LSTM at hidden 16,384 did, so that size had no
masked-dense number); each method's step; the command's table."""
import pytest
import torch

from sparse_engine.runs import step_bench as bench


def test_masked_dense_step_runs_without_cudnn_where_cudnn_fails(capsys):
    p = torch.nn.Parameter(torch.ones(3))
    calls = []

    def cudnn_fails():
        calls.append(torch.backends.cudnn.enabled)
        if torch.backends.cudnn.enabled:
            raise RuntimeError("Storage size calculation overflowed with sizes=[4611686016280035328]\nmore")
        (p * 2).sum().backward()

    step, path = bench.without_cudnn_if_it_fails(cudnn_fails, [p])
    assert path == "cuDNN off: it failed"
    assert "cuDNN failed (Storage size calculation overflowed with sizes=[4611686016280035328])" in capsys.readouterr().err
    assert calls == [True, False] and p.grad is None  # the trial runs leave no gradient behind
    step()
    assert calls[-1] is False and torch.equal(p.grad, torch.full((3,), 2.0))
    assert torch.backends.cudnn.enabled  # only inside the step

    def works():
        (p * 3).sum().backward()

    p.grad = None
    step, path = bench.without_cudnn_if_it_fails(works, [p])
    assert step is works and path is None and p.grad is None

    def always_fails():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        bench.without_cudnn_if_it_fails(always_fails, [p])


@pytest.mark.parametrize("cell", bench.CELLS)
def test_every_method_times_a_step_of_every_cell(cell):
    for method in ("sparse_engine", "masked_dense", "torch_sparse"):
        r = bench.measure(method, cell, 24, 0.25, "cpu", repeats=1, warmup=1, T=4, B=3)
        assert r["status"] == "ok" and r["ms"] > 0 and r["peak_bytes"] > 0, (method, r)
        want = round(0.25 * 2 * bench.GATES[cell] * 24 * 24)  # both matrices, about this many entries
        assert 0.5 * want < r["nnz"] < 1.5 * want, (method, r["nnz"], want)
    assert bench.measure("sparse_engine", cell, 24, 0.25, "cpu", 1, 0, T=4, B=3)["path"] in (
        "fused", "composed", "composed fwd, fused bwd", "fused fwd, composed bwd", "dense")


@pytest.mark.parametrize("method", ["sparse_engine", "masked_dense", "torch_sparse"])
def test_inference_times_a_call_without_a_gradient(method, monkeypatch):
    """``inference``: the forward alone under torch.no_grad, no backward called; ours reports the path auto
    takes without a backward (at 3 columns and one step the whole-sequence ops, where a training step goes
    per step)."""
    step, *_ = bench.training_step(method, "LSTM", 24, 0.25, "cpu", "auto", T=1, B=3, inference=True)
    calls = []
    monkeypatch.setattr(torch.Tensor, "backward", lambda *a, **k: calls.append(a))
    step()
    assert not calls
    r = bench.measure(method, "LSTM", 24, 0.25, "cpu", repeats=1, warmup=0, T=1, B=3, inference=True)
    assert r["status"] == "ok" and r["ms"] > 0
    if method == "sparse_engine":
        paths = [bench.training_step(method, "LSTM", 24, 0.25, "cpu", "auto", T=1, B=3, inference=case)[3]
                 for case in (True, False)]
        assert paths[0] == "persistent" and paths[1] != "persistent", paths


def test_the_torch_sparse_loops_compute_the_cells():
    """Each loop against torch's own cell on the same (dense) weights, given as sparse CSR."""
    torch.manual_seed(0)
    T, B, H = 3, 2, 5
    x = torch.randn(T, B, H, dtype=torch.float64)
    for cell, module in (("LSTM", torch.nn.LSTM), ("GRU", torch.nn.GRU), ("RNN", torch.nn.RNN)):
        ref = module(H, H, dtype=torch.float64)
        b = torch.cat([ref.bias_ih_l0, ref.bias_hh_l0]) if cell == "GRU" else ref.bias_ih_l0 + ref.bias_hh_l0
        got = bench.TORCH_SPARSE_LOOPS[cell](ref.weight_ih_l0.detach().to_sparse_csr(),
                                             ref.weight_hh_l0.detach().to_sparse_csr(), b.detach(), x, H)
        torch.testing.assert_close(got.transpose(1, 2), ref(x)[0].detach())


def test_bench_model_prints_ours_and_both_baselines_with_the_ratio(run_cli, tmp_path):
    code, out, err = run_cli("bench", "--model", "gru", "--hidden", "32", "--density", "0.2", "--seq-len", "4",
                             "--batch", "3", "--repeats", "1", "--device", "cpu", cwd=tmp_path)
    assert code == 0, err
    assert "GRU training step" in out and "hidden 32" in out and "T=4, B=3" in out
    for label in ("ours", "masked-dense", "torch.sparse CSR"):
        assert f"  {label}: " in out and f"  {label} ..." in out  # each method as it starts and ends
    assert out.count(" ms, ") >= 3 and "x" in out.split("ours faster by", 1)[1]


@pytest.mark.parametrize("compute, auto_takes_it", [("persistent", False), (None, True), (None, False)])
def test_the_path_named_is_the_one_that_runs(monkeypatch, compute, auto_takes_it):
    """The path a table names for ours is the one its step takes, also where ``auto`` picks the
    persistent ops (on a GPU by W_hh's size; here made to: the sixth H200 run's table named the
    per-step 'fused' where auto had run the persistent kernels)."""
    from sparse_engine.recurrent import compute_paths, persistent

    monkeypatch.setattr(compute_paths, "persistent_by_sizes",
                        lambda mode, *a: (compute_paths._state["compute"] if mode is None else mode) == "persistent"
                        or auto_takes_it)
    runs, real = [], persistent.forward
    monkeypatch.setattr(persistent, "forward", lambda *a: runs.append(1) or real(*a))
    with compute_paths.default_compute("auto"):
        step, _, _, path = bench.training_step("sparse_engine", "LSTM", 24, 0.02, "cpu", compute=compute, T=3, B=2)
        step()
    ran = "persistent" if runs else "fused"
    assert path == ran and ran == ("persistent" if compute == "persistent" or auto_takes_it else "fused")



@pytest.mark.parametrize("method, path", [("sparse_engine_per_step", "fused"), ("sparse_engine_dense", "dense")])
def test_each_path_method_runs_its_path(method, path):
    """The table's per-path columns: at 33% and 24 units, where ``auto`` goes dense on the CPU, the
    per-step method still runs the sparse kernels a step at a time, and the dense one materialises."""
    from sparse_engine.recurrent import compute_paths

    from sparse_engine.testing import num_threads

    with compute_paths.default_compute("auto"), num_threads(1):  # auto goes dense here (from 4 steps)
        assert bench.measure("sparse_engine", "LSTM", 24, 0.33, "cpu", 1, 0, T=4, B=2)["path"] == "dense"
        r = bench.measure(method, "LSTM", 24, 0.33, "cpu", 1, 0, T=4, B=2)
    assert r["status"] == "ok" and r["path"] == path
