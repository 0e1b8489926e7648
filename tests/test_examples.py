"""The examples run end to end and learn."""
from _paths import load_example as load


def test_train_digits_learns(capsys):
    accuracy = load("train_digits").main(["--epochs", "8"])
    assert accuracy > 0.8  # chance is 0.1
    out = capsys.readouterr().out
    assert "test accuracy" in out and "nnz" in out
