"""The command line: train (with a topology algorithm, checkpoint, balance records, plot),
bench and analyze, end to end on small settings."""
import csv
import math

import pytest
import torch

from sparse_engine import cli
from sparse_engine.checkpoint import load_checkpoint
from _paths import DATA


def test_train_learns_and_writes_outputs(tmp_path):
    ck, bal, png = tmp_path / "ck.pt", tmp_path / "bal.csv", tmp_path / "loss.png"
    last = cli.run(["train", "--model", "rnn", "--hidden", "48", "--epochs", "3", "--algorithm", "set",
                     "--save", str(ck), "--record-balance", str(bal), "--plot", str(png), "--quiet"])
    assert last["test_acc"] > 0.5  # 10 classes: chance is 0.1
    payload = load_checkpoint(ck)
    assert payload["extra"]["history"][-1]["test_acc"] == last["test_acc"]
    rows = list(csv.DictReader(open(bal)))
    assert len(rows) == 3 and {r["layer"] for r in rows} >= {"rnn.weight_hh_l0"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = cli.run(["analyze", str(ck)])
    assert set(result) == {"semicycle", "triad", "weighted"}


@pytest.mark.parametrize("model", ["lstm", "gru", "ctrnn"])
def test_train_other_models_regression(model):
    last = cli.run(["train", "--task", "mackey-glass", "--model", model, "--hidden", "16", "--epochs", "2",
                     "--quiet"])
    assert math.isfinite(last["test_loss"]) and last["test_loss"] < 0.05  # series variance is ~0.047


def test_bench_reports_ratios():
    rows = cli.run(["bench", "--n", "2000", "--density", "0.01", "--batch", "8"])
    assert [r["op"] for r in rows] == ["spmm", "sddmm"] and all(r["ours"] > 0 for r in rows)


@pytest.mark.skipif(not DATA.exists(), reason="shared data folder is not present")
def test_analyze_gephi_csv_and_export(tmp_path):
    src = DATA / "sparse_rnns_networks" / "Gesture__pruning_n_128_p_0.05__epoch_200.csv"
    out = tmp_path / "edges.csv"
    result = cli.run(["analyze", str(src), "--export-csv", str(out)])
    assert 0.0 <= result["semicycle"] <= 1.0
    again = cli.run(["analyze", str(out)])
    assert again == result


def test_bad_arguments_exit_with_a_message():
    with pytest.raises(SystemExit, match="--task mnist needs --data"):
        cli.run(["train", "--task", "mnist"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.run(["analyze", "/no/such/file.pt"])
    with pytest.raises(SystemExit):
        cli.run(["train", "--model", "transformer"])


def test_console_entry_point_returns_exit_code_zero(capsys):
    assert cli.main(["bench", "--n", "500", "--density", "0.02", "--batch", "4"]) == 0
    assert "spmm" in capsys.readouterr().out


@pytest.mark.skipif(not DATA.exists(), reason="shared data folder is not present")
def test_train_gesture_generalises_to_a_held_out_recording():
    folder = str(DATA / "gesture")
    (_, ytr), (_, yte), meta = cli.load_task("gesture", folder, seed=0)
    assert meta["n_out"] == 5 and meta["n_in"] == 32
    majority = torch.bincount(yte, minlength=5).max().item() / len(yte)
    last = cli.run(["train", "--task", "gesture", "--data", folder, "--hidden", "64", "--epochs", "3", "--quiet"])
    assert last["test_acc"] > majority + 0.1  # the last recording is unseen in training
    with pytest.raises(SystemExit, match="--task gesture needs --data"):
        cli.run(["train", "--task", "gesture"])


def test_train_device_choice():
    assert cli.resolve_device("cpu") == torch.device("cpu")
    from sparse_engine._ext import HAS_CUDA_KERNELS
    if not (torch.cuda.is_available() and HAS_CUDA_KERNELS):
        assert cli.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(SystemExit, match="--device cuda"):
            cli.run(["train", "--device", "cuda", "--quiet"])
    else:  # on a GPU machine: a short run on the device learns
        assert cli.resolve_device("auto").type == "cuda"
        last = cli.run(["train", "--device", "cuda", "--model", "rnn", "--hidden", "48", "--epochs", "3",
                        "--algorithm", "set", "--quiet"])
        assert last["test_acc"] > 0.5


def test_train_from_python_matches_the_command_line(tmp_path):
    """The recipe behind ``train`` runs without argparse: the same seed gives the same history
    and weights as the command line, and its checkpoint stores the command line's options."""
    from sparse_engine.checkpoint import load_checkpoint
    from sparse_engine.models import SequenceModel
    from sparse_engine.runs import TrainConfig, analyze, train

    argv = ["train", "--model", "rnn", "--hidden", "16", "--epochs", "2", "--algorithm", "set", "--seed", "3",
            "--quiet", "--save", str(tmp_path / "cli.pt")]
    last = cli.run(argv)
    base = TrainConfig(model="rnn", hidden=16, epochs=1, algorithm="set", seed=3, quiet=True)
    result = train(base, epochs=2, save=str(tmp_path / "py.pt"))  # options override the config
    assert len(result.history) == 2 and result.last == last
    assert isinstance(result.model, SequenceModel)
    torch.testing.assert_close(result.model.state_dict(), load_checkpoint(tmp_path / "cli.pt")["model"], rtol=0,
                               atol=0)
    assert train(base, epochs=2, seed=4).last != last
    namespace = vars(cli.build_parser().parse_args(argv))
    assert load_checkpoint(tmp_path / "py.pt")["extra"]["args"] == {**namespace, "save": str(tmp_path / "py.pt")}
    assert analyze(path=str(tmp_path / "py.pt")) == cli.run(["analyze", str(tmp_path / "cli.pt")])


def test_every_algorithm_name_builds_its_controller():
    from sparse_engine import training as T
    from sparse_engine.models import SequenceModel
    from sparse_engine.training.recipes import ALGORITHMS, make_controller

    expected = {"none": type(None), "set": T.SET, "gmp": T.GradualMagnitudePruning, "deepr": T.DeepR,
                "selfish": T.SelfishRNN, "rigl": T.RigL}
    assert set(ALGORITHMS) == set(expected)
    for name in ALGORITHMS:
        model = SequenceModel("rnn", 8, 10, 16, 1, 0.2, "both", "classify")
        opt = torch.optim.Adam(model.parameters())
        assert type(make_controller(name, model, opt, steps=40, seed=0, callbacks=[])) is expected[name]
    with pytest.raises(SystemExit, match="--algorithm must be one of"):
        make_controller("lottery", model, opt, steps=40, seed=0, callbacks=[])
