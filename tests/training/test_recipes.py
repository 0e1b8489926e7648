"""Published recipes (``sparse-engine train --recipe``): each builds the set-up of its paper's
public code (Zhang et al.'s scripts, numbers read off MNIST/, SMS/, Gesture/, Mackey_Glass/), runs
from one command, and ends with the published number beside ours."""
import math
import shutil

import pytest
import torch

from sparse_engine import cli
from sparse_engine.models import SequenceModel
from sparse_engine.runs import ConfigError, TrainConfig, recipe_config, train
from sparse_engine.training import SET, DeepR, GradualMagnitudePruning, sparse_weights
from sparse_engine.training.recipes import RECIPES, get_recipe, make_recipe_controller, zhang_init

# (hidden, batch, lr, epochs, zeta, deepr l1, deepr noise) from each script's get_default_hp and __main__
ZHANG = {
    "mnist": (150, 128, {"prune": 1e-3, "set": 1e-3, "deepr": 1e-3}, 201, 0.2, 1e-5, 1e-5),
    "sms": (100, 128, {"prune": 5e-4, "set": 5e-4, "deepr": 5e-4}, 101, 0.1, 1e-5, 1e-6),
    "gesture": (128, 32, {"prune": 5e-3, "set": 1e-2, "deepr": 1e-2}, 201, 0.1, 1e-3, 1e-3),
    "mackey-glass": (128, 12, {"prune": 1e-3, "set": 2e-3, "deepr": 2e-3}, 101, 0.2, 1e-5, 1e-5),
}


def test_every_zhang_task_has_prune_set_and_deepr_recipes_with_the_codes_settings():
    assert len(RECIPES) == 12
    for task, (hidden, batch, lr, epochs, *_rest) in ZHANG.items():
        for kind in ("prune", "set", "deepr"):
            r = get_recipe(f"zhang-{task}-{kind}")
            t = r.train
            assert (t["task"], t["model"], t["hidden"], t["batch_size"], t["epochs"]) == (task, "rnn", hidden, batch,
                                                                                         epochs)
            assert t["lr"] == lr[kind] and t["sparse"] == "recurrent"  # only the recurrent matrix is sparse
            assert t["density"] == (1.0 if kind == "prune" else 0.05)
            assert "sparse-RNNs" in r.source and r.published[0] in ("test_acc", "test_loss")
            TrainConfig(**t, data="given")  # every field valid
    with pytest.raises(ValueError, match="recipe must be one of"):
        get_recipe("zhang-cifar-prune")


def controller(name, batches, epochs=None):
    r = get_recipe(name)
    t = r.train
    torch.manual_seed(0)
    model = SequenceModel("rnn", 4, 2, t["hidden"], 1, t["density"], "recurrent", "classify")
    zhang_init(model, 0)
    opt = torch.optim.Adam(model.parameters(), lr=t["lr"])
    return model, make_recipe_controller(r, model, opt, batches, epochs or t["epochs"], 0, [])


def test_zhang_pruning_schedules_in_the_codes_units():
    # MNIST: Narang et al. once an epoch of 50 batches; start after 1 epoch, ramp round(0.25 * 201) = 50,
    # end round(0.5 * 201) = 100 (Python rounds 100.5 to 100), each one epoch later in our count
    _, c = controller("zhang-mnist-prune", batches=50)
    assert isinstance(c, GradualMagnitudePruning) and c.schedule == "narang" and c.requantile
    assert (c.start_step, c.ramp_step, c.end_step, c.frequency) == (2 * 50, 51 * 50, 101 * 50, 50)
    assert c.final_density == 0.05 and c.initial == {"rnn.weight_hh_l0": 1.0}
    # SMS: Zhu & Gupta from epoch 5 to epoch round(101 / 2) = 50, once an epoch, one later in our count
    _, c = controller("zhang-sms-prune", batches=35)
    assert c.schedule == "cubic" and (c.start_step, c.end_step, c.frequency) == (6 * 35, 51 * 35, 35)
    _, c = controller("zhang-gesture-prune", batches=10)
    assert c.schedule == "cubic" and (c.start_step, c.end_step) == (60, 1010)
    _, c = controller("zhang-mackey-glass-prune", batches=60)
    assert c.schedule == "narang" and (c.start_step, c.ramp_step, c.end_step) == (2 * 60, 26 * 60, 51 * 60)


