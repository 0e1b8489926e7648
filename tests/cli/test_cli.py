"""The command line: train (with a topology algorithm, checkpoint, balance records, plot),
bench and analyze, end to end on small settings; its errors (one line, exit codes), progress
display and help.

A test that says a run learns compares it with the same run untrained (learning rate 1e-12,
as the command line takes no 0: the weights stay where they started), computed in the test,
and with the best constant prediction, and asks for a clear margin over both. Checked once
with every Adam forced to learning rate 0: each of these tests then fails."""
import csv
import math
import time

import pytest
import torch

from sparse_engine import cli
from sparse_engine.io.checkpoint import load_checkpoint


def untrained(argv):
    """The last epoch of the same run with learning rate 1e-12 (the last ``--lr`` wins): what
    the model scores without learning."""
    return cli.run([*argv, "--lr", "1e-12", "--epochs", "1"])


def majority(task, data=None):
    """Test accuracy of always answering the test set's most frequent class."""
    _, (_, y), meta = cli.load_task(task, data, seed=0)
    return torch.bincount(y, minlength=meta["n_out"]).max().item() / len(y)


def test_train_learns_and_writes_outputs(tmp_path):
    ck, bal, png = tmp_path / "ck.pt", tmp_path / "bal.csv", tmp_path / "loss.png"
    argv = ["train", "--model", "rnn", "--hidden", "48", "--epochs", "3", "--algorithm", "set", "--quiet"]
    last = cli.run([*argv, "--save", str(ck), "--record-balance", str(bal), "--plot", str(png)])
    base = untrained(argv)
    # 10 classes: untrained about 0.1 (chance), trained about 0.8
    assert last["test_acc"] > max(base["test_acc"], majority("digits")) + 0.4
    assert last["test_loss"] < 0.5 * base["test_loss"]
    payload = load_checkpoint(ck)
    assert payload["extra"]["history"][-1]["test_acc"] == last["test_acc"]
    rows = list(csv.DictReader(open(bal)))
    assert len(rows) == 3 and {r["layer"] for r in rows} >= {"rnn.weight_hh_l0"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = cli.run(["analyze", str(ck)])
    assert set(result) == {"semicycle", "triad", "weighted"}


@pytest.mark.parametrize("model", ["lstm", "gru", "ctrnn"])
def test_train_other_models_regression(model):
    argv = ["train", "--task", "mackey-glass", "--model", model, "--hidden", "16", "--epochs", "3", "--lr", "0.02",
            "--quiet"]
    last = cli.run(argv)
    _, (_, y), _ = cli.load_task("mackey-glass", None, seed=0)
    constant = float(((y - y.mean()) ** 2).mean())  # the best constant prediction: the variance, ~0.047
    base = untrained(argv)["test_loss"]  # ~0.045 to 0.10
    assert math.isfinite(last["test_loss"]) and last["test_loss"] < 0.25 * min(constant, base)  # trained: ~0.003


def test_bench_reports_ratios():
    rows = cli.run(["bench", "--n", "2000", "--density", "0.01", "--batch", "8"])
    assert [r["op"] for r in rows] == ["spmm", "sddmm"] and all(r["ours"] > 0 for r in rows)


def test_analyze_gephi_csv_and_export(tmp_path, shared_data):
    src = shared_data("sparse_rnns_networks", "Gesture__pruning_n_128_p_0.05__epoch_200.csv")
    out = tmp_path / "edges.csv"
    result = cli.run(["analyze", str(src), "--export-csv", str(out)])
    assert 0.0 <= result["semicycle"] <= 1.0
    again = cli.run(["analyze", str(out)])
    assert again == result


def one_error_line(capsys):
    """stderr of the last command: exactly one line, the error."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparse-engine: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


BAD_ARGUMENTS = [  # argv, what the one line names
    (["train", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["train", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    (["train", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["train", "--hidden", "0"], "argument --hidden: expected an integer >= 1"),
    (["train", "--hidden", "-8"], "argument --hidden: expected an integer >= 1, got -8"),
    (["train", "--lr", "0"], "argument --lr: expected a finite number > 0, got 0.0"),
    (["train", "--lr", "-0.001"], "argument --lr: expected a finite number > 0, got -0.001"),
    (["train", "--lr=-1e-3"], "argument --lr: expected a finite number > 0, got -0.001"),
    (["train", "--lr", "nan"], "argument --lr: expected a finite number > 0, got nan"),
    (["train", "--lr", "inf"], "argument --lr: expected a finite number > 0, got inf"),
    (["train", "--density", "0"], "argument --density: expected a number in (0, 1], got 0.0"),
    (["train", "--density", "1.5"], "argument --density: expected a number in (0, 1], got 1.5"),
    (["train", "--density", "nan"], "argument --density: expected a number in (0, 1]"),
    (["train", "--layers", "0"], "argument --layers: expected an integer >= 1, got 0"),
    (["train", "--model", "ctrnn", "--layers", "2"], "argument --layers: model 'ctrnn' has one layer"),
    (["train", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["train", "--model", "transformer"], "argument --model: invalid choice: 'transformer'"),
    (["train", "--task", "mnist"], "argument --data: task 'mnist' needs a directory holding the MNIST idx files"),
    (["train", "--task", "sms"], "argument --data: task 'sms' needs the SMS Spam Collection file"),
    (["train", "--task", "gesture"], "argument --data: task 'gesture' needs a *_va3.csv file"),
    (["train", "--data", "x.txt"], "argument --data: task 'digits' reads no data file"),
    (["train", "--plot", "loss.txt"], "argument --plot: expected an image file name"),
    (["train", "--save", "model.txt"], "argument --save: expected a checkpoint file name ending in .pt, .pth, .ckpt"),
    (["train", "--checkpoint-every", "-1"], "argument --checkpoint-every: expected an integer >= 0, got -1"),
    (["train", "--checkpoint-every", "5"], "argument --checkpoint-every: needs a checkpoint to write to"),
    (["train", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["bench", "--n", "0"], "argument --n: expected an integer >= 1, got 0"),
    (["bench", "--density", "2"], "argument --density: expected a number in (0, 1], got 2.0"),
    (["bench", "--density", "0"], "argument --density: expected a number in (0, 1]"),
    (["bench", "--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),
    (["analyze", "x.pt", "--null", "-1"], "argument --null: expected an integer >= 0, got -1"),
    (["analyze", "x.pt", "--null-method", "coin"], "argument --null-method: invalid choice: 'coin'"),
    (["analyze"], "the following arguments are required: path"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) or "none" for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_one_line_and_exit_code_2(argv, message, capsys):
    start = time.perf_counter()
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert message in line and "--help" in line
    assert time.perf_counter() - start < 10  # refused before any work


def test_bad_files_are_one_line_and_exit_code_1(tmp_path, capsys):
    bad_csv = tmp_path / "bad.csv"
    cases = [
        (["train", "--task", "mnist", "--data", str(tmp_path / "none")], f"argument --data: {tmp_path / 'none'} "
                                                                          "does not exist"),
        (["train", "--task", "mnist", "--data", str(bad_csv)], "argument --data: ", "is not a directory"),
        (["train", "--task", "sms", "--data", str(tmp_path)], "argument --data: ", "is not a file"),
        (["train", "--resume", str(tmp_path / "gone.pt")], "argument --resume: ", "gone.pt does not exist"),
        (["analyze", str(tmp_path / "none.pt")], "argument path: ", "none.pt does not exist"),
        (["analyze", str(tmp_path)], "is a directory: expected at least two networks", "weight_l0.npz"),
        # what the file holds is checked as analyze loads it: one line naming the file (and line)
        (["analyze", str(tmp_path / "m.txt")], "m.txt: unknown file type '.txt'; expected a checkpoint"),
        (["analyze", str(bad_csv)], "bad.csv is empty"),
        (["analyze", str(tmp_path / "rows.csv")], "rows.csv, line 3: Source 'one' is not a node id"),
        (["analyze", str(tmp_path / "m.npz")], "m.npz is not a scipy sparse matrix"),
        (["analyze", str(tmp_path / "m.txt.pt")], "m.txt.pt", "checkpoint"),
        (["analyze", str(tmp_path / "good.csv"), "--export-csv", str(bad_csv / "no" / "e.csv")],
         "argument --export-csv: ", "bad.csv is not a directory (cannot create"),
        (["train", "--task", "sms", "--data", str(tmp_path / "sms.txt")], "sms.txt:1: expected 'ham|spam<TAB>text'"),
        (["train", "--task", "mackey-glass", "--data", str(tmp_path / "m.txt")],
         "m.txt:1: expected one finite number a line"),
    ]
    bad_csv.write_text("")
    (tmp_path / "good.csv").write_text("Id,Source,Target,Weight\n0,0,1,0.5\n1,1,2,-0.5\n2,2,0,1\n")
    (tmp_path / "rows.csv").write_text("Id,Source,Target,Weight\n0,0,1,0.5\n1,one,2,0.5\n")
    (tmp_path / "m.npz").write_bytes(b"PK not really")
    (tmp_path / "m.txt").write_text("1,2,3\n")
    (tmp_path / "m.txt.pt").write_text("1,2,3\n")
    (tmp_path / "sms.txt").write_text("hello world\n")
    for argv, *parts in cases:
        assert cli.main(argv) == 1, argv
        line = one_error_line(capsys)
        assert all(part in line for part in parts), (argv, line)


def test_output_paths_are_checked_before_training(tmp_path, capsys, monkeypatch):
    """A bad --save, --plot or --record-balance fails at once, not after the last epoch."""
    import sparse_engine.runs as runs
    from sparse_engine.runs import rebuild

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(rebuild, "load_task", no_training)
    (tmp_path / "file").write_text("")
    (tmp_path / "folder.pt").mkdir()
    for option, path, problem in [("--save", tmp_path / "file" / "sub" / "ck.pt", "is not a directory (cannot create"),
                                  ("--save", tmp_path / "folder.pt", "is a directory"),
                                  ("--plot", tmp_path / "file" / "loss.png", "is not a directory"),
                                  ("--record-balance", tmp_path / "file" / "b.csv", "is not a directory")]:
        start = time.perf_counter()
        assert cli.main(["train", "--epochs", "50", option, str(path)]) == 1
        assert time.perf_counter() - start < 5
        line = one_error_line(capsys)
        assert f"argument {option}: " in line and problem in line
    with pytest.raises(runs.ConfigPathError, match="save: .*file is not a directory") as err:
        runs.train(save=str(tmp_path / "file" / "new" / "ck.pt"), quiet=True)
    assert isinstance(err.value, ValueError) and err.value.field == "save"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.pt"]  # nothing created on the way


def test_every_output_path_option_creates_missing_parent_directories(tmp_path):
    """--save, --record-balance, --plot (train) and --export-csv, --plot (analyze) alike: the
    directories that do not exist yet are created, as most command line tools do."""
    out = {name: tmp_path / f"new_{name}" / "deeper" for name in ("save", "balance", "plot", "csv", "figures")}
    ck, bal, png = out["save"] / "ck.pt", out["balance"] / "bal.csv", out["plot"] / "loss.png"
    cli.run(["train", "--model", "rnn", "--hidden", "8", "--epochs", "1", "--algorithm", "set", "--quiet",
             "--save", str(ck), "--record-balance", str(bal), "--plot", str(png)])
    assert load_checkpoint(ck)["extra"]["history"] and list(csv.DictReader(open(bal)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    edges = out["csv"] / "edges.csv"
    cli.run(["analyze", str(ck), "--export-csv", str(edges), "--plot", str(out["figures"])])
    assert edges.read_text().startswith("Id,Source,Target,Weight")
    assert any(p.suffix == ".png" for p in out["figures"].iterdir())
    # a resumed run's checkpoints go to a new --save directory too
    more = tmp_path / "again" / "ck.pt"
    cli.run(["train", "--resume", str(ck), "--epochs", "2", "--quiet", "--save", str(more)])
    assert load_checkpoint(more)["extra"]["resume"]["epoch"] == 2


def test_library_configs_raise_value_errors_naming_the_field():
    """From Python the same checks raise ConfigError (a ValueError) naming the config field."""
    from sparse_engine.runs import AnalyzeConfig, BenchConfig, ConfigError, TrainConfig, bench, train

    cases = [(TrainConfig, dict(batch_size=0), "batch_size"), (TrainConfig, dict(hidden=2.5), "hidden"),
             (TrainConfig, dict(lr=float("nan")), "lr"), (TrainConfig, dict(epochs=True), "epochs"),
             (TrainConfig, dict(task="mnist"), "data"), (TrainConfig, dict(model="transformer"), "model"),
             (BenchConfig, dict(density=0.0), "density"),
             (AnalyzeConfig, dict(path="x.pt", null=-1), "null"), (AnalyzeConfig, dict(path=""), "path")]
    for cls, options, field in cases:
        with pytest.raises(ConfigError, match=f"^{field}: expected|^{field}: task") as err:
            cls(**options)
        assert isinstance(err.value, ValueError) and err.value.field == field
    with pytest.raises(ValueError, match="^batch_size: expected an integer >= 1, got 0"):
        train(batch_size=0)
    with pytest.raises(ValueError, match="^lr: "):
        train(TrainConfig(quiet=True), lr=-1.0)  # replace() checks too
    with pytest.raises(ValueError, match="^n: "):
        bench(n=-5)


def test_exit_codes_for_interrupts_and_unexpected_errors(monkeypatch, capsys):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "bench", interrupted)
    assert cli.main(["bench"]) == 130
    assert capsys.readouterr().err.splitlines() == ["sparse-engine: interrupted"]

    def bug(config):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "bench", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # not a user error: the traceback stays
        cli.main(["bench"])

    def bad_value(config):
        raise ValueError("something\nwent wrong")

    monkeypatch.setattr(cli, "bench", bad_value)
    assert cli.main(["bench"]) == 1
    assert one_error_line(capsys) == "sparse-engine: error: something went wrong"

    def exits(config):  # code that ends with SystemExit("message")
        raise SystemExit("--resume ck.pt: no resumable state")

    monkeypatch.setattr(cli, "bench", exits)
    assert cli.main(["bench"]) == 1
    assert one_error_line(capsys) == "sparse-engine: error: --resume ck.pt: no resumable state"
    monkeypatch.setattr(cli, "bench", bad_value)
    monkeypatch.setenv("SPARSE_ENGINE_TRACEBACK", "1")
    with pytest.raises(ValueError):
        cli.main(["bench"])


def test_console_entry_point_returns_exit_code_zero(capsys):
    assert cli.main(["bench", "--n", "500", "--density", "0.02", "--batch", "4"]) == 0
    assert "spmm" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0 and "exit codes" in capsys.readouterr().out


def test_every_option_has_help_with_its_default_and_the_exit_codes():
    import argparse

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"train", "bench", "analyze"}
    for name, sub in [("sparse-engine", parser), *subparsers.choices.items()]:
        text = sub.format_help()
        for code in ("0 ", "1 ", "2 ", "130 "):
            assert f"\n  {code}" in text, (name, code)
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 10, (name, action.dest)
            if action.option_strings:
                assert "default" in action.help, (name, action.dest)  # stated, or %(default)s
            if action.default not in (None, False):
                assert "%(default)s" in action.help, (name, action.dest)


def test_progress_bar_shows_running_loss_and_throughput(monkeypatch, capsys):
    """During the epoch the bar's postfix holds the running loss and samples/s; after each epoch
    a results line; nothing of either with --quiet."""
    import io

    import tqdm

    class Terminal(io.StringIO):  # the bar is drawn on a terminal only
        def isatty(self):
            return True

    stream = Terminal()

    class Recorded(tqdm.tqdm):  # refresh at every step, into a stream the test reads
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "file": stream, "mininterval": 0, "miniters": 1})

    monkeypatch.setattr(tqdm, "tqdm", Recorded)
    argv = ["train", "--task", "mackey-glass", "--model", "rnn", "--hidden", "8", "--epochs", "2"]
    cli.run(argv)
    frames = [f for f in stream.getvalue().split("\r") if "epoch 1" in f]
    (X, _), _, _ = cli.load_task("mackey-glass", None, seed=0)
    total = math.ceil(len(X) / 64)
    during = [f for f in frames if f"/{total} " in f and f"{total}/{total}" not in f and "loss " in f]
    assert during and "samples/s" in during[-1], frames[:5]
    memory, *out = capsys.readouterr().out.splitlines()  # first the memory estimate (tests/cli/test_memory_options.py)
    assert memory.startswith("memory: estimated peak ")
    assert out[0] == "sparse RNN on mackey-glass (none, cpu)" and out[1].split()[:3] == ["epoch", "train", "loss"]
    assert [line.split()[0] for line in out[2:4]] == ["1", "2"]
    stream.seek(0), stream.truncate()
    cli.run([*argv, "--quiet"])
    assert stream.getvalue() == "" and capsys.readouterr().out == ""
    from sparse_engine.runs import progress_postfix

    assert progress_postfix(0.123456, 3000, 2.0) == "loss 0.1235, 1,500 samples/s"


def test_train_gesture_generalises_to_a_held_out_recording(shared_data):
    folder = str(shared_data("gesture"))
    (_, ytr), (_, yte), meta = cli.load_task("gesture", folder, seed=0)
    assert meta["n_out"] == 5 and meta["n_in"] == 32
    argv = ["train", "--task", "gesture", "--data", folder, "--hidden", "64", "--epochs", "3", "--quiet"]
    last = cli.run(argv)
    base = untrained(argv)
    # the last recording is unseen in training; majority ~0.27, untrained ~0.18, trained ~0.55
    assert last["test_acc"] > max(majority("gesture", folder), base["test_acc"]) + 0.15
    assert last["test_loss"] < 0.9 * base["test_loss"]


def test_train_device_choice(capsys):
    assert cli.resolve_device("cpu") == torch.device("cpu")
    from sparse_engine.kernels import HAS_CUDA_KERNELS
    if not (torch.cuda.is_available() and HAS_CUDA_KERNELS):
        assert cli.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="^device: 'cuda' asked for"):
            cli.resolve_device("cuda")
        assert cli.main(["train", "--device", "cuda", "--quiet"]) == 2
        assert "argument --device: 'cuda' asked for" in one_error_line(capsys)
    else:  # on a GPU machine: a short run on the device learns
        assert cli.resolve_device("auto").type == "cuda"
        argv = ["train", "--device", "cuda", "--model", "rnn", "--hidden", "48", "--epochs", "3", "--algorithm", "set",
                "--quiet"]
        last = cli.run(argv)
        assert last["test_acc"] > max(untrained(argv)["test_acc"], majority("digits")) + 0.4


def test_train_from_python_matches_the_command_line(tmp_path):
    """The recipe behind ``train`` runs without argparse: the same seed gives the same history
    and weights as the command line, and its checkpoint stores the command line's options."""
    from sparse_engine.io.checkpoint import load_checkpoint
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
    # the options as given, but Adam's moments and the saved activations as the memory plan chose them
    # (a resumed run takes those)
    assert load_checkpoint(tmp_path / "py.pt")["extra"]["args"] == {**namespace, "save": str(tmp_path / "py.pt"),
                                                                    "adam_state": "float32", "saved_dtype": "float32"}
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
    with pytest.raises(ValueError, match="--algorithm must be one of"):
        make_controller("lottery", model, opt, steps=40, seed=0, callbacks=[])
