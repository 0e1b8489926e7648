"""SET-MLP: SparseMLP against a float64 dense MLP, the recipe's pieces against small dense or numpy
references (faithful loss, dropout and test-time scaling, duplicates, weight decay outside the
momentum, SET prune per sign, no evolution after the last epoch, importance pruning), bytes per
connection, the ``--model mlp`` command (learning, resume == uninterrupted run, one-line errors). The mlp
ops the recipe runs on (relu_dropout, sgd_step): tests/ops/test_mlp.py."""
import math
import re

import numpy as np
import pytest
import torch

from sparse_engine import cli
from sparse_engine.io.checkpoint import load_checkpoint
from sparse_engine.nn import SparseMLP
from sparse_engine.nn.mlp import _FaithfulDrop, set_mlp_weight
from sparse_engine.runs import ConfigError, TrainConfig, train
from sparse_engine.training import SETMLP, SETSGD, importance_keep
from sparse_engine.testing import assert_bit_equal, check_invariants, entry_keys, set_keep_reference, value_by_key


def dense_forward(model, x, faithful_eval=False):
    """The MLP computed densely in float64 (dropout off)."""
    h = x.double()
    for i, layer in enumerate(model.layers):
        z = h @ layer.weight.to_dense().double().t() + layer.bias.detach().double()
        if faithful_eval and i > 0:
            z = z * (1 - model.dropout)
        if i == len(model.layers) - 1:
            return z
        h = torch.relu(z)


@pytest.mark.parametrize("sizes", [(7, 5, 3), (6, 9, 1, 4), (1, 1)])
@pytest.mark.parametrize("batch", [1, 5])
def test_forward_and_gradients_match_a_dense_mlp(sizes, batch):
    g = torch.Generator().manual_seed(0)
    model = SparseMLP(sizes, epsilon=2, dropout=0.0, generator=g, dtype=torch.float64)
    for layer in model.layers:
        layer.bias.data.normal_(generator=g)
    x = torch.randn(batch, sizes[0], dtype=torch.float64, generator=g)
    y = torch.randint(sizes[-1], (batch,), generator=g)
    out = model(x)
    torch.testing.assert_close(out, dense_forward(model, x))
    model.loss(out, y).backward()
    dense = [layer.weight.to_dense().double().requires_grad_() for layer in model.layers]
    biases = [layer.bias.detach().clone().requires_grad_() for layer in model.layers]
    h = x
    for i, (W, b) in enumerate(zip(dense, biases)):
        h = h @ W.t() + b
        if i < len(dense) - 1:
            h = torch.relu(h)
    torch.nn.functional.cross_entropy(h, y).backward()
    for layer, W, b in zip(model.layers, dense, biases):
        row, col, _ = layer.weight.coo()
        torch.testing.assert_close(layer.weight.values.grad, W.grad[row, col])
        torch.testing.assert_close(layer.bias.grad, b.grad)


