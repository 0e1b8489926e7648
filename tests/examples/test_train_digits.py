"""examples/train_digits.py runs end to end and learns."""


def test_train_digits_learns(capsys, load_script):
    accuracy = load_script("examples/train_digits.py").main(["--epochs", "8"])
    assert accuracy > 0.8  # chance is 0.1
    out = capsys.readouterr().out
    assert "test accuracy" in out and "nnz" in out