def test_mnist_and_sms_prune_as_the_code_after_each_of_its_epochs():
    from sparse_engine.training.schedules import narang_threshold

    # SMS_pruning.py (Pruning_2), after its 0-based epoch e (5 <= e <= 50): keep s_t = 0.05 + 0.95 (1 - (e - 5) / 45)^3
    _, c = controller("zhang-sms-prune", batches=35)
    for e in (5, 6, 20, 49, 50):
        assert c.target_density("rnn.weight_hh_l0", (e + 1) * 35) == pytest.approx(
            0.05 + 0.95 * (1 - (e - 5) / 45) ** 3, abs=1e-12)
    # MNIST_pruning.py (Pruning_1), after its epoch e (1 < e < 100), display_step 50: threshold from
    # current_itr = e * 50, start 50, ramp round(0.25 * 201) * 50, end round(0.5 * 201) * 50
    _, c = controller("zhang-mnist-prune", batches=50)
    q, f = 0.3, 50
    ramp, end = 50 * f, 100 * f
    theta = 2 * q * f / (2 * (ramp - f) + 3 * (end - ramp))
    for e in (2, 30, 49, 50, 99):
        itr = e * f
        code = (theta * (itr - f + 1) / f if itr < ramp
                else (theta * (ramp - f + 1) + 1.5 * theta * (itr - ramp + 1)) / f)
        ours = narang_threshold((e + 1) * f, q, c.start_step, c.ramp_step, c.end_step, c.frequency)
        assert ours == pytest.approx(code, rel=1e-12)


def test_gesture_and_mackey_glass_prune_as_the_code_after_each_of_its_epochs():
    from sparse_engine.training.schedules import narang_threshold

    # Gesture_pruning.py, after its 0-based epoch e (5 < e < 100): keep the fraction
    # s_t = 0.05 + 0.95 (1 - (e - 5) / 95)^3 of W_rec; that is our schedule after our epoch e + 1
    _, c = controller("zhang-gesture-prune", batches=14)
    for e in (6, 30, 77, 99):
        assert c.target_density("rnn.weight_hh_l0", (e + 1) * 14) == pytest.approx(
            0.05 + 0.95 * (1 - (e - 5) / 95) ** 3, abs=1e-12)
    # MG_pruning.py (Narang), after its epoch e (1 < e < 50), 6 batches x 10 passes = 60 iterations an
    # epoch: threshold from current_itr = e * 60, start 60, ramp 25 * 60, end 50 * 60
    _, c = controller("zhang-mackey-glass-prune", batches=60)
    q, f = 0.7, 60
    theta = 2 * q * f / (2 * (25 * f - f) + 3 * (50 * f - 25 * f))
    for e in (2, 10, 24, 25, 49):
        itr = e * f
        code = (theta * (itr - f + 1) / f if itr < 25 * f
                else (theta * (25 * f - f + 1) + 1.5 * theta * (itr - 25 * f + 1)) / f)
        ours = narang_threshold((e + 1) * f, q, c.start_step, c.ramp_step, c.end_step, c.frequency)
        assert ours == pytest.approx(code, rel=1e-12)


