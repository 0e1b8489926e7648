"""Published recipes (``sparse-engine train --recipe``): each builds the set-up of its paper's
public code (Zhang et al.'s scripts, numbers read off MNIST/, SMS/, Gesture/, Mackey_Glass/), runs
from one command, and ends with the published number beside ours."""
import shutil

import pytest
import torch

from sparse_engine import cli
from sparse_engine.models import SequenceModel
from sparse_engine.runs import ConfigError, TrainConfig, recipe_config, train
from sparse_engine.training import SET, DeepR, GradualMagnitudePruning, sparse_weights
from sparse_engine.training.recipes import RECIPES, get_recipe, make_recipe_controller, zhang_init
from _paths import DATA

# (hidden, batch, lr, epochs, zeta, deepr l1, deepr noise) from each script's get_default_hp and __main__
ZHANG = {
    "mnist": (150, 128, {"prune": 1e-3, "set": 1e-3, "deepr": 1e-3}, 21, 0.2, 1e-5, 1e-5),
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
    # MNIST: Narang et al. in units of 50 batches: 469 batches x 21 epochs = 196 units; start 1 unit,
    # ramp round(0.25 * 196) = 49 units, end round(0.5 * 196) = 98 units, q recomputed at each update
    _, c = controller("zhang-mnist-prune", batches=469)
    assert isinstance(c, GradualMagnitudePruning) and c.schedule == "narang" and c.requantile
    assert (c.start_step, c.ramp_step, c.end_step, c.frequency) == (50, 2450, 4900, 50)
    assert c.final_density == 0.05 and c.initial == {"rnn.weight_hh_l0": 1.0}
    # SMS: Zhu & Gupta from epoch 5 to epoch round(101 / 2) = 50 (Python rounds 50.5 to 50), once an epoch
    _, c = controller("zhang-sms-prune", batches=35)
    assert c.schedule == "cubic" and (c.start_step, c.end_step, c.frequency) == (5 * 35, 50 * 35, 35)
    _, c = controller("zhang-gesture-prune", batches=10)
    assert c.schedule == "cubic" and (c.start_step, c.end_step) == (50, 1000)
    _, c = controller("zhang-mackey-glass-prune", batches=80)
    assert c.schedule == "narang" and (c.start_step, c.ramp_step, c.end_step) == (80, 25 * 80, 50 * 80)


def test_zhang_rewiring_recipes():
    for task, (*_, zeta, l1, noise) in ZHANG.items():
        model, c = controller(f"zhang-{task}-set", batches=7)
        assert isinstance(c, SET) and c.zeta == zeta and c.init == "zero"
        assert c.rewire_every == (50 if task == "mnist" else "epoch")
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


def test_recipe_runs_from_one_command_and_prints_the_published_number(capsys):
    argv = ["train", "--recipe", "zhang-mackey-glass-set", "--epochs", "2", "--hidden", "24"]
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
    res = train(recipe="zhang-mackey-glass-prune", epochs=6, hidden=32, quiet=True, seed=1)
    w = sparse_weights(res.model)["rnn.weight_hh_l0"]
    assert 0.03 <= w.density <= 0.08  # dense at the start, about 0.05 at the end
    untrained = train(recipe="zhang-mackey-glass-prune", epochs=6, hidden=32, quiet=True, seed=1, lr=1e-12)
    assert res.last["test_loss"] < 0.5 * untrained.last["test_loss"]


def test_mnist_task_uses_the_standard_split_when_the_training_files_are_there(tmp_path):
    from sparse_engine.data.tasks import load_task

    d = tmp_path / "mnist"
    d.mkdir()
    for k in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        shutil.copy(DATA / "mnist_test" / f"t10k-{k}.gz", d / f"t10k-{k}.gz")
    (Xtr, _), (Xte, _), _ = load_task("mnist", str(d), 0)
    assert (len(Xtr), len(Xte)) == (8000, 2000)  # the test set alone, split 80/20
    for k in ("images-idx3-ubyte", "labels-idx1-ubyte"):  # stands in for the training files
        shutil.copy(DATA / "mnist_test" / f"t10k-{k}.gz", d / f"train-{k}.gz")
    (Xtr, _), (Xte, _), _ = load_task("mnist", str(d), 0)
    assert (len(Xtr), len(Xte)) == (10000, 10000)


def test_selfish_runs_evaluate_on_the_nt_asgd_averages(monkeypatch):
    import sparse_engine.runs as runs
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
    plain = dict(RECIPES["zhang-mackey-glass-set"].train, hidden=8, epochs=2, resume=str(ck), quiet=True)
    with pytest.raises(ValueError, match="--recipe None differs"):
        train(**plain)
    again = train(recipe="zhang-mackey-glass-set", epochs=2, hidden=8, resume=str(ck), quiet=True)
    assert again.history[0]["test_loss"] == first.history[0]["test_loss"] and len(again.history) == 2


def test_zhang_sms_preprocessing_hand_computed():
    from sparse_engine.data.tasks import _word_ids, load_task

    # punctuation, underscores and digits dropped, lower case; words seen >= 2 times; the first 3, padded after
    ids, vocab = _word_ids(["Hi, you! 42 you_too", "you you"], length=3, min_count=2, clean=True, pad="post")
    assert ids.tolist() == [[1, 2, 1], [2, 2, 0]] and vocab == 3  # 0 pad, 1 unknown, 2 "you"
    assert all(get_recipe(f"zhang-sms-{k}").variant == "zhang" for k in ("prune", "set", "deepr"))
    (X, _), _, meta = load_task("sms", str(DATA / "sms_spam" / "SMSSpamCollection"), 0, variant="zhang")
    assert X.shape[1] == 25 and 500 < meta["vocab"] < 2000
    with pytest.raises(ValueError, match="variant"):
        load_task("mackey-glass", None, 0, variant="zhang")


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
