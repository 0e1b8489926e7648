"""Checkpoints: atomic writes and bit-exact reloads, including changed topologies; the file
mode, orphans of a killed save, and clear errors on truncated or corrupted files."""
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch
from torch import nn

from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint
from sparse_engine.nn import SparseLinear


def model_and_optimizer(density):
    model = nn.Sequential(SparseLinear(30, 20, density=density), nn.Tanh(), SparseLinear(20, 5, density=density))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def train_steps(model, opt, x, n=3):
    for _ in range(n):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def test_round_trip_is_bit_exact_and_training_continues_identically(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(8, 30)
    a, opt_a = model_and_optimizer(0.3)
    train_steps(a, opt_a, x)
    path = save_checkpoint(tmp_path / "ck.pt", a, opt_a, epoch=3)
    b, opt_b = model_and_optimizer(0.1)  # other topology and nnz
    payload = load_checkpoint(path, b, opt_b)
    assert payload["extra"] == {"epoch": 3}
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), ka
    train_steps(a, opt_a, x)
    train_steps(b, opt_b, x)
    assert torch.equal(a(x), b(x))


def test_write_is_atomic(tmp_path, monkeypatch):
    model, opt = model_and_optimizer(0.3)
    path = save_checkpoint(tmp_path / "ck.pt", model)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before  # the old checkpoint is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test, as in an interactive run (a test run started in the
    background of a non-interactive shell inherits SIGINT ignored), restored after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_save_comes_after_the_file_is_in_place(tmp_path, monkeypatch, python_sigint):
    """SIGINT arriving while torch.save writes: the save completes (the new checkpoint loads)
    and then the KeyboardInterrupt comes, not torch's zip writer's RuntimeError (the CLI's exit
    130 test found it: one Ctrl-C in ten landed in a save)."""
    model, opt = model_and_optimizer(0.3)
    real_save = torch.save
    sent = []

    def interrupted_save(obj, f, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # delivered to Python's handler at the next bytecode
        sent.append(True)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ck.pt", model, opt, epoch=7)
    assert sent and load_checkpoint(tmp_path / "ck.pt")["extra"] == {"epoch": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    monkeypatch.setattr(torch, "save", real_save)
    with pytest.raises(KeyboardInterrupt):  # and without a save, Ctrl-C is itself again
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10**6):
            pass


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a sparse-engine checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    model, opt = model_and_optimizer(0.3)
    save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "m.pt", model, opt)


def test_checkpoint_has_the_users_file_mode(tmp_path):
    """Written like any new file (0666 minus the umask), not 0600 as a mkstemp file."""
    model, opt = model_and_optimizer(0.3)
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ck.pt", model, opt)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o027)
        save_checkpoint(path, model, opt)  # the rename brings the new file's mode
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)


