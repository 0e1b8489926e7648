"""The examples' bad input: an option's value refused by argparse in its rule's words (exit 2), a missing
file or an impossible device in one line (exit 1), never a traceback; the scripts run their ``main``
under ``sparse_engine.cli.run_handled`` as the command line does."""
import pytest
import torch

from sparse_engine.cli import run_handled

CASES = [
    ("train_digits.py", ["--density", "0"], 2, "argument --density: expected a number in (0, 1], got 0.0"),
    ("train_digits.py", ["--epochs", "0"], 2, "argument --epochs: expected an integer >= 1, got 0"),
    ("train_digits.py", ["--hidden", "x"], 2, "argument --hidden: expected an integer, got 'x'"),
    ("lstm_language_model.py", ["--density", "2"], 2, "argument --density: expected a number in (0, 1], got 2.0"),
    ("million_lstm.py", ["--data", "d", "--budget", "abc"], 2, "argument --budget: "),
    ("million_lstm.py", ["--data", "d", "--per-row", "0"], 2, "argument --per-row: expected an integer >= 1"),
    ("million_lstm.py", ["--data", "/nonexistent/mnist"], 1, "/nonexistent/mnist"),
    ("balance_at_scale.py", ["--tasks", "digits", "--sizes", "0"], 2, "--sizes: expected hidden sizes >= 1"),
]


@pytest.mark.parametrize("script, argv, code, words", CASES, ids=[f"{c[0]}-{c[1][-2]}" for c in CASES])
def test_bad_input_is_one_line_and_an_exit_code(script, argv, code, words, load_script, capsys):
    main = load_script(f"examples/{script}").main
    assert run_handled(lambda: main(argv), script) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and "Traceback" not in "\n".join(err), err
    assert sum("error:" in line for line in err) == 1
    assert err[0].startswith("usage:") if code == 2 else len(err) == 1  # argparse's usage, then its error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
def test_a_device_this_machine_lacks(load_script, capsys):
    main = load_script("examples/selfish_ptb.py").main
    assert run_handled(lambda: main(["--budget", "--device", "cuda"]), "selfish_ptb.py") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch sees no CUDA device" in err[0], err


def test_a_main_that_returns_a_code_keeps_it(capsys):
    assert run_handled(lambda: 3, "x") == 3 and run_handled(lambda: {"loss": 1.0}, "x") == 0
    assert run_handled(lambda: True, "x") == 0
