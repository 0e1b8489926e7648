"""The memory model on the command line: train's estimate line, --recompute-every (a real run, the
same results as storing every step), --memory-budget's refusal before anything is built, both
options changed on --resume; bench --memory's table and the largest hidden size for a budget.
(The prediction itself is checked against measured peaks in tests/test_memory_model.py.)"""
import pytest

from sparse_engine import cli
from sparse_engine.data.tasks import load_task
from sparse_engine.io.checkpoint import load_checkpoint
from sparse_engine.memory import RecurrentSizes, evaluation_peak, format_size, predict
from sparse_engine.runs import TrainConfig, train
from sparse_engine.runs.memory_run import run_sizes
from sparse_engine.testing import assert_bit_equal

# digits: 1437 training sequences of 8 steps (batches of 64), 360 test sequences
RUN = ["train", "--model", "lstm", "--hidden", "24", "--epochs", "1"]


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparse-engine: error: ") and "Traceback" not in err, err
    return lines[0]


def test_train_prints_the_estimate_it_checks(capsys):
    assert cli.main(RUN) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("memory:"))
    import torch

    sizes = run_sizes(vars(TrainConfig(model="lstm", hidden=24)), load_task("digits", None, 0)[2], torch.device("cpu"))
    step, evaluation = predict(sizes, 8, 64), evaluation_peak(sizes, 8, 256)
    assert f"estimated peak {format_size(max(step.peak, evaluation))}" in line
    assert f"a training step of 64: {format_size(step.peak)}, {step.phase}" in line
    assert f"evaluation batches of 256: {format_size(evaluation)}" in line
    assert "every step stored" in line and "of a budget of" in line and "(the memory available now)" in line


