"""``sparse-engine train --resume``: a run cut off mid-epoch (an injected Ctrl-C, a real SIGKILL,
an exception inside a step) continues from its last checkpoint to the same weights, optimizer,
controller, generator states and history as the run that was never interrupted, bit for bit;
mismatched options and unusable checkpoints are refused with a message naming them."""
import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sparse_engine import cli
from sparse_engine.io.checkpoint import load_checkpoint
from sparse_engine.runs import TrainConfig, train
from sparse_engine.testing import assert_bit_equal

# digits: 1437 training examples, 23 batches of 64 per epoch, 69 steps in 3 epochs
BASE = ["train", "--model", "rnn", "--hidden", "16", "--epochs", "3", "--quiet"]
CONFIG = TrainConfig(model="rnn", hidden=16, epochs=3, quiet=True)


def assert_same_run(ck, ref):
    """The checkpoints of two runs hold the same model, optimizer, controller, generators,
    position and history, bit for bit."""
    a, b = load_checkpoint(ck), load_checkpoint(ref)
    assert_bit_equal(a["model"], b["model"], "model")
    assert_bit_equal(a["optimizer"], b["optimizer"], "optimizer")
    assert_bit_equal(a["extra"]["history"], b["extra"]["history"], "history")
    assert_bit_equal(a["extra"]["resume"], b["extra"]["resume"], "resume")


@pytest.mark.parametrize("algorithm", ["none", "set", "gmp", "deepr", "selfish", "rigl"])
def test_run_interrupted_mid_epoch_resumes_bit_exactly(algorithm, tmp_path, monkeypatch, interrupt_at):
    opts = ["--algorithm", algorithm]
    if algorithm == "set":
        opts += ["--record-balance", str(tmp_path / "bal.csv")]
    ref = tmp_path / "ref.pt"
    full = cli.run(BASE + opts + ["--save", str(ref)])
    bal = tmp_path / "bal.csv"
    if algorithm == "set":
        full_records = list(csv.reader(open(bal)))
    ck = tmp_path / "ck.pt"
    restore = interrupt_at(monkeypatch, 40, KeyboardInterrupt())  # Ctrl-C in step 40 (epoch 2)
    with pytest.raises(KeyboardInterrupt):
        cli.run(BASE + opts + ["--save", str(ck), "--checkpoint-every", "7"])
    restore()
    state = load_checkpoint(ck)["extra"]["resume"]
    assert (state["epoch"], state["batch"], state["steps"]) == (1, 12, 35)  # the last checkpoint: step 35
    assert len(state["perm"]) == 1437 and len(load_checkpoint(ck)["extra"]["history"]) == 1
    if algorithm == "gmp":  # pruned by then: the resumed run loads it into a fresh model of another nnz
        from sparse_engine.models import SequenceModel
        from sparse_engine.sparse import sparse_weights

        fresh = sum(w.nnz for w in sparse_weights(SequenceModel("rnn", 8, 10, 16, 1, 0.2, "both", "classify")).values())
        saved = sum(v.numel() for k, v in load_checkpoint(ck)["model"].items() if k.endswith(".values"))
        assert saved < fresh
    if algorithm == "set":  # written as it went: the interrupted run's records up to step 40 are on disk
        assert 1 < len(list(csv.reader(open(bal)))) < len(full_records)
        bal.unlink()
    last = cli.run(BASE + opts + ["--resume", str(ck), "--checkpoint-every", "7"])  # checkpoints go on to ck
    assert last == full
    assert_same_run(ck, ref)
    if algorithm == "set":  # balance records of the epochs before the interruption were kept
        assert list(csv.reader(open(bal))) == full_records and len(full_records) == 4


def test_resume_through_the_python_api_and_with_more_epochs(tmp_path):
    ref = train(CONFIG, algorithm="rigl", save=str(tmp_path / "ref.pt"))
    # a finished run resumed with the same options has nothing left to do
    done = train(CONFIG, algorithm="rigl", resume=str(tmp_path / "ref.pt"))
    assert done.history == ref.history
    assert_bit_equal(done.model.state_dict(), ref.model.state_dict())
    # --epochs may grow: the run goes on where it stopped
    more = train(CONFIG, algorithm="rigl", epochs=5, save=str(tmp_path / "more.pt"), resume=str(tmp_path / "ref.pt"))
    assert len(more.history) == 5 and more.history[:3] == ref.history
    assert load_checkpoint(tmp_path / "more.pt")["extra"]["resume"]["steps"] == 5 * 23
    assert_bit_equal(load_checkpoint(tmp_path / "ref.pt")["model"], ref.model.state_dict())  # --save: ref untouched