def test_a_new_adam_where_the_code_rebuilds_its_graph():
    # pruning scripts: a new Adam after the epochs that pruned (0-based 5 < e < 100 for Gesture,
    # 1 < e < 50 for Mackey-Glass, 1 < e < 100 for MNIST, 5 <= e <= 50 for SMS); rewiring scripts:
    # after every epoch
    assert [e for e in range(1, 202) if get_recipe("zhang-mnist-prune").fresh_optimizer(e, 201)] == list(range(3, 101))
    assert [e for e in range(1, 102) if get_recipe("zhang-sms-prune").fresh_optimizer(e, 101)] == list(range(6, 52))
    g = get_recipe("zhang-gesture-prune")
    assert [e for e in range(1, 202) if g.fresh_optimizer(e, 201)] == list(range(7, 101))
    m = get_recipe("zhang-mackey-glass-prune")
    assert [e for e in range(1, 102) if m.fresh_optimizer(e, 101)] == list(range(3, 51))
    for task in ZHANG:
        for kind in ("set", "deepr"):
            assert [e for e in range(1, 6) if get_recipe(f"zhang-{task}-{kind}").fresh_optimizer(e, 5)] == [1, 2, 3, 4]


def test_zhang_rewiring_recipes():
    for task, (*_, zeta, l1, noise) in ZHANG.items():
        model, c = controller(f"zhang-{task}-set", batches=7)
        assert isinstance(c, SET) and c.zeta == zeta and c.init == "zero"
        assert c.rewire_every == "epoch"  # the code's epoch: 50 batches for MNIST
        model, c = controller(f"zhang-{task}-deepr", batches=7)
        assert isinstance(c, DeepR) and c.rule == "zhang" and (c.l1, c.noise) == (l1, noise)
        w = sparse_weights(model)["rnn.weight_hh_l0"]
        assert abs(w.density - 0.05) < 0.01


def test_zhang_init_is_normal_over_fan_in():
    torch.manual_seed(0)
    model = SequenceModel("rnn", 28, 10, 150, 1, 1.0, "recurrent", "classify")
    zhang_init(model, 3)
    w_hh = model.rnn.weight_hh_l0.values.detach()
    w_ih = model.rnn.weight_ih_l0.detach()
    assert float(w_hh.std()) == pytest.approx(150 ** -0.5, rel=0.03)  # 22,500 draws
    assert float(w_ih.std()) == pytest.approx(28 ** -0.5, rel=0.05)
    assert abs(float(w_hh.mean())) < 0.003


def test_zhang_init_of_the_gesture_and_mackey_glass_scripts():
    for name, n_in, n_out, std in (("zhang-gesture-set", 32, 5, 1.0), ("zhang-mackey-glass-set", 1, 50, None)):
        r = get_recipe(name)
        assert r.variant == "zhang" and r.clip_value == 1.0
        torch.manual_seed(0)
        model = SequenceModel("rnn", n_in, n_out, 128, 1, 0.05, "recurrent", "classify")
        zhang_init(model, 1, **r.init)
        w_ih = model.rnn.weight_ih_l0.detach()
        assert float(w_ih.std()) == pytest.approx(1.0, rel=0.1)  # N(0, 1), not over fan-in
        assert all(float(b.detach().abs().max()) == 0 for n, b in model.rnn.named_parameters() if n.startswith("bias"))
        w = model.readout.weight.detach()
        assert float(model.readout.bias.detach().abs().max()) == 0
        if std is not None:  # tf.random_normal_initializer: N(0, 1)
            assert float(w.std()) == pytest.approx(std, rel=0.15)
        else:  # Glorot-uniform: U(-b, b), b = sqrt(6 / (128 + 50))
            b = (6 / (128 + 50)) ** 0.5
            assert float(w.abs().max()) <= b and float(w.abs().max()) > 0.9 * b


