"""examples/million_lstm.py at a small size on the real MNIST rows: the memory line, the refusal
of a budget too small, learning (the held-out batch's loss falls, and stays put at lr 0), and
resume from a checkpoint continuing bit for bit."""
import re

import torch

from sparse_engine.testing import assert_bit_equal


def run(load_script, capsys, *args):
    code = load_script("examples/million_lstm.py").main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def held_out(text):
    return [float(x) for x in re.findall(r"held-out batch loss \w+ step \d+: ([0-9.]+)", text)]


def test_learns_and_resumes(load_script, shared_data, capsys, tmp_path):
    data = str(shared_data("mnist_test"))
    common = ["--data", data, "--hidden", "300", "--batch", "32", "--budget", "4G"]
    code, out, _ = run(load_script, capsys, *common, "--steps", "40", "--lr", "0.01")
    assert code == 0 and "a step needs about" in out and "every step stored" in out
    before, after = held_out(out)
    assert after < before - 0.3, (before, after)
    code, out, _ = run(load_script, capsys, *common, "--steps", "3", "--lr", "0")
    before0, after0 = held_out(out)
    assert before0 == before and after0 == before0  # untrained: no change at all
    # 4 steps in one go against 2 + resume for 2
    code, out, _ = run(load_script, capsys, *common, "--steps", "4", "--save", str(tmp_path / "a.pt"))
    run(load_script, capsys, *common, "--steps", "2", "--save", str(tmp_path / "b.pt"))
    run(load_script, capsys, *common, "--steps", "4", "--resume", str(tmp_path / "b.pt"), "--save", str(tmp_path / "b.pt"))
    a, b = torch.load(tmp_path / "a.pt", weights_only=False), torch.load(tmp_path / "b.pt", weights_only=False)
    assert_bit_equal(a["model"], b["model"], "model")
    assert_bit_equal(a["optimizer"], b["optimizer"], "optimizer")


def test_a_budget_too_small_is_one_line(load_script, shared_data, capsys):
    code, out, err = run(load_script, capsys, "--data", str(shared_data("mnist_test")), "--hidden", "300000",
                         "--budget", "1G")
    assert code == 2 and err.startswith("million_lstm.py: error: --budget: does not fit") and len(err.splitlines()) == 1
