"""Dataset readers on the real files in ../shared/data, and the Mackey-Glass generator."""
import gzip

import pytest
import torch

from sparse_engine.data import (digits, load_gesture, load_mnist, load_series, load_sms_spam, mackey_glass,
                                sequence_windows)
from sparse_engine.data.files import GESTURE_PHASES
from _paths import DATA

needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared data folder {DATA} is not present")


@needs_data
def test_mnist_test_set():
    images, labels = load_mnist(DATA / "mnist_test")
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert set(labels.tolist()) == set(range(10))
    with gzip.open(DATA / "mnist_test" / "t10k-labels-idx1-ubyte.gz") as f:
        raw = f.read()
    assert labels[:20].tolist() == list(raw[8:28])  # labels start after an 8-byte header


@needs_data
def test_sms_spam_collection():
    texts, labels = load_sms_spam(DATA / "sms_spam" / "SMSSpamCollection")
    lines = [l for l in (DATA / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8", errors="replace").splitlines() if l]
    assert len(texts) == len(labels) == len(lines) == 5574
    assert int(labels.sum()) == sum(l.startswith("spam\t") for l in lines)
    assert texts[0] == lines[0].split("\t", 1)[1]


@needs_data
def test_gesture_recordings():
    recordings = load_gesture(DATA / "gesture")
    assert len(recordings) == 7
    feats, phases = recordings[0]
    assert feats.shape[1] == 32 and feats.shape[0] == phases.shape[0]
    first = (DATA / "gesture" / "a1_va3.csv").read_text().splitlines()[1].split(",")
    assert feats[0, 0].item() == pytest.approx(float(first[0]))
    assert phases[0].item() == GESTURE_PHASES.index(first[-1])


@needs_data
def test_generated_mackey_glass_matches_the_shipped_series_statistics():
    real = load_series(DATA / "mackey_glass" / "MackeyGlass_t17.txt")
    assert real.shape == (50_000,)
    ours = mackey_glass(5000)
    # the same attractor: range, mean and spread agree with the real file's
    assert abs(float(ours.min()) - float(real.min())) < 0.05
    assert abs(float(ours.max()) - float(real.max())) < 0.05
    assert abs(float(ours.mean()) - float(real.mean())) < 0.03
    assert abs(float(ours.std()) - float(real.std())) < 0.03


def test_mackey_glass_solves_its_equation():
    """Finite differences of the raw series satisfy the delay equation."""
    dt = 0.1
    x = mackey_glass(3000, subsample=1, dt=dt, transform="none").double()
    d = int(17 / dt)
    dx = (x[d + 2:] - x[d:-2]) / (2 * dt)
    rhs = 0.2 * x[1:-d - 1] / (1 + x[1:-d - 1] ** 10) - 0.1 * x[d + 1:-1]
    assert float((dx - rhs).abs().max()) < 1e-3


def test_windows_and_digits():
    s = torch.arange(10.0)
    x, y = sequence_windows(s, 4)
    assert x.shape == (6, 4, 1) and torch.equal(y[:, :, 0], x[:, :, 0] + 1)
    with pytest.raises(ValueError, match="too short"):
        sequence_windows(s, 10)
    images, labels = digits()
    assert images.shape == (1797, 64) and float(images.max()) == 1.0 and labels.max() == 9


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST directory"):
        load_mnist(tmp_path / "missing")
    bad = tmp_path / "sms.txt"
    bad.write_text("maybe\thello\n")
    with pytest.raises(ValueError, match="expected 'ham\\|spam<TAB>text'"):
        load_sms_spam(bad)
    with pytest.raises(ValueError, match="transform must be"):
        mackey_glass(10, transform="log")


def test_tasks_split_by_seed():
    """load_task: a seeded 80/20 split with the shapes and metadata the models are built from."""
    from sparse_engine.data import load_task

    (Xtr, ytr), (Xte, yte), meta = load_task("digits", None, seed=0)
    assert Xtr.shape == (1437, 8, 8) and Xte.shape == (360, 8, 8) and len(ytr) == 1437 and len(yte) == 360
    assert meta == dict(n_in=8, n_out=10, kind="classify")
    assert torch.equal(load_task("digits", None, seed=0)[1][0], Xte)
    assert not torch.equal(load_task("digits", None, seed=1)[1][0], Xte)
    (Xtr, ytr), _, meta = load_task("mackey-glass", None, seed=0)
    assert Xtr.shape[1:] == (50, 1) and ytr.shape == Xtr.shape and meta["kind"] == "regress"
    with pytest.raises(SystemExit, match="--task must be one of"):
        load_task("imagenet", None, seed=0)


@needs_data
def test_sms_task_is_left_padded_word_ids():
    from sparse_engine.data import load_task

    (Xtr, ytr), (Xte, _), meta = load_task("sms", str(DATA / "sms_spam" / "SMSSpamCollection"), seed=0)
    assert len(Xtr) + len(Xte) == 5574 and Xtr.shape[1] == 40 and Xtr.dtype == torch.int64
    assert meta["n_out"] == 2 and 2 < meta["vocab"] <= 5000 and int(Xtr.max()) < meta["vocab"]
    pad = Xtr == 0
    assert pad.any() and torch.equal(pad, pad.cummin(dim=1).values)  # padding only before the words
    assert set(ytr.tolist()) == {0, 1}
