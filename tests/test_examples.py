"""The examples run end to end and learn."""
import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_digits_learns(capsys):
    accuracy = load("train_digits").main(["--epochs", "8"])
    assert accuracy > 0.8  # chance is 0.1
    out = capsys.readouterr().out
    assert "test accuracy" in out and "nnz" in out