def test_zhang_init_of_the_mnist_and_sms_scripts():
    # MNIST: W_in N(0, 1/28), readout N(0, 1) and bias 0; SMS: W_in N(0, 1/50), readout
    # tf.truncated_normal_initializer(stddev=0.1) (redrawn beyond 0.2: deviation 0.1 * 0.8796), bias 0.1,
    # embedding U(-1, 1) for every id, 0 included (its unknown words and padding), trained
    for name, n_in, n_out, vocab in (("zhang-mnist-set", 28, 10, None), ("zhang-sms-set", 50, 2, 900)):
        r = get_recipe(name)
        assert r.variant == "zhang" and r.clip_value == 1.0
        torch.manual_seed(0)
        model = SequenceModel("rnn", n_in, n_out, 150, 1, 0.05, "recurrent", "classify", vocab)
        zhang_init(model, 2, **r.init)
        assert float(model.rnn.weight_ih_l0.detach().std()) == pytest.approx(n_in ** -0.5, rel=0.1)
        assert all(float(b.detach().abs().max()) == 0 for n, b in model.rnn.named_parameters() if n.startswith("bias"))
        w, b = model.readout.weight.detach(), model.readout.bias.detach()
        if vocab is None:
            assert float(w.std()) == pytest.approx(1.0, rel=0.15) and float(b.abs().max()) == 0
            assert not r.softmax_loss
            continue
        assert float(w.abs().max()) <= 0.2 and float(w.std()) == pytest.approx(0.1 * 0.8796, rel=0.15)
        assert torch.equal(b, torch.full((2,), 0.1))
        e = model.embed.weight.detach()
        assert model.embed.padding_idx is None and float(e.abs().max()) <= 1 and float(e.std()) == pytest.approx(
            3 ** -0.5, rel=0.05)
        model(torch.zeros(3, 25, dtype=torch.int64)).sum().backward()
        assert float(model.embed.weight.grad[0].abs().sum()) > 0  # id 0 trains, as in the code
        assert r.softmax_loss


def test_sms_softmax_twice_loss():
    from sparse_engine.runs import softmax_score_loss

    out, y = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]]), torch.tensor([0, 1, 0])
    p = [[e / sum(map(math.exp, r)) for e in map(math.exp, r)] for r in out.tolist()]
    expected = sum(-math.log(math.exp(pr[t]) / sum(math.exp(v) for v in pr)) for pr, t in zip(p, y.tolist())) / 3
    assert softmax_score_loss(out, y).item() == pytest.approx(expected, rel=1e-6)


def _vocabulary_processor(texts, max_length, min_frequency):
    """tf.contrib.learn's VocabularyProcessor as SMS_preprocess.py uses it, rebuilt from its rules on
    texts its clean_text has cleaned: CategoricalVocabulary counts every token; trim() sorts by
    word, then by count descending, and maps words from id 1 until a count <= min_frequency; id 0
    is "<UNK>"; transform writes the first max_length ids after zeros."""
    freq = {}
    for t in texts:
        for tok in t.split():
            freq[tok] = freq.get(tok, 0) + 1
    mapping = {}
    for word, count in sorted(sorted(freq.items(), key=lambda x: x[0]), key=lambda x: x[1], reverse=True):
        if count <= min_frequency:
            break
        mapping[word] = len(mapping) + 1
    rows = []
    for t in texts:
        ids = [0] * max_length
        for i, tok in enumerate(t.split()[:max_length]):
            ids[i] = mapping.get(tok, 0)
        rows.append(ids)
    return rows, len(mapping) + 1


def test_zhang_sms_vocabulary_as_the_codes_vocabulary_processor(shared_data):
    import re
    from sparse_engine.data.files import load_sms_spam
    from sparse_engine.data.tasks import ZHANG_SMS, _word_ids

    texts, _ = load_sms_spam(shared_data("sms_spam", "SMSSpamCollection"))
    # the code's copy of the file is ASCII (it dropped other characters), then its clean_text
    cleaned = [" ".join(re.sub(r"([^\s\w]|_|[0-9])+", "", t.encode("ascii", "ignore").decode()).split()).lower()
               for t in texts]
    rows, size = _vocabulary_processor(cleaned, 25, 10)
    ids, vocab = _word_ids(texts, **ZHANG_SMS)
    assert vocab == size and ids.tolist() == rows
    # hand-computed: "b" twice, "a" twice, "c" once; min count 2 -> a=1, b=2 (ties alphabetically); c and padding 0
    ids, vocab = _word_ids(["b a c", "a b"], length=4, min_count=2, clean=True, pad="post", unknown_is_padding=True)
    assert ids.tolist() == [[2, 1, 0, 0], [1, 2, 0, 0]] and vocab == 3