def test_train_estimates_the_step_time_under_a_budget_only(capsys):
    """With --memory-budget the plan line ends with the estimated step time, labelled as one (how
    close it comes: benchmarks/bench_caps.py, beside the measured step)."""
    assert cli.main(RUN) == 0
    assert "estimated step" not in capsys.readouterr().out
    assert cli.main([*RUN, "--memory-budget", "8G"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("memory:"))
    assert line.endswith(" s (its products and cells timed here at this size: an estimate)"), line
    assert float(line.split("estimated step ")[1].split(" s")[0]) > 0, line


def test_train_recompute_every_gives_the_same_run(capsys, tmp_path):
    """--recompute-every 2 reaches the module and recomputes (bit-identical gradients on the CPU):
    the same weights and metrics as storing every step."""
    stored, recomputed = tmp_path / "stored.pt", tmp_path / "recomputed.pt"
    assert cli.main([*RUN, "--save", str(stored)]) == 0
    assert cli.main([*RUN, "--recompute-every", "2", "--save", str(recomputed)]) == 0
    assert "recompute_every 2; Adam moments float32)" in capsys.readouterr().out
    a, b = load_checkpoint(stored), load_checkpoint(recomputed)
    assert_bit_equal(a["model"], b["model"], "model")
    assert a["extra"]["history"] == b["extra"]["history"]
    assert b["extra"]["args"]["recompute_every"] == 2
    result = train(TrainConfig(model="lstm", hidden=24, epochs=1, quiet=True, recompute_every=2))
    assert result.model.rnn.recompute_every == 2 and result.history == a["extra"]["history"]


def test_train_recompute_every_auto_picks_for_the_budget(capsys):
    """A budget between the least a recomputed step needs and what a stored step needs: auto
    recomputes; the evaluation batches are halved until they fit too."""
    import torch

    sizes = run_sizes(vars(TrainConfig(model="lstm", hidden=300, density=0.05)), load_task("digits", None, 0)[2],
                      torch.device("cpu"))
    stored = predict(sizes, 8, 64).peak
    assert evaluation_peak(sizes, 8, 256) > stored  # so 256 sequences must be halved
    argv = ["train", "--hidden", "300", "--density", "0.05", "--epochs", "1", "--memory-budget", str(stored - 1)]
    assert cli.main(argv) == 0
    line = capsys.readouterr().out.splitlines()[0]
    from sparse_engine.memory import least_memory_interval

    k = least_memory_interval(sizes, 8, 64)[0]
    batch = next(b for b in (128, 64, 32, 16, 8, 4, 2, 1) if evaluation_peak(sizes, 8, b, recompute_every=k) < stored)
    assert f"evaluation batches of {batch}: " in line
    assert f"recompute_every {k} (auto); Adam moments float32) of a" in line


def test_the_evaluation_batch_changes_only_the_test_loss_summation():
    """A budget that halves the evaluation batches: the same weights; the test loss and accuracy
    equal the run at 256 to rounding."""
    import torch

    sizes = run_sizes(vars(TrainConfig(model="gru", hidden=200, density=0.05)), load_task("digits", None, 0)[2],
                      torch.device("cpu"))
    budget = (evaluation_peak(sizes, 8, 256) + evaluation_peak(sizes, 8, 128)) // 2
    assert budget > predict(sizes, 8, 64).peak
    base = ["train", "--model", "gru", "--hidden", "200", "--density", "0.05", "--epochs", "1", "--quiet"]
    halved = cli.run([*base, "--memory-budget", str(budget)])
    whole = cli.run(base)
    assert halved["test_acc"] == whole["test_acc"] and halved["train_loss"] == whole["train_loss"]
    assert halved["test_loss"] == pytest.approx(whole["test_loss"], rel=1e-6)


def test_train_adam_state_auto_narrows_the_moments_only_where_needed(capsys, tmp_path):
    """A budget below the least a float32 run needs (recomputing) but above a bfloat16 one: the plan
    takes CompactAdam's bfloat16 moments, says so, and the checkpoint holds them; with room to spare
    it keeps float32 (torch's Adam), and an lr-0 control shows the run trains."""
    import torch

    from sparse_engine.memory import least_memory_interval

    sizes = run_sizes(vars(TrainConfig(model="lstm", hidden=300, density=0.05)), load_task("digits", None, 0)[2],
                      torch.device("cpu"))
    f32 = least_memory_interval(sizes, 8, 64, "adam")[1]
    b16 = least_memory_interval(sizes, 8, 64, "adam-bf16")[1]
    assert b16 < f32
    ck = tmp_path / "ck.pt"
    argv = ["train", "--hidden", "300", "--density", "0.05", "--epochs", "1", "--memory-budget", str(f32 - 1),
            "--save", str(ck)]
    assert cli.main(argv) == 0
    assert "; Adam moments bfloat16 (auto)) of a budget of" in capsys.readouterr().out
    saved = load_checkpoint(ck)
    assert {t["exp_avg"].dtype for t in saved["optimizer"]["state"].values()} == {torch.bfloat16}
    assert saved["extra"]["args"]["adam_state"] == "bfloat16"  # what a resumed run takes
    full = cli.run([*argv[:-2], "--epochs", "2", "--quiet"])
    resumed = cli.run(["train", "--resume", str(ck), "--epochs", "2", "--quiet"])
    assert resumed == full  # bit-exact: the same moments, the same rounding draws
    assert cli.main([*argv[:-4], "--save", str(ck)]) == 0
    assert "every step stored; Adam moments float32)" in capsys.readouterr().out
    assert {t["exp_avg"].dtype for t in load_checkpoint(ck)["optimizer"]["state"].values()} == {torch.float32}


def test_train_saved_dtype_auto_narrows_the_activations_of_a_stored_run_only_where_needed(capsys, tmp_path):
    """--recompute-every none and a budget below a stored run (with float32 or bfloat16 moments) but
    above one keeping bfloat16 activations: the plan takes them, says so, the model keeps them and the checkpoint holds the
    choice, which a resumed run takes (bit for bit the run never interrupted); with room to spare it
    keeps float32."""
    import torch

    from sparse_engine.memory import memory_plans

    sizes = run_sizes(vars(TrainConfig(model="lstm", hidden=300, density=0.05)), load_task("digits", None, 0)[2],
                      torch.device("cpu"))
    # stored: float32 moments, bfloat16 moments; narrower activations: float32, bfloat16 moments
    stored, stored_b16, narrow, _ = [p.need for p in memory_plans(sizes, 8, 64, recompute_every=None,
                                                                  saved_dtype="auto")]
    assert narrow < stored_b16 < stored
    ck = tmp_path / "ck.pt"
    argv = ["train", "--hidden", "300", "--density", "0.05", "--epochs", "1", "--recompute-every", "none",
            "--memory-budget", str(stored_b16 - 1), "--save", str(ck)]
    assert cli.main(argv) == 0
    assert "every step stored; Adam moments float32; saved activations bfloat16 (auto)) of a budget" in \
        capsys.readouterr().out
    assert load_checkpoint(ck)["extra"]["args"]["saved_dtype"] == "bfloat16"
    full = cli.run([*argv[:-2], "--epochs", "2", "--quiet"])
    resumed = cli.run(["train", "--resume", str(ck), "--epochs", "2", "--quiet"])
    assert resumed == full
    assert cli.main([*argv[:-4], "--save", str(ck)]) == 0
    assert "saved activations" not in capsys.readouterr().out
    assert load_checkpoint(ck)["extra"]["args"]["saved_dtype"] == "float32"


@pytest.mark.parametrize("argv, words", [
    (["--memory-budget", "1K"], ["argument --memory-budget: a training step needs an estimated",  # (24 units:
                                 "(even with every step stored; Adam moments bfloat16 (auto); saved activations "
                                 "bfloat16 (auto)), more than the budget of 1 KiB (--memory-budget): try a smaller "
                                 "--batch-size"]),  # narrower activations take less than recomputing)
    (["--memory-budget", "1K", "--saved-dtype", "float32"], [
        "(even with recompute_every ", " (auto); Adam moments bfloat16 (auto)), more than the budget of 1 KiB",
        "try --saved-dtype auto, a smaller --batch-size"]),
    (["--memory-budget", "1K", "--recompute-every", "3"], ["(even with recompute_every 3; Adam moments bfloat16 "
                                                           "(auto)), more than the budget of 1 KiB",
                                                           "try --recompute-every auto, a smaller"]),
    (["--memory-budget", "1K", "--recompute-every", "none", "--adam-state", "float32"],
     ["(even with every step stored; Adam moments float32; saved activations bfloat16 (auto)), more than the "
      "budget of 1 KiB",
      "try --recompute-every and --adam-state auto, a smaller"]),
    (["--memory-budget", "1K", "--recompute-every", "none", "--adam-state", "float32", "--saved-dtype", "float32"],
     ["(every step stored; Adam moments float32), more than the budget of 1 KiB",
      "try --recompute-every and --adam-state and --saved-dtype auto, a smaller"]),
    (["--saved-dtype", "bfloat16", "--recompute-every", "3"], ["argument --saved-dtype: bfloat16 keeps every step's "
                                                              "activations, --recompute-every 3 only a few"]),
    (["--model", "ctrnn", "--saved-dtype", "bfloat16"], ["argument --saved-dtype: bfloat16 saved activations are for "
                                                         "lstm, gru and rnn, got --model ctrnn"]),
    (["--model", "mlp", "--adam-state", "bfloat16"], ["argument --adam-state: applies to the recurrent models"]),
    (["--recompute-every", "0"], ["argument --recompute-every: expected an integer >= 1, auto or none, got 0"]),
    (["--recompute-every", "often"], ["argument --recompute-every: expected an integer >= 1, auto or none, got "
                                      "'often'"]),
    (["--memory-budget", "lots"], ["argument --memory-budget: expected a size such as 16G, 512M or 1000000 (bytes), "
                                   "got 'lots'"]),
    (["--model", "mlp", "--recompute-every", "2"], ["argument --recompute-every: applies to the recurrent models"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v[0].startswith("--") else "")
def test_train_refuses_in_one_line_before_building(argv, words, capsys, monkeypatch):
    """A run the budget cannot hold is refused with exit code 2 (bad arguments) before its model exists."""
    import sparse_engine.runs.train_run as train_run

    monkeypatch.setattr(train_run, "sequence_model", lambda *a, **k: pytest.fail("the model was built"))
    assert cli.main([*RUN, *argv]) == 2
    out, err = capsys.readouterr()
    line = one_line(err)
    assert all(w in line for w in words), line
    assert "sparse-engine train --help" in line and out == ""


def test_resume_may_change_recompute_every_and_memory_budget(tmp_path):
    """Neither changes what is computed: a run saved storing every step goes on recomputing, and
    ends where the run never interrupted ends, bit for bit."""
    ref, ck = tmp_path / "ref.pt", tmp_path / "ck.pt"
    base = ["train", "--model", "gru", "--hidden", "16", "--quiet"]
    full = cli.run([*base, "--epochs", "2", "--save", str(ref)])
    cli.run([*base, "--epochs", "1", "--save", str(ck)])
    again = cli.run(["train", "--resume", str(ck), "--epochs", "2", "--recompute-every", "3", "--memory-budget", "8G"])
    assert again == full
    saved = load_checkpoint(ck)["extra"]["args"]
    assert (saved["recompute_every"], saved["memory_budget"]) == (3, "8G")
    assert_bit_equal(load_checkpoint(ck)["model"], load_checkpoint(ref)["model"], "model")


def test_bench_memory_prints_the_breakdown_and_the_largest_size(capsys):
    """Issue #30's LSTM: a million units with 32 nonzeros per row, predicted without building it,
    and the largest hidden size a 16 GB budget holds with recomputation chosen for it."""
    argv = ["bench", "--memory", "--hidden", "1000000", "--density", "0.000032", "--sparse", "recurrent",
            "--batch", "20", "--seq-len", "35", "--device", "cpu"]
    result = cli.run([*argv, "--budget", "16G", "--recompute-every", "auto"])
    out = capsys.readouterr().out
    for kind in ("weights", "index", "gradients", "optimizer", "activations", "workspace", "batch", "peak (backward)"):
        assert kind in out
    assert "largest hidden size for a budget of 16 GiB:" in out
    hidden, k, at = result["largest"]
    sizes = RecurrentSizes.build("lstm", 28, hidden, row_nnz=32, sparse="recurrent", recompute_every=k)
    assert at == predict(sizes, 35, 20) and at.peak <= 16 * 2**30
    bigger = RecurrentSizes.build("lstm", 28, hidden + 1, row_nnz=32, sparse="recurrent")
    assert all(predict(bigger, 35, 20, recompute_every=j).peak > 16 * 2**30 for j in [None, *range(1, 36)])
    stored = cli.run(argv)
    assert stored["recompute_every"] is None and stored["breakdown"].peak > result["breakdown"].peak


@pytest.mark.parametrize("argv, words", [
    (["bench", "--hidden", "100"], "argument --hidden: applies to bench --memory"),
    (["bench", "--memory", "--n", "100"], "argument --n: applies to the operator benchmark"),
    (["bench", "--memory", "--model", "mlp"], "argument --model: invalid choice: 'mlp'"),
    (["bench", "--model", "mlp"], "argument --model: invalid choice: 'mlp'"),
    (["bench", "--memory", "--recompute-every", "auto"], "argument --recompute-every: auto picks the interval for a "
                                                         "budget: give --budget"),
    (["bench", "--memory", "--budget", "1K", "--recompute-every", "auto"], "argument --budget: does not fit even "
                                                                          "with recomputation"),
    (["bench", "--memory", "--density", "0.5", "--hidden", "100", "--budget", "2Q"], "argument --budget: expected a "
                                                                                     "size"),
])
def test_bench_memory_bad_arguments(argv, words, capsys):
    assert cli.main(argv) == 2
    assert words in one_line(capsys.readouterr().err)