def test_gradcheck_through_the_module():
    g = torch.Generator().manual_seed(2)
    model = SparseMLP((5, 4, 3), epsilon=2, dropout=0.0, generator=g, dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    values = model.layers[0].weight.values
    assert torch.autograd.gradcheck(lambda x, v: model(x), (x, values))


def test_non_contiguous_input_and_bad_input():
    model = SparseMLP((6, 4, 3), dropout=0.0, generator=torch.Generator().manual_seed(1))
    x = torch.randn(6, 5).t()  # (5, 6), not contiguous
    torch.testing.assert_close(model(x), model(x.contiguous()))
    with pytest.raises(ValueError, match=r"x must be a \(batch, 6\) tensor"):
        model(torch.randn(5, 7))
    with pytest.raises(ValueError, match="sizes"):
        SparseMLP((6,))
    with pytest.raises(ValueError, match="dropout"):
        SparseMLP((6, 2), dropout=1.0)


def test_default_mode_has_exactly_epsilon_in_plus_out_connections():
    model = SparseMLP((784, 300, 200, 10), epsilon=13, generator=torch.Generator().manual_seed(0))
    expected = [round(13 * (784 + 300)), round(13 * (300 + 200)), min(13 * (200 + 10), 2000)]
    assert [layer.weight.nnz for layer in model.layers] == expected
    for layer in model.layers:
        check_invariants(layer.weight)
        assert float(layer.bias.detach().abs().sum()) == 0.0


def test_faithful_mode_draws_with_replacement_so_duplicates_collapse():
    rows, cols, eps = 30, 20, 5  # 250 draws over 600 positions: many repeats
    w = set_mlp_weight(rows, cols, eps, faithful=True, generator=torch.Generator().manual_seed(3))
    draws = torch.randint(rows * cols, (eps * (rows + cols),), generator=torch.Generator().manual_seed(3))
    assert np.array_equal(entry_keys(w), np.unique(draws.numpy()))
    assert w.nnz < eps * (rows + cols)
    check_invariants(w)
    # values N(0, 0.1^2)
    big = set_mlp_weight(2000, 2000, 20, generator=torch.Generator().manual_seed(4)).values.detach()
    assert abs(float(big.std()) - 0.1) < 0.005 and abs(float(big.mean())) < 0.005


def test_faithful_loss_gradient_is_the_scipy_codes_error():
    g = torch.Generator().manual_seed(5)
    model = SparseMLP((3, 4), faithful=True, generator=g)
    z = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(4, (6,), generator=g)
    loss = model.loss(z, y)
    loss.backward()
    zn, yn = z.detach().numpy(), np.eye(4)[y.numpy()]
    a = 1 / (1 + np.exp(-zn))
    s = 1 / (1 + np.exp(-a))  # that code's Sigmoid.prime applied to the output a
    np.testing.assert_allclose(z.grad.numpy(), (a - yn) * s * (1 - s) / 6, rtol=1e-12)
    np.testing.assert_allclose(float(loss.detach()), np.mean((a - yn) ** 2), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_faithful_dropout_masks_without_rescaling_and_passes_gradients_unmasked(dtype):
    torch.manual_seed(6)
    x = (torch.rand(500, 40, dtype=dtype) + 0.5).requires_grad_()  # all positive: the mask shows in full
    torch.manual_seed(7)
    out = _FaithfulDrop.apply(x, 0.3)
    kept = out.detach() != 0
    assert torch.equal(out.detach()[kept], x.detach()[kept])  # no 1/(1-p)
    assert abs(float((~kept).double().mean()) - 0.3) < 0.01
    torch.manual_seed(7)
    again = _FaithfulDrop.apply(x.detach(), 0.3)
    assert torch.equal(again, out.detach())  # torch.manual_seed fixes the mask
    g = torch.randn(500, 40, dtype=dtype)
    out.backward(g)
    assert torch.equal(x.grad, g)  # dropped units pass their gradient too


def test_faithful_test_time_scaling_and_default_eval_without_it():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(4, 5, dtype=torch.float64, generator=g)
    for faithful in (True, False):
        model = SparseMLP((5, 6, 6, 3), epsilon=3, dropout=0.3, faithful=faithful, generator=g, dtype=torch.float64)
        for layer in model.layers:
            layer.bias.data.normal_(generator=g)
        model.eval()
        torch.testing.assert_close(model(x), dense_forward(model, x, faithful_eval=faithful))
    model.train()  # training: dropout draws, the train output differs from the test output
    assert not torch.equal(model(x), dense_forward(model, x))


def test_inverted_dropout_in_default_mode_keeps_the_mean():
    torch.manual_seed(0)
    model = SparseMLP((1, 2000, 1), epsilon=1000, dropout=0.5)  # dense: 2000 hidden units
    for layer in model.layers:
        layer.weight.values.data.fill_(1.0)
    x = torch.ones(64, 1)
    train_out = model(x).mean().detach()
    model.eval()
    assert abs(float(train_out / model(x).mean().detach()) - 1) < 0.05


def test_setsgd_applies_weight_decay_outside_the_momentum():
    g = torch.Generator().manual_seed(9)
    w0 = torch.randn(5, dtype=torch.float64, generator=g)
    grads = [torch.randn(5, dtype=torch.float64, generator=g) for _ in range(4)]
    p = torch.nn.Parameter(w0.clone())
    opt = SETSGD([p], lr=0.05, momentum=0.9, weight_decay=0.01)
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
    w, pdw = w0.numpy().copy(), None  # the scipy code's update
    for gr in grads:
        pdw = -0.05 * gr.numpy() if pdw is None else 0.9 * pdw - 0.05 * gr.numpy()
        w += pdw - 0.01 * w
    np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12)
    with pytest.raises(ValueError, match="weight_decay"):
        SETSGD([p], weight_decay=1.5)


def _trained_model(sizes=(20, 30, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    model = SparseMLP(sizes, epsilon=4, dropout=0.0, generator=g)
    opt = SETSGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, sizes[0], generator=g), torch.randint(sizes[-1], (16,), generator=g)
    for _ in range(3):
        opt.zero_grad()
        model.loss(model(x), y).backward()
        opt.step()
    return model, opt


def test_evolution_prunes_each_sign_separately_keeps_survivors_and_their_momentum():
    model, opt = _trained_model()
    before = [value_by_key(layer.weight) for layer in model.layers]
    keep = [set_keep_reference(layer.weight.values.detach().numpy(), 0.3) for layer in model.layers]
    kept_keys = [set(entry_keys(layer.weight)[k].tolist()) for layer, k in zip(model.layers, keep)]
    momentum = [dict(zip(entry_keys(layer.weight).tolist(), opt.state[layer.weight.values]["momentum_buffer"].tolist()))
                for layer in model.layers]
    nnz = [layer.weight.nnz for layer in model.layers]
    ctl = SETMLP(model, opt, epochs=3, zeta=0.3, seed=1)
    ctl.end_epoch()
    for i, layer in enumerate(model.layers):
        w = layer.weight
        check_invariants(w, nnz[i])
        after = value_by_key(w)
        buf = dict(zip(entry_keys(w).tolist(), opt.state[w.values]["momentum_buffer"].tolist()))
        survivors = {k for k in after if k in before[i] and after[k] == before[i][k]}
        assert survivors == kept_keys[i]
        assert all(buf[k] == momentum[i][k] for k in survivors)
        assert all(buf[k] == 0.0 for k in after if k not in survivors)
        new = np.array([after[k] for k in after if k not in survivors])
        assert new.size == nnz[i] - len(survivors) and np.all(new != 0)  # N(0, 0.1^2) values, not zeros


def test_no_evolution_after_the_last_epoch():
    model, opt = _trained_model()
    ctl = SETMLP(model, opt, epochs=2, zeta=0.3, seed=1)
    first = [entry_keys(layer.weight) for layer in model.layers]
    ctl.end_epoch()
    second = [entry_keys(layer.weight) for layer in model.layers]
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))
    values = [layer.weight.values.detach().clone() for layer in model.layers]
    ctl.end_epoch()  # the last epoch: the evaluated model is the saved one
    assert all(np.array_equal(a, entry_keys(layer.weight)) for a, layer in zip(second, model.layers))
    assert all(torch.equal(v, layer.weight.values) for v, layer in zip(values, model.layers))
    assert ctl.evolutions == 1


