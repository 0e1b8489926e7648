"""Dataset readers on the real files of the data folder (tests/conftest.py: SPARSE_ENGINE_DATA), and the
Mackey-Glass generator."""
import gzip

import pytest
import torch

from sparse_engine.data import (digits, load_gesture, load_mnist, load_series, load_sms_spam, mackey_glass,
                                sequence_windows)
from sparse_engine.data.files import GESTURE_PHASES


def test_mnist_test_set(shared_data):
    images, labels = load_mnist(shared_data("mnist_test"))
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert set(labels.tolist()) == set(range(10))
    with gzip.open(shared_data("mnist_test", "t10k-labels-idx1-ubyte.gz")) as f:
        raw = f.read()
    assert labels[:20].tolist() == list(raw[8:28])  # labels start after an 8-byte header


def test_sms_spam_collection(shared_data):
    texts, labels = load_sms_spam(shared_data("sms_spam", "SMSSpamCollection"))
    lines = [l for l in shared_data("sms_spam", "SMSSpamCollection").read_text(encoding="utf-8", errors="replace").splitlines() if l]
    assert len(texts) == len(labels) == len(lines) == 5574
    assert int(labels.sum()) == sum(l.startswith("spam\t") for l in lines)
    assert texts[0] == lines[0].split("\t", 1)[1]


def test_gesture_recordings(shared_data):
    recordings = load_gesture(shared_data("gesture"))
    assert len(recordings) == 7
    feats, phases = recordings[0]
    assert feats.shape[1] == 32 and feats.shape[0] == phases.shape[0]
    first = shared_data("gesture", "a1_va3.csv").read_text().splitlines()[1].split(",")
    assert feats[0, 0].item() == pytest.approx(float(first[0]))
    assert phases[0].item() == GESTURE_PHASES.index(first[-1])


def test_generated_mackey_glass_matches_the_shipped_series_statistics(shared_data):
    real = load_series(shared_data("mackey_glass", "MackeyGlass_t17.txt"))
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
    with pytest.raises(ValueError, match="task must be one of"):
        load_task("imagenet", None, seed=0)
    for task in ("mnist", "sms", "gesture"):
        with pytest.raises(ValueError, match=f"task '{task}' needs"):
            load_task(task, None, seed=0)


def test_sms_task_is_left_padded_word_ids(shared_data):
    from sparse_engine.data import load_task

    (Xtr, ytr), (Xte, _), meta = load_task("sms", str(shared_data("sms_spam", "SMSSpamCollection")), seed=0)
    assert len(Xtr) + len(Xte) == 5574 and Xtr.shape[1] == 40 and Xtr.dtype == torch.int64
    assert meta["n_out"] == 2 and 2 < meta["vocab"] <= 5000 and int(Xtr.max()) < meta["vocab"]
    pad = Xtr == 0
    assert pad.any() and torch.equal(pad, pad.cummin(dim=1).values)  # padding only before the words
    assert set(ytr.tolist()) == {0, 1}


