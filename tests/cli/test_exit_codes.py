"""Every row of the README's exit-code table: the code, and one error line on stderr that names
what went wrong (an unknown option also names its command's ``--help`` and the closest option).
One case of each code runs a real ``sparse-engine`` process (``python -m sparse_engine.cli``);
the others call ``cli.main(argv)``, whose return value is that process's exit code."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_exit_codes() -> dict:
    """code -> meaning, from the README's exit-code table."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| exit code | meaning |"):].split("\n\n", 1)[0]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.+) \|$", table, flags=re.M)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, run_cli):
    """A small train checkpoint (rnn, hidden 8, one epoch)."""
    where = tmp_path_factory.mktemp("exit")
    code, _, err = run_cli("train", "--model", "rnn", "--hidden", "8", "--epochs", "1", "--quiet",
                                 "--save", "ck.pt", cwd=where)
    assert code == 0, err
    return where / "ck.pt"


def in_process(argv, cwd, capsys, monkeypatch):
    """``cli.main(argv)`` run in ``cwd``: (exit code, stdout, stderr)."""
    from sparse_engine import cli

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparse-engine: error: ") and "Traceback" not in err, err
    return lines[0]


def test_the_readme_table_has_the_codes_the_cli_defines():
    from sparse_engine import cli

    assert set(readme_exit_codes()) == {cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED} == \
        {0, 1, 2, 130}


def test_0_success(checkpoint, capsys, monkeypatch, run_cli):
    code, out, err = run_cli("analyze", checkpoint, cwd=checkpoint.parent)  # (the fixture ran train)
    assert code == 0 and "structural balance" in out and err == ""
    code, out, _ = in_process(["train", "--help"], checkpoint.parent, capsys, monkeypatch)
    assert code == 0 and "--resume PATH" in out


def test_1_a_file_that_cannot_be_read_or_written(checkpoint, capsys, monkeypatch, run_cli):
    where = checkpoint.parent
    (where / "empty.pt").write_bytes(b"")
    (where / "a-file").write_text("")
    code, _, err = run_cli("analyze", "missing.pt", cwd=where)
    assert code == 1 and "argument path: missing.pt does not exist" in one_line(err)
    for argv, words in [(["train", "--resume", "empty.pt"], "empty.pt: not a sparse-engine checkpoint (or damaged)"),
                        (["train", "--save", "a-file/ck.pt"], "argument --save: ")]:
        code, _, err = in_process(argv, where, capsys, monkeypatch)
        assert code == 1 and words in one_line(err), (argv, err)


@pytest.mark.parametrize("argv, words", [
    (["train", "--epochz", "3"], ["unrecognized arguments: --epochz 3", "did you mean --epochs?",
                                  "see 'sparse-engine train --help'"]),
    (["train", "--batch-size", "0"], ["argument --batch-size: expected an integer >= 1, got 0"]),
    (["train", "--model", "ctrnn", "--layers", "2"], ["argument --layers: model 'ctrnn' has one layer"]),
    (["analyze", "ck.pt", "--gate", "x"], ["argument --gate: expected one of h for ck.pt", "got 'x'"]),
    (["analyze", "ck.pt", "--key", "nope"], ["argument --key: ", "'nope' is not a matrix of the checkpoint"]),
    (["train", "--resume", "ck.pt", "--hidden", "16"], ["argument --hidden: 16 differs from the checkpoint's "
                                                        "--hidden 8 (ck.pt)"]),
    (["bench", "--n", "x"], ["argument --n: invalid int value: 'x'", "see 'sparse-engine bench --help'"]),
    (["train", "--memory-budget", "1K"], ["argument --memory-budget: ", "needs an estimated",
                                          "more than the budget of 1 KiB"]),
    # a value that starts with a minus reaches its own check (argparse alone: "expected one argument")
    (["train", "--memory-budget", "-1G"], ["argument --memory-budget: expected a size such as 16G", "got '-1G'"]),
    (["train", "--lr", "-.5"], ["argument --lr: expected a finite number > 0, got -0.5"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in ("train", "analyze", "bench") else "")
def test_2_bad_arguments(argv, words, checkpoint, capsys, monkeypatch, run_cli):
    if argv[1] == "--epochz":
        code, out, err = run_cli(*argv, cwd=checkpoint.parent)
    else:
        code, out, err = in_process(argv, checkpoint.parent, capsys, monkeypatch)
    line = one_line(err)
    assert code == 2 and all(w in line for w in words), (argv, line)
    assert "--help" in line and out == ""


@pytest.mark.skipif(os.name != "posix", reason="SIGINT")
def test_130_interrupted(tmp_path):
    """Ctrl-C during training: exit code 130 and one line, naming the checkpoint to continue from. (The child gets SIGINT's default
    disposition: a test run started in the background of a non-interactive shell ignores SIGINT,
    and a Python started with it ignored never installs its KeyboardInterrupt handler.)"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "sparse_engine.cli", "train", "--task", "mackey-glass",
                             "--model", "rnn", "--hidden", "8", "--epochs", "1000", "--quiet", "--save", "ck.pt",
                             "--checkpoint-every", "1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ck.pt").exists():  # training has started: main() handles the signal
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.splitlines() == [
        "sparse-engine: interrupted; continue with: sparse-engine train --resume ck.pt"], (proc.returncode, err)