def test_zhang_mnist_split_and_fifty_batch_epochs(tmp_path, shared_data):
    from sparse_engine.data.files import load_mnist
    from sparse_engine.data.tasks import load_task

    d = tmp_path / "mnist"
    d.mkdir()
    for k in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        shutil.copy(shared_data("mnist_test", f"t10k-{k}.gz"), d / f"t10k-{k}.gz")
    X, y = load_mnist(d)
    # test set only: the code's 500 test images test, the other 9,500 train
    (Xtr, ytr), (Xte, yte), meta = load_task("mnist", str(d), 0, variant="zhang")
    assert torch.equal(Xte, X[:500]) and torch.equal(yte, y[:500]) and torch.equal(Xtr, X[500:])
    assert meta["epoch_batches"] == 50 and float(Xtr.max()) == 1.0 and float(Xtr.min()) == 0.0
    for k in ("images-idx3-ubyte", "labels-idx1-ubyte"):  # stands in for the training files
        shutil.copy(shared_data("mnist_test", f"t10k-{k}.gz"), d / f"train-{k}.gz")
    (Xtr, _), (Xte, _), _ = load_task("mnist", str(d), 0, variant="zhang")
    assert len(Xtr) == 10000 and len(Xte) == 500  # the first 55,000 training images (here all 10,000)


def test_epochs_of_a_fixed_number_of_batches_run_on_across_shuffled_passes():
    from types import SimpleNamespace
    from sparse_engine.runs.resume import TrainProgress

    # 7 examples, batches of 2, epochs of 3 batches: 6 indices an epoch, the passes (7 each) run on
    cfg = SimpleNamespace(batch_size=2, checkpoint_every=0, save=None)
    p = TrainProgress(cfg, None, None, None, None, "cpu", 7, epoch_batches=3)
    torch.manual_seed(5)
    seen = []
    for epoch in range(1, 8):
        order, _ = p.begin_epoch(epoch)
        assert [len(b) for b in order] == [2, 2, 2]
        seen += torch.cat(order).tolist()
        p.end_epoch({})
    assert len(seen) == 42
    torch.manual_seed(5)
    passes = torch.cat([torch.randperm(7) for _ in range(6)]).tolist()
    assert seen == passes  # 6 whole passes, each a permutation of the 7 examples, cut into epochs


def test_mnist_recipe_trains_fifty_batches_an_epoch(shared_data):
    d = shared_data("mnist_test")
    res = train(recipe="zhang-mnist-set", data=str(d), epochs=1, hidden=8, quiet=True)
    assert res.history[0]["density"] == pytest.approx(0.05, abs=0.02)
    assert res.history[0]["train_loss"] > 0