def test_default_task_needs_only_declared_dependencies():
    """``pip install .`` then ``sparse-engine train`` works: every distribution the default task
    (digits) imports is a declared dependency or something one of them requires."""
    import importlib.metadata as md
    import json
    import re
    import subprocess
    import sys
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]

    def name(requirement):
        return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()

    declared = {name(r) for r in project["dependencies"]}
    assert "scikit-learn" in declared  # the digits loader's package, not only an extra
    allowed, todo = set(), list(declared)
    while todo:  # the declared distributions and everything they require, unconditionally or not
        dist = todo.pop()
        if dist in allowed:
            continue
        allowed.add(dist)
        try:
            requires = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        todo += [name(r) for r in requires if "extra ==" not in r.replace('"', "'").replace("extra==", "extra ==")]
    code = ("import sys, json; from sparse_engine.data import load_task; "
            "(X, y), _, meta = load_task('digits', None, seed=0); assert meta['n_out'] == 10; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    providers = md.packages_distributions()
    imported = {name(d) for m in json.loads(out.splitlines()[-1]) for d in providers.get(m, ())}
    assert "scikit-learn" in imported
    assert imported - {"sparse-engine"} <= allowed, f"undeclared: {sorted(imported - allowed)}"


def test_readers_name_the_file_and_line_of_a_malformed_file(tmp_path):
    """Empty, truncated and malformed files: ValueError naming the file (and the line), never
    an IndexError, StopIteration or a numpy message without the file."""
    gesture = tmp_path / "g_va3.csv"
    header = ",".join(f"f{i}" for i in range(32)) + ",Phase\n"
    for text, match in [("", "is empty"), (header, "no frames"), ("a,b,Phase\n", ":1: expected 32 feature"),
                        (header + ",".join(["1"] * 32) + ",D\n" + ",".join(["1"] * 31) + ",x,D\n",
                         ":3: expected 32 numbers"),
                        (header + ",".join(["1"] * 32) + "\n", ":2: expected 33 columns"),
                        (header + ",".join(["1"] * 32) + ",Z\n", ":2: unknown phase 'Z'")]:
        gesture.write_text(text)
        with pytest.raises(ValueError, match=match) as err:
            load_gesture(gesture)
        assert str(gesture) in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*_va3.csv files"):
        load_gesture(tmp_path / "empty")
    series = tmp_path / "series.txt"
    series.write_text("")
    with pytest.raises(ValueError, match="holds no values"):
        load_series(series)
    series.write_text("0.5\n# a comment\n\n0.25\nabc\n")
    with pytest.raises(ValueError, match=r"series.txt:5: expected one finite number a line, got 'abc'"):
        load_series(series)
    series.write_text("0.5\n# a comment\n\n0.25\n")
    assert load_series(series).tolist() == [0.5, 0.25]
    sms = tmp_path / "sms.txt"
    sms.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no messages"):
        load_sms_spam(sms)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_sms_spam(tmp_path)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    with gzip.open(mnist / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100))
    (mnist / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + bytes(50))[:20])
    with pytest.raises(ValueError, match="header says"):
        load_mnist(mnist)
    (mnist / "t10k-images-idx3-ubyte.gz").unlink()
    (mnist / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (1).to_bytes(4, "big") + b"\1")
    with pytest.raises(ValueError, match="cannot be read as gzip"):
        load_mnist(mnist)
    with pytest.raises(NotADirectoryError, match="MNIST directory"):
        load_mnist(sms)


def test_a_task_with_too_few_examples_says_so(tmp_path):
    from sparse_engine.data import load_task

    series = tmp_path / "short.txt"
    series.write_text("\n".join(["0.1"] * 20))
    with pytest.raises(ValueError, match="short.txt: series of 20 values is too short"):
        load_task("mackey-glass", str(series), seed=0)
    series.write_text("\n".join(["0.1"] * 52))  # two windows, taken every fifth: one example
    with pytest.raises(ValueError, match="too few to split"):
        load_task("mackey-glass", str(series), seed=0)


def test_path_checks(tmp_path):
    """What the recipes check before any work: outputs that can be written, inputs that exist."""
    from sparse_engine.data.files import input_path_problem, output_path_problem

    assert output_path_problem(tmp_path / "ck.pt") is None
    assert "does not exist" in output_path_problem(tmp_path / "missing" / "ck.pt")
    assert "is a directory" in output_path_problem(tmp_path)
    (tmp_path / "file").write_text("")
    assert "is not a directory" in output_path_problem(tmp_path / "file" / "ck.pt")
    assert output_path_problem(tmp_path / "file") is None  # overwriting a file is fine
    assert "expected a file name" in output_path_problem("")
    assert "does not exist" in input_path_problem(tmp_path / "nope")
    assert "is not a file" in input_path_problem(tmp_path, "file")
    assert "is not a directory" in input_path_problem(tmp_path / "file", "dir")


def test_mackey_glass_test_windows_start_after_the_training_ones_end(tmp_path):
    """The windows overlap (50 steps, 5 apart): split at random, every test target was a training
    value too. Now the first 80% train and the test windows start after the last training target:
    no series position is in both (a series of distinct values, one per position, shows it)."""
    from sparse_engine.data.tasks import load_task

    path = tmp_path / "series.txt"
    path.write_text("\n".join(str(float(i)) for i in range(6000)) + "\n")  # each value its position
    (Xtr, ytr), (Xte, yte), meta = load_task("mackey-glass", str(path), seed=0)
    train = set(torch.cat([Xtr.flatten(), ytr.flatten()]).tolist())
    test = set(torch.cat([Xte.flatten(), yte.flatten()]).tolist())
    assert not train & test
    assert len(Xtr) == int(0.8 * (len(Xtr) + len(Xte) + 10)) and len(Xte) > 200
    torch.testing.assert_close(Xtr[:, 1:], ytr[:, :-1])  # the targets: the next values
    again = load_task("mackey-glass", str(path), seed=1)  # in time: the same for every seed
    assert torch.equal(again[0][0], Xtr) and torch.equal(again[1][0], Xte)