KILLED_WRITER = r"""
import os, sys, time
import torch
from torch import nn
from sparse_engine.nn import SparseLinear
from sparse_engine.io.checkpoint import save_checkpoint

model = nn.Sequential(SparseLinear(300, 200, density=0.3))
real_fsync = os.fsync
def hang(fd):  # the data is written: wait here, mid-save, to be killed
    print("writing", flush=True)
    time.sleep(600)
os.fsync = hang
save_checkpoint(sys.argv[1], model)
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_kill_during_save_leaves_an_orphan_that_the_next_save_removes(tmp_path):
    path = tmp_path / "ck.pt"
    model, opt = model_and_optimizer(0.3)
    save_checkpoint(path, model, opt)
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline() == b"writing\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    orphans = [p for p in tmp_path.iterdir() if p.name != "ck.pt"]
    assert len(orphans) == 1 and orphans[0].name.startswith(".ck.pt.") and orphans[0].name.endswith(".tmp")
    assert orphans[0].stat().st_size > 0
    assert path.read_bytes() == before  # the kill left the checkpoint as it was
    (tmp_path / ".other.pt.123-abc.tmp").write_bytes(b"x")  # another checkpoint's temporary: not ours to remove
    live = tmp_path / f".ck.pt.{os.getppid()}-abc.tmp"  # a writer that is alive: kept
    live.write_bytes(b"x")
    save_checkpoint(path, model, opt)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ck.pt", ".other.pt.123-abc.tmp", live.name])
    load_checkpoint(path, model, opt)


def test_truncated_or_corrupted_checkpoints_are_named_in_a_clear_error(tmp_path):
    model, opt = model_and_optimizer(0.3)
    good = save_checkpoint(tmp_path / "good.pt", model, opt).read_bytes()
    cases = {"half.pt": (good[:len(good) // 2], "truncated"),
             "tail.pt": (good[:-10], "truncated"),
             "empty.pt": (b"", "truncated"),
             "text.pt": (b"hello, I am not a checkpoint\n" * 20, "not a sparse-engine checkpoint")}
    flipped = bytearray(good)
    data = good.index(model.state_dict()["0.weight.values"].numpy().tobytes()[:64])  # inside a tensor's bytes
    flipped[data + 3] ^= 0x40
    cases["flipped.pt"] = (bytes(flipped), "corrupted")
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message) as err:
            load_checkpoint(tmp_path / name, model, opt)
        assert str(tmp_path / name) in str(err.value)


def bad_checkpoints(good: bytes, tmp_path) -> dict:
    """name -> path of a file that is not a sparse-engine checkpoint or is damaged, one of each kind."""
    import pickle
    import zipfile

    rng = torch.Generator().manual_seed(0)
    files = {"empty": b"", "truncated": good[:len(good) // 2], "random": torch.randint(0, 256, (4096,),
                                                                                        generator=rng,
                                                                                        dtype=torch.uint8).numpy().tobytes(),
             "text": b"hello, I am not a checkpoint\n" * 20, "pickle": pickle.dumps({"model": {}})}
    paths = {name: tmp_path / f"{name}.pt" for name in files}
    for name, content in files.items():
        paths[name].write_bytes(content)
    for name, obj in {"dict": {"x": torch.ones(3)}, "list": [1, 2, 3], "tensor": torch.zeros(2)}.items():
        paths[name] = tmp_path / f"{name}.pt"
        torch.save(obj, paths[name])  # a plain torch.save of something else
    # a zip archive whose CRCs hold but whose pickle is cut short: torch.load's own errors are internals
    # (KeyError, 'Memo value not found', ...)
    paths["pickle-cut"] = tmp_path / "pickle-cut.pt"
    with zipfile.ZipFile(tmp_path / "good.pt") as src, zipfile.ZipFile(paths["pickle-cut"], "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:len(data) // 2] if info.filename.endswith("data.pkl") else data)
    paths["other-zip"] = tmp_path / "other-zip.pt"
    with zipfile.ZipFile(paths["other-zip"], "w") as z:
        z.writestr("readme.txt", "a zip archive, not a checkpoint")
    return paths


def test_every_kind_of_bad_file_is_one_clear_error(tmp_path, capsys):
    """Empty, truncated, random bytes, text, a pickle, a torch.save of something else, a zip with a
    cut pickle, another zip: CheckpointError (a ValueError) from Python, naming the file and saying
    'not a sparse-engine checkpoint (or damaged)'; from the command line one such line, exit code 1,
    and no unpickler internals."""
    from sparse_engine import cli
    from sparse_engine.io.checkpoint import CheckpointError

    model, opt = model_and_optimizer(0.3)
    good = save_checkpoint(tmp_path / "good.pt", model, opt).read_bytes()
    paths = bad_checkpoints(good, tmp_path)
    assert len(paths) == 10
    internals = ("KeyError", "Memo", "Traceback", "Unpickling", "weights_only", "invalid load key")
    for name, path in paths.items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        message = str(err.value)
        assert isinstance(err.value, ValueError) and err.value.path == path, name
        assert message.startswith(f"{path}: not a sparse-engine checkpoint (or damaged)"), (name, message)
        assert "\n" not in message and not any(word in message for word in internals), (name, message)
        assert cli.main(["train", "--resume", str(path)]) == 1, name
        lines = capsys.readouterr().err.splitlines()
        assert lines == [f"sparse-engine: error: {message}"], (name, lines)
        if name not in ("dict", "list", "tensor"):  # analyze reads any PyTorch checkpoint: these are readable
            assert cli.main(["analyze", str(path)]) == 1, name
            lines = capsys.readouterr().err.splitlines()
            assert len(lines) == 1 and f"{path}: not a sparse-engine checkpoint (or damaged)" in lines[0], (name, lines)
            assert not any(word in lines[0] for word in internals), (name, lines)


class _RunsCode:
    """Pickles as a call of os.system-like code: what a hostile file would hold."""

    def __reduce__(self):
        return (_record_call, ("ran",))


_CALLS = []


def _record_call(text):
    _CALLS.append(text)
    return text


def test_a_checkpoint_that_pickles_code_is_refused_unrun(tmp_path):
    """load_checkpoint (train --resume, analyze) reads with torch.load(weights_only=True): a file
    pickling a call is refused in one line and the call never runs (before: weights_only=False
    ran it, then said the file was not a checkpoint)."""
    from sparse_engine.io.checkpoint import CheckpointError, FORMAT, load_checkpoint

    path = tmp_path / "hostile.pt"
    torch.save({"format": FORMAT, "model": {}, "extra": {"x": _RunsCode()}}, path)
    _CALLS.clear()
    with pytest.raises(CheckpointError, match="pickles objects other than tensors and containers"):
        load_checkpoint(path)
    assert _CALLS == []
    assert load_checkpoint(path, weights_only=False)["extra"]["x"] == "ran" and _CALLS == ["ran"]  # a trusted file


def test_saving_through_a_symlink_replaces_its_target(tmp_path):
    """os.replace on a link replaced the link with a regular file, and the file it named stayed
    stale: the link stays, the target gets the new checkpoint."""
    (tmp_path / "runs").mkdir()
    target, link = tmp_path / "runs" / "real.pt", tmp_path / "latest.pt"
    model = SparseLinear(4, 3, density=0.5)
    save_checkpoint(target, model, step=1)
    link.symlink_to(target)
    save_checkpoint(link, model, step=2)
    assert link.is_symlink() and os.path.realpath(link) == str(target)
    assert load_checkpoint(target)["extra"]["step"] == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["real.pt"]  # no temporary left