def test_zhang_gesture_split_as_the_code(shared_data):
    import csv

    import numpy as np
    from sparse_engine.data.tasks import load_task

    d = shared_data("gesture")
    (Xtr, ytr), (Xte, yte), meta = load_task("gesture", str(d), 0, variant="zhang")
    # written out independently: every file's 32-frame sequences and the ones half-way, in the code's order
    order = ["a3", "b1", "b3", "c1", "c3", "a2", "a1"]
    seqs = []
    for name in order:
        with open(d / f"{name}_va3.csv") as fh:
            rows = list(csv.reader(fh))[1:]
        x = np.array([[float(v) for v in r[:-1]] for r in rows])
        y = np.array(["DPSHR".index(r[-1].strip()) for r in rows])
        n = len(x) // 32
        for s in range(n):
            seqs.append((x[32 * s:32 * s + 32], y[32 * s:32 * s + 32]))
            if s < n - 1:
                seqs.append((x[32 * s + 16:32 * s + 48], y[32 * s + 16:32 * s + 48]))
    allx = np.stack([x for x, _ in seqs])
    mean, std = allx.reshape(-1, 32).mean(0), allx.reshape(-1, 32).std(0)
    perm = np.random.RandomState(23489).permutation(len(seqs))
    assert len(seqs) == 605 and (len(Xtr), len(Xte)) == (605 - 60 - 90, 90)
    for ours_x, ours_y, k in ((Xtr[0], ytr[0], perm[150]), (Xte[5], yte[5], perm[65]), (Xtr[-1], ytr[-1], perm[-1])):
        np.testing.assert_allclose(ours_x.numpy(), (seqs[k][0] - mean) / std, rtol=1e-5, atol=1e-5)
        assert ours_y.tolist() == seqs[k][1].tolist()
    assert meta["readout"] == "steps" and meta["drop_last"] and ytr.shape == (455, 32)


def test_zhang_mackey_glass_windows_as_the_code(tmp_path):
    from sparse_engine.data.tasks import load_task

    f = tmp_path / "mg.txt"
    f.write_text("\n".join(str(i) for i in range(10000)))
    (Xtr, ytr), (Xte, yte), meta = load_task("mackey-glass", str(f), 0, variant="zhang")
    # train: the first 8,000 values in 12 rows of 666 (one 500 + 50 window each), ten passes; test: the
    # last 2,000 as one row, three windows
    assert Xtr.shape == (120, 500, 1) and ytr.shape == (120, 50) and Xte.shape == (3, 500, 1)
    for r in (0, 7, 11):
        assert Xtr[r, :, 0].tolist() == list(range(666 * r, 666 * r + 500))
        assert ytr[r].tolist() == list(range(666 * r + 500, 666 * r + 550))
        assert torch.equal(Xtr[r + 12 * 9], Xtr[r])
    assert Xte[2, :, 0].tolist() == list(range(9000, 9500)) and yte[2].tolist() == list(range(9500, 9550))
    assert meta["readout"] == "last" and meta["shuffle"] is False and meta["n_out"] == 50
    f.write_text("\n".join(str(i) for i in range(5000)))
    with pytest.raises(ValueError, match="too short"):
        load_task("mackey-glass", str(f), 0, variant="zhang")


def test_per_step_classification_and_last_state_regression():
    from sparse_engine.runs import evaluate, sequence_loss

    torch.manual_seed(0)
    m = SequenceModel("rnn", 3, 4, 6, 1, 0.5, "recurrent", "classify", readout="steps")
    x, y = torch.randn(5, 7, 3), torch.randint(0, 4, (5, 7))
    out = m(x)
    assert out.shape == (5, 7, 4)
    flat = torch.nn.functional.cross_entropy(out.reshape(35, 4), y.reshape(35))
    assert sequence_loss(out, y).item() == pytest.approx(flat.item(), rel=1e-6)
    loss, acc = evaluate(m, x, y, "classify", batch=2)  # means over all 35 steps
    assert loss == pytest.approx(flat.item(), rel=1e-5)
    assert acc == pytest.approx((out.argmax(-1) == y).float().mean().item())
    r = SequenceModel("rnn", 1, 50, 6, 1, 0.5, "recurrent", "regress", readout="last")
    xr, yr = torch.randn(4, 9, 1), torch.randn(4, 50)
    assert r(xr).shape == (4, 50)
    loss, _ = evaluate(r, xr, yr, "regress", batch=3)
    assert loss == pytest.approx(torch.nn.functional.mse_loss(r(xr), yr).item(), rel=1e-5)
    with pytest.raises(ValueError, match="readout"):
        SequenceModel("rnn", 1, 1, 2, 1, 0.5, "recurrent", "regress", readout="first")