def test_evolve_output_false_leaves_the_output_layer_alone():
    evolved = {}
    for evolve_output in (True, False):
        model, opt = _trained_model()
        before = [(entry_keys(layer.weight), layer.weight.values.detach().clone()) for layer in model.layers]
        ctl = SETMLP(model, opt, epochs=3, zeta=0.3, seed=1, evolve_output=evolve_output)
        ctl.end_epoch()
        evolved[evolve_output] = [not (np.array_equal(k, entry_keys(layer.weight)) and torch.equal(v, layer.weight.values))
                                  for (k, v), layer in zip(before, model.layers)]
        assert ctl.state_dict()["options"]["evolve_output"] is evolve_output
    assert evolved[True] == [True] * len(evolved[True])
    assert evolved[False] == [True] * (len(evolved[False]) - 1) + [False]
    with pytest.raises(ValueError, match="evolve_output must be True or False"):
        SETMLP(model, opt, epochs=3, evolve_output=1)


def test_no_evolve_output_option_reaches_the_controller(monkeypatch):
    seen = []
    real = SETMLP.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.evolve_output)

    monkeypatch.setattr(SETMLP, "__init__", spy)
    cli.run(BASE + ["--epochs", "1", "--no-evolve-output"])
    cli.run(BASE + ["--epochs", "1"])
    assert seen == [False, True]


def test_importance_keep_against_numpy():
    model, _ = _trained_model(sizes=(20, 40, 4))
    w = model.layers[0].weight
    dense = np.abs(w.to_dense().numpy()).sum(1)
    alive = np.nonzero(np.diff(w.row_ptr.numpy()) > 0)[0]
    n = int(0.25 * alive.size)
    expected = np.zeros(w.shape[0], bool)
    expected[alive[np.argsort(dense[alive], kind="stable")[:n]]] = True
    keep, pruned = importance_keep(w, 0.25)
    assert np.array_equal(pruned.numpy(), expected)
    row = np.repeat(np.arange(w.shape[0]), np.diff(w.row_ptr.numpy()))
    assert np.array_equal(keep.numpy(), ~expected[row])