def test_exception_inside_a_step_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch, interrupt_at):
    from sparse_engine.runs import resume as resume_module

    ck = tmp_path / "ck.pt"
    written = []
    real_save = resume_module.save_checkpoint

    def save_and_remember(path, *args, **kwargs):
        out = real_save(path, *args, **kwargs)
        written.append(out.read_bytes())
        return out

    monkeypatch.setattr(resume_module, "save_checkpoint", save_and_remember)
    restore = interrupt_at(monkeypatch, 30, RuntimeError("CUDA out of memory (injected)"))
    with pytest.raises(RuntimeError, match="out of memory"):
        train(CONFIG, algorithm="deepr", save=str(ck), checkpoint_every=5)
    restore()
    assert len(written) == 6  # steps 5, 10, 15, 20, the end of epoch 1, 25
    assert ck.read_bytes() == written[-1]
    assert load_checkpoint(ck)["extra"]["resume"]["steps"] == 25
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left
    resumed = train(CONFIG, algorithm="deepr", resume=str(ck))
    assert resumed.history == train(CONFIG, algorithm="deepr").history


KILLED_RUN = r"""
import os, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
real = torch.optim.Adam.step
def slow(self, *args, **kwargs):  # training slows once a checkpoint exists, so the kill comes mid-run
    if os.path.exists(sys.argv[1]):
        time.sleep(0.02)
    return real(self, *args, **kwargs)
torch.optim.Adam.step = slow
from sparse_engine import cli
cli.main(sys.argv[3:])
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_run_killed_with_sigkill_resumes_bit_exactly(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # --save's directory must exist
    ck = run_dir / "ck.pt"
    argv = BASE + ["--algorithm", "selfish", "--save", str(ck), "--checkpoint-every", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    log = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(ck), str(torch.get_num_threads()), *argv],
                            env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while True:  # wait for a mid-epoch checkpoint of epoch 2, then kill the run wherever it is
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the run ended by itself ({proc.returncode}):\n{log.read()[-3000:]}")
            assert time.monotonic() < deadline, "no mid-epoch checkpoint within 300 s"
            if ck.exists():
                state = load_checkpoint(ck)["extra"]["resume"]
                if state["epoch"] == 1 and state["batch"] > 0:
                    break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(ck)["extra"]["resume"]["steps"] < 69
    resumed = train(CONFIG, algorithm="selfish", save=str(ck), checkpoint_every=4, resume=str(ck))
    ref = train(CONFIG, algorithm="selfish", save=str(tmp_path / "ref.pt"))
    assert resumed.history == ref.history
    assert_same_run(ck, tmp_path / "ref.pt")
    assert [p.name for p in run_dir.iterdir()] == ["ck.pt"]  # the temporary of a save cut by the kill: removed


def test_resume_without_retyping_the_options_is_bit_exact(tmp_path, monkeypatch, interrupt_at):
    """``train --resume PATH`` alone continues with the options saved in the checkpoint (model,
    sizes, algorithm, seed, checkpoint interval, ...) to the run that was never interrupted;
    options typed that may change (--epochs growing, --quiet) are taken."""
    opts = ["--algorithm", "set", "--density", "0.3", "--seed", "3", "--lr", "0.01"]
    ref = tmp_path / "ref.pt"
    full = cli.run(BASE + opts + ["--save", str(ref)])
    ck = tmp_path / "ck.pt"
    restore = interrupt_at(monkeypatch, 40, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        cli.run(BASE + opts + ["--save", str(ck), "--checkpoint-every", "7"])
    restore()
    assert load_checkpoint(ck)["extra"]["resume"]["steps"] == 35
    assert cli.run(["train", "--resume", str(ck), "--quiet"]) == full
    assert_same_run(ck, ref)
    saved = load_checkpoint(ck)["extra"]["args"]
    assert (saved["algorithm"], saved["density"], saved["seed"], saved["hidden"]) == ("set", 0.3, 3, 16)
    # --epochs may grow; options typed with the checkpoint's own values are accepted
    more = cli.run(["train", "--resume", str(ck), "--epochs", "4", "--hidden", "16", "--algorithm", "set", "--quiet"])
    assert more["epoch"] == 4 and load_checkpoint(ck)["extra"]["args"]["epochs"] == 4
    # from Python: the same, with keyword options
    again = train(resume=str(ref), epochs=4, quiet=True)
    assert again.history[-1] == more


def test_resume_refuses_other_options_and_unusable_checkpoints(tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    cli.run(BASE[:5] + ["--epochs", "1", "--quiet", "--save", str(ck)])
    # an option given that conflicts with the checkpoint: one line naming it, both values, exit code 2
    for argv, line in [(["--hidden", "32"], f"argument --hidden: 32 differs from the checkpoint's --hidden 16 ({ck})"),
                       (["--algorithm", "set"], "argument --algorithm: set differs from the checkpoint's --algorithm none"),
                       (["--seed", "1"], "argument --seed: 1 differs from the checkpoint's --seed 0"),
                       (["--density", "0.5"], "argument --density: 0.5 differs from the checkpoint's --density 0.2"),
                       (["--task", "mackey-glass"], "argument --task: mackey-glass differs from the checkpoint's --task "
                                                    "digits"),
                       (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0")]:
        assert cli.main(["train", "--resume", str(ck), *argv]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"sparse-engine: error: {line}"), err
        assert "sparse-engine train --help" in err[0]
    with pytest.raises(ValueError, match=r"^lr: 0.01 differs from the checkpoint's --lr 0.005") as e:
        train(CONFIG, epochs=1, lr=0.01, resume=str(ck))
    assert e.value.field == "lr"
    two = tmp_path / "two.pt"
    train(CONFIG, epochs=2, save=str(two))
    with pytest.raises(ValueError, match=r"^epochs: 1 is less than the checkpoint's --epochs 2"):
        train(CONFIG, epochs=1, resume=str(two))
    assert cli.main(["train", "--resume", str(two), "--epochs", "1"]) == 2
    assert "argument --epochs: 1 is less than the checkpoint's --epochs 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^epochs: expected an integer >= 1, got 0"):  # checked before resuming
        train(CONFIG, epochs=0, resume=str(ck))
    with pytest.raises(ValueError, match=r"^resume: .*missing.pt does not exist"):  # checked before any work
        train(CONFIG, resume=str(tmp_path / "missing.pt"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{truncated}.*truncated"):
        train(CONFIG, resume=str(truncated))
    from sparse_engine.io.checkpoint import save_checkpoint
    from sparse_engine.models import SequenceModel

    save_checkpoint(tmp_path / "plain.pt", SequenceModel("rnn", 8, 10, 16, 1, 0.2, "both", "classify"))
    with pytest.raises(ValueError, match="no resumable state"):
        train(CONFIG, resume=str(tmp_path / "plain.pt"))
    with pytest.raises(ValueError, match=r"^checkpoint_every: needs a checkpoint to write to"):
        train(CONFIG, checkpoint_every=5)
    assert math.isfinite(train(CONFIG, epochs=1, resume=str(ck)).last["test_loss"])


def test_a_run_with_a_relative_data_path_resumes_from_another_directory(tmp_path, monkeypatch):
    """The checkpoint keeps --data as an absolute path: ``train --resume`` works from any directory, and a
    --data that names the same file (relative to the new directory) is accepted."""
    here = tmp_path / "run"
    here.mkdir()
    (here / "series.txt").write_text("\n".join(f"{math.sin(0.1 * i):.6f}" for i in range(1200)) + "\n")
    monkeypatch.chdir(here)
    opts = ["train", "--task", "mackey-glass", "--model", "rnn", "--hidden", "8", "--quiet"]
    cli.run(opts + ["--data", "series.txt", "--epochs", "1", "--save", "ck.pt"])
    assert load_checkpoint(here / "ck.pt")["extra"]["args"]["data"] == str(here / "series.txt")
    monkeypatch.chdir(tmp_path)
    assert cli.run(["train", "--resume", "run/ck.pt", "--epochs", "2", "--quiet"])["epoch"] == 2
    assert cli.run(["train", "--resume", "run/ck.pt", "--epochs", "3", "--data", "run/series.txt",
                    "--quiet"])["epoch"] == 3


def test_a_run_whose_data_moved_resumes_with_its_new_place(tmp_path, monkeypatch, capsys):
    """--data moved (another machine, a renamed folder): before, leaving it out failed (the old
    path is gone) and giving the new one was refused as "differs", so the run could not go on.
    Now the new path is taken where the old one is gone, or where the files are the same; a file
    of other contents beside the old one is still refused."""
    series = "\n".join(f"{math.sin(0.1 * i):.6f}" for i in range(1200)) + "\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "series.txt").write_text(series)
    monkeypatch.chdir(tmp_path)
    opts = ["train", "--task", "mackey-glass", "--model", "rnn", "--hidden", "8", "--quiet"]
    cli.run(opts + ["--data", "a/series.txt", "--epochs", "1", "--save", "ck.pt"])
    (tmp_path / "copy.txt").write_text(series)  # the same contents elsewhere: accepted
    (tmp_path / "other.txt").write_text(series.replace("0.0", "0.1"))
    assert cli.main(["train", "--resume", "ck.pt", "--epochs", "2", "--data", "other.txt", "--quiet"]) == 2
    assert "differs from the checkpoint's --data" in capsys.readouterr().err
    assert cli.run(["train", "--resume", "ck.pt", "--epochs", "2", "--data", "copy.txt", "--save", "ck2.pt",
                    "--quiet"])["epoch"] == 2
    (tmp_path / "a").rename(tmp_path / "b")
    assert cli.main(["train", "--resume", "ck.pt", "--epochs", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "(the checkpoint's --data) does not exist: give --data with where the data is now" in err
    assert cli.run(["train", "--resume", "ck.pt", "--epochs", "2", "--data", "b/series.txt", "--quiet"])["epoch"] == 2