def test_nan_and_inf_in_data_files_are_refused_with_the_line(tmp_path):
    """A 'nan' or 'inf' sample was read as one: training went on with NaN losses and exit code 0."""
    import numpy as np

    from sparse_engine.data.files import load_table

    series = tmp_path / "s.txt"
    series.write_text("1.0\n2.0\nnan\n")
    with pytest.raises(ValueError, match=r"s.txt:3: expected one finite number a line, got 'nan'"):
        load_series(series)
    table = tmp_path / "t.csv"
    table.write_text("a,b,label\n1,2,x\n3,inf,y\n")
    with pytest.raises(ValueError, match=r"t.csv:3: expected finite numbers in every column but 'label'"):
        load_table(table, "label")
    npz = tmp_path / "t.npz"
    np.savez(npz, X=np.array([[1.0, 2.0], [np.nan, 0.0]]), label=np.array([0, 1]))
    with pytest.raises(ValueError, match="X row 1 holds a value that is not a finite number"):
        load_table(npz, "label")
    gesture = tmp_path / "g.csv"
    head = ",".join(f"f{i}" for i in range(32)) + ",Phase\n"
    gesture.write_text(head + ",".join(["0.5"] * 31 + ["nan", "D"]) + "\n")
    with pytest.raises(ValueError, match=r"g.csv:2: expected 32 numbers then a phase \(.*nan is not a finite"):
        load_gesture(gesture)


def test_missing_data_says_where_to_get_it(tmp_path):
    """A missing dataset's error names the fetch command and the dataset's page (or, for the
    corpora, which sparse_engine does not fetch, where they are published)."""
    from sparse_engine.data import load_corpus

    for load, name in ((load_mnist, "mnist_test"), (load_gesture, "gesture"), (load_sms_spam, "sms_spam")):
        with pytest.raises(FileNotFoundError, match=f"python -m sparse_engine.data.fetch {name} --root data"):
            load(tmp_path / "nothing-here" if load is not load_mnist else tmp_path)
    with pytest.raises(FileNotFoundError, match="simple-examples.tgz.*pytorch/examples"):
        load_corpus(tmp_path)


def test_sms_vocabulary_and_gesture_scaling_come_from_the_training_split(tmp_path):
    """--task sms (ours, not the zhang variant) counted the test messages' words too, giving words
    seen only in test their own ids; --task gesture standardised with the held-out recording's
    frames. Now both are fitted on the training split alone."""
    from sparse_engine.data.files import GESTURE_PHASES
    from sparse_engine.data.tasks import load_task

    sms = tmp_path / "sms.txt"  # every message its own word: a test message's word is unknown (1)
    sms.write_text("".join(f"{'spam' if i % 3 == 0 else 'ham'}\tword{i} common\n" for i in range(50)))
    (Xtr, _), (Xte, _), meta = load_task("sms", str(sms), seed=0)
    assert set(Xte.flatten().tolist()) <= {0, 1, 2} and (Xte == 1).sum() == len(Xte)  # 2: "common"
    assert meta["vocab"] == 2 + 1 + len(Xtr)  # padding, unknown, "common" and one word per training message
    folder = tmp_path / "gesture"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    head = ",".join(f"f{i}" for i in range(32)) + ",Phase\n"
    for k in range(5):  # the last recording (held out) far from the others
        rows = torch.randn(40, 32, generator=g) + (100.0 if k == 4 else 0.0)
        (folder / f"r{k}_va3.csv").write_text(head + "".join(
            ",".join(f"{v:.4f}" for v in r.tolist()) + f",{GESTURE_PHASES[i % 5]}\n" for i, r in enumerate(rows)))
    (Gtr, _), (Gte, _), _ = load_task("gesture", str(folder), seed=0)
    assert abs(float(Gtr.mean())) < 0.1 and float(Gte.mean()) > 50  # the training frames' scale