def test_importance_pruning_removes_neurons_with_their_incoming_and_outgoing_connections():
    model, opt = _trained_model(sizes=(20, 40, 4))
    _, pruned = importance_keep(model.layers[0].weight, 0.25)
    ctl = SETMLP(model, opt, epochs=3, zeta=0.0, importance=0.25, seed=1)  # zeta 0: SET changes nothing
    ctl.end_epoch()
    lost = pruned.nonzero().flatten()
    assert lost.numel() == int(0.25 * 40)
    assert int(model.layers[0].weight.row_ptr.diff()[lost].sum()) == 0
    assert not np.isin(model.layers[1].weight.col_idx.numpy(), lost.numpy()).any()
    for layer in model.layers:
        check_invariants(layer.weight)


def test_bytes_per_connection_of_a_trained_network():
    """float32 value 4 + int32 column 4 per connection, and the transposed index (int32 row 4 +
    int32 position 4) only where the backward computes W^T G: not in the first layer, whose
    input (the data) needs no gradient. Plus the row/column pointers (int64, O(neurons))."""
    gen = torch.Generator().manual_seed(0)
    model = SparseMLP((784, 1000, 1000, 10), generator=gen)
    w0 = model.layers[0].weight
    assert sum(t.element_size() for t in (w0.values, w0.col_idx, w0.csc_row, w0.csc_perm)) == 16
    model = SparseMLP((784, 1000, 1000, 10), generator=torch.Generator().manual_seed(0))
    held = lambda: sum(b.numel() * b.element_size() for layer in model.layers  # noqa: E731
                       for b in (layer.weight.values, *layer.weight.buffers()))
    assert held() / model.nnz < 8.5  # as built: no transposed index yet
    x = torch.rand(5, 784, generator=gen)
    model.loss(model(x), torch.arange(5)).backward()
    built = [layer.weight.has_transpose for layer in model.layers]
    assert built == [False, True, True]
    first = model.layers[0].weight.nnz
    assert held() / model.nnz < 9 + 8 * (model.nnz - first) / model.nnz  # + the pointers
    assert held() / model.nnz < 16


# ------------------------------------------------------------------------- the command
BASE = ["train", "--model", "mlp", "--hidden", "64,64", "--task", "digits", "--lr", "0.05", "--batch-size", "40",
        "--algorithm", "set", "--quiet"]


def test_train_mlp_learns_digits():
    """Checked once with --lr 1e-9: test accuracy stays near chance (about 0.1)."""
    row = cli.run(BASE + ["--epochs", "4"])
    assert row["test_acc"] > 0.85
    assert row["nnz"] == sum(round(13 * (a + b)) if 13 * (a + b) < a * b else a * b
                             for a, b in ((64, 64), (64, 64), (64, 10)))


def test_train_mlp_faithful_and_a_table_file(tmp_path):
    g = np.random.default_rng(0)
    X = g.normal(size=(300, 5))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    path = tmp_path / "t.csv"
    with open(path, "w") as f:
        f.write("a,b,label,c,d,e\n")
        for r, lab in zip(X, y):
            f.write(f"{r[0]},{r[1]},{lab},{r[2]},{r[3]},{r[4]}\n")
    row = cli.run(["train", "--model", "mlp", "--hidden", "32", "--task", "table", "--data-file", str(path),
                   "--label-column", "label", "--lr", "0.05", "--batch-size", "20", "--epochs", "8", "--quiet",
                   "--algorithm", "set"])
    assert row["test_acc"] > 0.85
    np.savez(tmp_path / "t.npz", X=X, target=(X[:, 0] > 0).astype(int))
    row = cli.run(["train", "--model", "mlp", "--hidden", "32", "--task", "table", "--data", str(tmp_path / "t.npz"),
                   "--label-column", "target", "--lr", "0.05", "--epochs", "2", "--quiet", "--faithful"])
    assert 0.0 <= row["test_loss"] < 0.5 and row["nnz"] < 13 * (5 + 32) + 13 * (32 + 2)  # MSE; duplicates collapsed