def test_recipe_runs_from_one_command_and_prints_the_published_number(capsys):
    argv = ["train", "--recipe", "zhang-mackey-glass-set", "--epochs", "2", "--hidden", "8"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    line = [s for s in out.splitlines() if s.startswith("zhang-mackey-glass-set:")]
    assert len(line) == 1
    assert "ours test_loss" in line[0] and "published n/a" in line[0] and "after 2 of the recipe's 101 epochs" in line[0]
    assert "MG_rewiring.py" in line[0]


def test_recipe_config_overrides_and_conflicts():
    cfg = recipe_config("zhang-sms-prune", data="x", epochs=3)
    assert (cfg.task, cfg.hidden, cfg.lr, cfg.epochs, cfg.recipe) == ("sms", 100, 5e-4, 3, "zhang-sms-prune")
    with pytest.raises(ConfigError, match="algorithm"):
        recipe_config("zhang-sms-prune", data="x", algorithm="set")
    with pytest.raises(ConfigError, match="recipe"):
        recipe_config("zhang-sms-lottery")


def test_recipe_bad_arguments_are_one_line(capsys):
    assert cli.main(["train", "--recipe", "zhang-mnist-prune"]) == 2  # mnist needs --data
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0]
    assert cli.main(["train", "--recipe", "zhang-sms-prune", "--data", "x", "--algorithm", "set"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--algorithm" in err[0] and "'gmp'" in err[0]
    assert cli.main(["train", "--recipe", "nope"]) == 2


def test_pruning_recipe_reaches_its_density_and_learns():
    # a reduced budget on the bundled-free Mackey-Glass series: the schedule is compressed into 6 epochs
    res = train(recipe="zhang-mackey-glass-prune", epochs=3, hidden=16, quiet=True, seed=1)
    w = sparse_weights(res.model)["rnn.weight_hh_l0"]
    assert 0.03 <= w.density <= 0.08  # dense at the start, about 0.05 at the end
    untrained = train(recipe="zhang-mackey-glass-prune", epochs=3, hidden=16, quiet=True, seed=1, lr=1e-12)
    assert res.last["test_loss"] < 0.5 * untrained.last["test_loss"]


def test_mnist_task_uses_the_standard_split_when_the_training_files_are_there(tmp_path, shared_data):
    from sparse_engine.data.tasks import load_task

    d = tmp_path / "mnist"
    d.mkdir()
    for k in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        shutil.copy(shared_data("mnist_test", f"t10k-{k}.gz"), d / f"t10k-{k}.gz")
    (Xtr, _), (Xte, _), _ = load_task("mnist", str(d), 0)
    assert (len(Xtr), len(Xte)) == (8000, 2000)  # the test set alone, split 80/20
    for k in ("images-idx3-ubyte", "labels-idx1-ubyte"):  # stands in for the training files
        shutil.copy(shared_data("mnist_test", f"t10k-{k}.gz"), d / f"train-{k}.gz")
    (Xtr, _), (Xte, _), _ = load_task("mnist", str(d), 0)
    assert (len(Xtr), len(Xte)) == (10000, 10000)


def test_selfish_runs_evaluate_on_the_nt_asgd_averages(monkeypatch):
    import sparse_engine.runs.train_run as runs
    from sparse_engine.training import SelfishRNN

    made, seen = [], []

    def controller(name, model, opt, steps, seed, callbacks):
        ctl = SelfishRNN(model, opt, total_steps=steps, seed=seed, callbacks=callbacks)
        ctl.start_averaging()  # as if the non-monotone trigger had fired
        made.append(ctl)
        return ctl

    real_evaluate = runs.evaluate

    def evaluate(model, *args, **kw):
        ctl = made[0]
        seen.append(all(torch.equal(w.values.detach(), ctl.averager.averages(n)) for n, w in ctl.weights.items()))
        return real_evaluate(model, *args, **kw)

    monkeypatch.setattr(runs, "make_controller", controller)
    monkeypatch.setattr(runs, "evaluate", evaluate)
    train(task="digits", model="rnn", hidden=16, epochs=1, algorithm="selfish", quiet=True)
    assert seen[0]  # the weights evaluated are the averages
    w = next(iter(made[0].weights.values()))
    assert not torch.equal(w.values.detach(), made[0].averager.averages(next(iter(made[0].weights))))  # restored


def test_a_recipe_run_resumes_only_as_that_recipe(tmp_path):
    ck = tmp_path / "ck.pt"
    first = train(recipe="zhang-mackey-glass-set", epochs=1, hidden=8, save=str(ck), quiet=True)
    with pytest.raises(ValueError, match="recipe: zhang-mackey-glass-prune differs from the checkpoint's --recipe zhang-mackey-glass-set"):  # another recipe
        train(recipe="zhang-mackey-glass-prune", hidden=8, epochs=2, resume=str(ck), quiet=True)
    # the checkpoint knows its recipe and options: named or not, the run goes on as that recipe
    again = train(epochs=2, resume=str(ck), quiet=True)
    assert again.history[0]["test_loss"] == first.history[0]["test_loss"] and len(again.history) == 2


def test_zhang_sms_preprocessing_hand_computed(shared_data):
    from sparse_engine.data.tasks import _word_ids, load_task

    # punctuation, underscores and digits dropped, lower case; words seen >= 2 times; the first 3, padded after
    ids, vocab = _word_ids(["Hi, you! 42 you_too", "you you"], length=3, min_count=2, clean=True, pad="post")
    assert ids.tolist() == [[1, 2, 1], [2, 2, 0]] and vocab == 3  # 0 pad, 1 unknown, 2 "you"
    assert all(get_recipe(f"zhang-sms-{k}").variant == "zhang" for k in ("prune", "set", "deepr"))
    (X, _), _, meta = load_task("sms", str(shared_data("sms_spam", "SMSSpamCollection")), 0, variant="zhang")
    assert X.shape[1] == 25 and 500 < meta["vocab"] < 2000
    with pytest.raises(ValueError, match="variant"):
        load_task("digits", None, 0, variant="zhang")


def test_a_published_number_prints_beside_ours_and_none_is_made_up():
    import dataclasses
    from sparse_engine.runs import recipe_summary
    r = get_recipe("zhang-sms-set")
    last = {"test_acc": 0.97654, "density": 0.05}
    with_number = dataclasses.replace(r, published=("test_acc", 0.9812, "paper, Table 9 (made up for this test)"))
    line = recipe_summary(with_number, last, r.train["epochs"])
    assert line.startswith("zhang-sms-set: ours test_acc 0.9765 at density 0.0500; published 0.9812 (paper, Table 9")
    assert "after" not in line and "SMS_rewiring.py" in line
    # no number was found for any Zhang recipe: each says n/a and why, never a value without a source
    for rec in RECIPES.values():
        metric, value, where = rec.published
        assert value is None and "no published number found" in where
        assert "published n/a (no published number found" in recipe_summary(rec, {metric: 0.5, "density": 0.05}, 1)


def test_a_run_of_fifty_batch_epochs_resumes_bit_exactly(tmp_path, monkeypatch, shared_data, interrupt_at):
    # the pass running on across epochs is part of the saved state: a run stopped in epoch 3 (its
    # last checkpoint inside epoch 2 or 3) and resumed ends as the run made in one go

    d = str(shared_data("mnist_test"))
    opts = dict(recipe="zhang-mnist-set", data=d, epochs=4, hidden=8, quiet=True)
    whole = train(**opts)
    ck = tmp_path / "ck.pt"
    restore = interrupt_at(monkeypatch, 130, KeyboardInterrupt())  # step 130: epoch 3 of 50-batch epochs
    with pytest.raises(KeyboardInterrupt):
        train(**opts, save=str(ck), checkpoint_every=30)
    restore()
    again = train(**opts, resume=str(ck))
    assert again.history == whole.history
