"""What a new user tripped on at the command line's edges: an integer past int64, an output path that
no file can be created in (/proc, or permissions root's access check cannot see), a checkpoint that
cannot be written mid-run, Ctrl-C without the checkpoint to continue from, and runpy's warning on
``python -m sparse_engine.data.fetch``. Each is one line naming the option, before any work where it
can be found before."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_engine import cli
from sparse_engine.runs import resume

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["train", "--task", "mackey-glass", "--model", "rnn", "--hidden", "8", "--epochs", "2", "--quiet"]


def test_an_integer_past_int64_is_named_before_training(capsys):
    code = cli.main(["train", "--batch-size", "99999999999999999999"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE and out == ""
    assert err.splitlines() == ["sparse-engine: error: argument --batch-size: expected an integer >= 1 and at most "
                                "9,223,372,036,854,775,807, got 99999999999999999999 (see 'sparse-engine train --help')"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_save_path_where_no_file_can_be_created_fails_at_once(capsys):
    code = cli.main([*QUICK, "--save", "/proc/ck.pt"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_FAILED and out == ""  # nothing trained
    assert err.splitlines() == ["sparse-engine: error: argument --save: cannot create a file in /proc "
                                "(No such file or directory)"]


def test_a_checkpoint_that_cannot_be_written_names_the_option(capsys, monkeypatch, tmp_path):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ck.pt.tmp"))

    monkeypatch.setattr(resume, "save_checkpoint", denied)
    code = cli.main([*QUICK, "--save", str(tmp_path / "ck.pt")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and "[Errno" not in err
    assert err.splitlines() == [f"sparse-engine: error: argument --save: cannot write the checkpoint "
                                f"{tmp_path / 'ck.pt'} (Permission denied)"]


def test_ctrl_c_names_the_checkpoint_to_continue_from(capsys, monkeypatch, tmp_path, interrupt_at):
    interrupt_at(monkeypatch, 3, KeyboardInterrupt())
    code = cli.main([*QUICK, "--save", str(tmp_path / "ck.pt"), "--checkpoint-every", "2"])
    assert code == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err.splitlines() == [
        f"sparse-engine: interrupted; continue with: sparse-engine train --resume {tmp_path / 'ck.pt'}"]
    # before any checkpoint: nothing to continue from
    interrupt_at(monkeypatch, 1, KeyboardInterrupt())
    assert cli.main([*QUICK, "--save", str(tmp_path / "other.pt")]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err.splitlines() == ["sparse-engine: interrupted"]


def test_python_m_fetch_runs_without_runpys_warning():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "sparse_engine.data.fetch", "--help"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr, proc.stderr