def test_resumed_mlp_run_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    opts = BASE + ["--epochs", "3", "--dropout", "0.2"]
    ref = tmp_path / "ref.pt"
    cli.run(opts + ["--save", str(ref)])
    real, calls = SETSGD.step, [0]

    def step_or_raise(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 50:  # epoch 2 (36 batches an epoch)
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SETSGD, "step", step_or_raise)
    ck = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        cli.run(opts + ["--save", str(ck), "--checkpoint-every", "7"])
    monkeypatch.setattr(SETSGD, "step", real)
    cli.run(opts + ["--resume", str(ck)])
    a, b = load_checkpoint(ck), load_checkpoint(ref)
    for key in ("model", "optimizer"):
        assert_bit_equal(a[key], b[key], key)
    assert_bit_equal(a["extra"]["history"], b["extra"]["history"], "history")
    assert_bit_equal(a["extra"]["resume"], b["extra"]["resume"], "resume")
    with pytest.raises(cli.CommandError, match="argument --zeta: 0.1 differs from the checkpoint's --zeta 0.3"):
        cli.run(opts + ["--resume", str(ck), "--zeta", "0.1"])


@pytest.mark.parametrize("argv, message", [
    (["--model", "lstm", "--hidden", "8,8"], "argument --hidden: a list of layer sizes needs --model mlp"),
    (["--model", "mlp", "--hidden", "8,x"], "argument --hidden: expected an integer or integers"),
    (["--model", "mlp", "--task", "sms", "--data", "x"], "argument --task: model 'mlp' trains on"),
    (["--model", "mlp", "--algorithm", "rigl"], "argument --algorithm: model 'mlp' trains with none or set"),
    (["--model", "mlp", "--task", "table", "--data", "x.csv"], "argument --label-column: task 'table' needs"),
    (["--model", "mlp", "--label-column", "y"], "argument --label-column: names the label column"),
    (["--model", "lstm", "--task", "table", "--data", "x.csv", "--label-column", "y"],
     r"argument --task: task 'table' \(a feature matrix\) needs --model mlp"),
    (["--model", "mlp", "--zeta", "1.5"], r"argument --zeta: expected a number in \[0, 1\]"),
    (["--model", "mlp", "--dropout", "1"], r"argument --dropout: expected a number in \[0, 1\)"),
    (["--model", "mlp", "--epsilon", "0"], "argument --epsilon: expected a finite number > 0"),
    (["--model", "gru", "--faithful"], "argument --faithful: applies to --model mlp only, got --model gru"),
    (["--model", "mlp", "--importance", "0.1"], "argument --importance: prunes neurons when SET evolves"),
    (["--model", "lstm", "--no-evolve-output"], "argument --no-evolve-output: applies to --model mlp only"),
    (["--model", "mlp", "--density", "0.01"], "argument --density: model 'mlp' sets its density with --epsilon"),
    (["--model", "mlp", "--sparse", "recurrent"], "argument --sparse: model 'mlp' has no recurrent or input matrix"),
    (["--model", "mlp", "--layers", "2"], r"argument --layers: model 'mlp' takes its layers from --hidden"),
])
def test_mlp_option_errors_are_one_line(argv, message, capsys):
    assert cli.main(["train", "--quiet"] + argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sparse-engine: error: ")
    assert re.search(message, err), err


def test_unreadable_table_files_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    base = ["train", "--quiet", "--model", "mlp", "--task", "table", "--label-column", "y", "--data", str(bad)]
    assert cli.main(base) == cli.EXIT_FAILED
    assert "has no column 'y'" in capsys.readouterr().err
    bad.write_text("a,y\n1,2\nx,3\n")
    assert cli.main(base) == cli.EXIT_FAILED
    assert "bad.csv:3: expected finite numbers" in capsys.readouterr().err
    assert cli.main(base[:-1] + [str(tmp_path / "missing.csv")]) == cli.EXIT_FAILED
    assert "does not exist" in capsys.readouterr().err


def test_python_api_runs_the_same_recipe():
    cfg = TrainConfig(model="mlp", hidden=(32,), task="digits", epochs=1, quiet=True, lr=0.05, batch_size=40)
    result = train(cfg)
    assert isinstance(result.model, SparseMLP) and result.model.sizes == (64, 32, 10)
    with pytest.raises(ConfigError):
        TrainConfig(model="mlp", hidden=(32, 0))
    assert math.isfinite(result.last["test_loss"])
