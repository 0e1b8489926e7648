"""The sequence tasks the ``train`` recipe learns: each dataset of this package turned into
train/test splits of fixed-length sequences plus what a model needs to know about them
(input width, classes, classification or regression). Lives apart from the file readers so
that those stay plain readers, and apart from the command line so that a notebook can load
the same splits the CLI trains on."""
from __future__ import annotations

import re
from collections import Counter

import torch

from .files import GESTURE_PHASES, load_gesture, load_mnist, load_series, load_sms_spam, load_table
from .generated import digits, mackey_glass, sequence_windows

TASKS = ("digits", "mackey-glass", "mnist", "sms", "gesture", "table")  # table: --model mlp only
# what ``data`` (``--data``) names for each task that reads a file: (file or dir, description);
# the tasks marked required cannot run without one (mackey-glass generates its series).
TASK_DATA = {
    "mnist": ("dir", "a directory holding the MNIST idx files", True),
    "sms": ("file", "the SMS Spam Collection file", True),
    "gesture": (None, "a *_va3.csv file or a directory of them", True),
    "mackey-glass": ("file", "a one-value-a-line series file", False),  # generated when absent
    "table": ("file", "a feature matrix: a CSV file with a header row, or an .npz with X and the label array", True),
}
GESTURE_WINDOW = 16  # frames per example: the phase of the last frame is the label
MG_WINDOW, MG_STRIDE = 50, 5  # mackey-glass: steps per example, steps between examples


def task_data_problem(task: str, data) -> str | None:
    """Why ``data`` does not suit ``task`` before anything is read (the task needs a path and
    has none; digits takes none), or None."""
    if task not in TASK_DATA:
        return None if data is None else f"task {task!r} reads no data file, got {str(data)!r}"
    kind, what, required = TASK_DATA[task]
    if data is None and required:
        return f"task {task!r} needs {what}"
    return None


# Zhang et al.'s SMS preprocessing (their data/SMS_preprocess.py, tf.contrib's VocabularyProcessor):
# the text as ASCII (their copy of the file drops other characters), punctuation, underscores and digits
# removed, lower case; the words seen more than 10 times, ordered by count then alphabetically, from id 1;
# id 0 both for the other words and for the padding after the first 25 words.
ZHANG_SMS = dict(length=25, min_count=11, clean=True, pad="post", ascii=True, unknown_is_padding=True)
# Zhang et al.'s MNIST pipeline (MNIST/MNIST_*.py, tf's input_data): pixels in [0, 1], the first 55,000
# training images (the last 5,000 are its validation set, unused), the first 500 test images to test;
# its "epoch" is 50 batches of 128 drawn from shuffled passes (next_batch). Without the training files
# (only the test set given) the other 9,500 test images train.
ZHANG_MNIST = dict(train=55000, test=500, epoch_batches=50)
# Zhang et al.'s Gesture pipeline (their data/Gesture_preprocess.py, after the LTC paper's): the seven
# recordings in this order, each cut into 32-frame sequences plus the sequences half-way between
# them, labelled at every frame; features standardised over all those frames; one fixed permutation
# (numpy RandomState(23489)) holds out 10% for validation and the next 15% for testing.
ZHANG_GESTURE = dict(files=("a3_va3.csv", "b1_va3.csv", "b3_va3.csv", "c1_va3.csv", "c3_va3.csv", "a2_va3.csv",
                            "a1_va3.csv"), length=32, split_seed=23489, valid=0.1, test=0.15)
# Zhang et al.'s Mackey-Glass pipeline (Mackey_Glass/MG_*.py and data/MG_preprocess.py): the first 80% of
# the series trains, the last 20% tests, no normalisation; the training part is cut into 12 rows
# (the batch), each into 500-step inputs followed by the 50 values to predict from the last state;
# one batch is the 12 rows at one offset, in order; the code's "epoch" is 10 passes over them.
# The test part is one row (batch 1) cut the same way.
ZHANG_MACKEY_GLASS = dict(rows=12, input_width=500, label_width=50, passes=10, train=0.8)
VARIANTS = {"mnist": {"zhang": ZHANG_MNIST}, "sms": {"zhang": ZHANG_SMS}, "gesture": {"zhang": ZHANG_GESTURE},
            "mackey-glass": {"zhang": ZHANG_MACKEY_GLASS}}


def load_task(task: str, data: str | None, seed: int, *, label_column: str | None = None,
              variant: str | None = None):
    """(train, test, meta): train/test are (inputs, targets); inputs (N, T, F) float or (N, T)
    token ids; meta holds n_in, n_out, kind ('classify' or 'regress') and vocab size.
    Task ``table`` (a feature matrix, for --model mlp: inputs (N, F), standardised with the
    training split's mean and deviation) reads its labels from the column ``label_column``.
    ``variant``: a paper's preprocessing of the task (:data:`VARIANTS`: "zhang" for mnist, sms,
    gesture and mackey-glass). meta may also say how the paper's code batches: ``epoch_batches``
    (an epoch is that many batches from shuffled passes), ``drop_last``, ``shuffle``.
    ValueError for an unknown task or variant or a missing ``data``; the readers' errors for bad files."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    if variant is not None and variant not in VARIANTS.get(task, {}):
        raise ValueError(f"variant: task {task!r} has {sorted(VARIANTS.get(task, {})) or 'no variants'}, "
                         f"got {variant!r}")
    problem = task_data_problem(task, data)
    if problem is not None:
        raise ValueError(f"data: {problem}")
    g = torch.Generator().manual_seed(seed)
    if task == "digits":
        X, y = digits()
        X = X.view(-1, 8, 8)
        meta = dict(n_in=8, n_out=10, kind="classify")
    elif task == "mnist" and variant == "zhang":
        return _zhang_mnist(data, **ZHANG_MNIST)
    elif task == "mnist":
        meta = dict(n_in=28, n_out=10, kind="classify")
        if _has_mnist_train(data):  # the standard split: 60,000 training and 10,000 test images
            return load_mnist(data, "train"), load_mnist(data), meta
        X, y = load_mnist(data)  # the test set alone: split 80/20 below
    elif task == "table":
        if label_column is None:
            raise ValueError("label_column: task 'table' needs the name of its label column")
        X, y, classes = load_table(data, label_column)
        meta = dict(n_in=X.shape[1], n_out=len(classes), kind="classify")
    elif task == "sms" and variant is None:  # the vocabulary from the training messages alone
        texts, y = load_sms_spam(data)
        tr, te = _random_split(len(texts), g, task, data)
        X, vocab = _word_ids(texts, length=40, fit_on=tr.tolist())
        return (X[tr], y[tr]), (X[te], y[te]), dict(n_in=50, n_out=2, kind="classify", vocab=vocab)
    elif task == "sms":
        texts, y = load_sms_spam(data)
        X, vocab = _word_ids(texts, **VARIANTS["sms"][variant])
        meta = dict(n_in=50, n_out=2, kind="classify", vocab=vocab)
    elif task == "gesture" and variant == "zhang":
        return _zhang_gesture(data, **ZHANG_GESTURE)
    elif task == "mackey-glass" and variant == "zhang":
        # without a file: a generated series as long as MackeyGlass_t17.txt (50,000 values)
        return _zhang_mackey_glass(load_series(data) if data else mackey_glass(50000), **ZHANG_MACKEY_GLASS)
    elif task == "gesture":
        recordings = load_gesture(data)
        meta = dict(n_in=recordings[0][0].shape[1], n_out=len(GESTURE_PHASES), kind="classify")
        if len(recordings) >= 2:  # whole recordings held out: overlapping windows would leak
            n_test = max(1, round(0.2 * len(recordings)))
            fit = recordings[:-n_test]  # standardised by the training frames alone
            train = _gesture_windows(fit, fit, GESTURE_WINDOW)
            return train, _gesture_windows(recordings[-n_test:], fit, GESTURE_WINDOW), meta
        X, y = _gesture_windows(recordings, recordings, GESTURE_WINDOW)
    else:  # mackey-glass: the first 80% of the windows train, the later ones test
        series = load_series(data) if data else mackey_glass(6000)
        try:
            X, y = sequence_windows(series[:6000], length=MG_WINDOW)
        except ValueError as exc:
            raise ValueError(f"{data}: {exc}" if data else str(exc)) from None
        X, y = X[::MG_STRIDE], y[::MG_STRIDE]
        meta = dict(n_in=1, n_out=1, kind="regress")
        # windows overlap: a random split would test on values trained on; the test windows start
        # after the last training window's target ends
        cut, gap = int(0.8 * len(X)), -(-MG_WINDOW // MG_STRIDE)
        if cut == 0 or cut + gap >= len(X):
            raise ValueError(f"task 'mackey-glass': {len(X)} windows are too few to split 80/20 in time into train "
                             "and test" + (f" (data: {data})" if data else ""))
        return (X[:cut], y[:cut]), (X[cut + gap:], y[cut + gap:]), meta
    tr, te = _random_split(len(X), g, task, data)
    if task == "table":
        mean, std = X[tr].mean(0), X[tr].std(0).clamp_min(1e-6)
        X = (X - mean) / std
    return (X[tr], y[tr]), (X[te], y[te]), meta


def _random_split(n: int, g: torch.Generator, task: str, data) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices of ``n`` examples split 80/20 at random by ``g``; ValueError where one
    side would be empty."""
    perm, cut = torch.randperm(n, generator=g), int(0.8 * n)
    if cut == 0 or cut == n:
        raise ValueError(f"task {task!r}: {n} examples are too few to split 80/20 into train and test"
                         + (f" (data: {data})" if data else ""))
    return perm[:cut], perm[cut:]


def _zhang_mnist(data, train: int, test: int, epoch_batches: int):
    """Zhang et al.'s MNIST (:data:`ZHANG_MNIST`): (train, test, meta); an epoch is ``epoch_batches``
    batches (meta), not one pass."""
    meta = dict(n_in=28, n_out=10, kind="classify", epoch_batches=epoch_batches)
    Xte, yte = load_mnist(data)
    if _has_mnist_train(data):
        Xtr, ytr = load_mnist(data, "train")
        return (Xtr[:train], ytr[:train]), (Xte[:test], yte[:test]), meta
    return (Xte[test:], yte[test:]), (Xte[:test], yte[:test]), meta


def _zhang_gesture(data, files, length: int, split_seed: int, valid: float, test: float):
    """Zhang et al.'s Gesture split (:data:`ZHANG_GESTURE`): (train, test, meta), inputs (N, 32, 32),
    targets (N, 32) a phase per frame; the validation part is left out (the code only reports it)."""
    import numpy as np
    from pathlib import Path

    d = Path(data)
    if not d.is_dir():
        raise ValueError(f"data: the zhang gesture split needs the directory holding {', '.join(files)}; "
                         f"got {str(data)!r}")
    missing = [f for f in files if not (d / f).is_file()]
    if missing:
        raise ValueError(f"data: {d} lacks {', '.join(missing)} (the zhang gesture split reads {', '.join(files)})")
    xs, ys = [], []
    for name in files:
        (feats, phases), = load_gesture(d / name)
        count = len(feats) // length
        for s in range(count):  # a sequence, then (but after the last) the one half a sequence later
            for start in ((s * length, s * length + length // 2) if s < count - 1 else (s * length,)):
                xs.append(feats[start:start + length])
                ys.append(phases[start:start + length])
    X, y = torch.stack(xs).double(), torch.stack(ys)
    flat = X.reshape(-1, X.shape[-1])
    X = ((X - flat.mean(0)) / flat.std(0, unbiased=False)).float()  # numpy's std: the population one
    perm = torch.from_numpy(np.random.RandomState(split_seed).permutation(len(X)))
    n_valid, n_test = int(valid * len(X)), int(test * len(X))
    te, tr = perm[n_valid:n_valid + n_test], perm[n_valid + n_test:]
    meta = dict(n_in=X.shape[-1], n_out=len(GESTURE_PHASES), kind="classify", readout="steps", drop_last=True)
    return (X[tr], y[tr]), (X[te], y[te]), meta


def _zhang_mackey_glass(series, rows: int, input_width: int, label_width: int, passes: int, train: float):
    """Zhang et al.'s Mackey-Glass windows (:data:`ZHANG_MACKEY_GLASS`): (train, test, meta), inputs
    (N, 500, 1), targets (N, 50); the training windows ordered as the code's batches (batch b of a pass
    is the ``rows`` rows at offset b) and repeated ``passes`` times, so that one epoch is the code's."""
    series = series.float().reshape(-1)
    cut = int(len(series) * train)

    def windows(part, n_rows):
        row_len = len(part) // n_rows
        per_row = (row_len - label_width) // input_width
        if per_row <= 0:
            raise ValueError(f"series of {len(series)} values is too short for the zhang mackey-glass windows "
                             f"({n_rows} rows of {input_width} + {label_width} values)")
        grid = part[:n_rows * row_len].reshape(n_rows, row_len)
        x = [grid[:, i * input_width:(i + 1) * input_width] for i in range(per_row)]
        t = [grid[:, (i + 1) * input_width:(i + 1) * input_width + label_width] for i in range(per_row)]
        return torch.cat(x).unsqueeze(-1), torch.cat(t)  # offset-major: the rows of offset 0, then 1, ...

    Xtr, ytr = windows(series[:cut], rows)
    Xte, yte = windows(series[cut:], 1)
    meta = dict(n_in=1, n_out=label_width, kind="regress", readout="last", shuffle=False)
    return (Xtr.repeat(passes, 1, 1), ytr.repeat(passes, 1)), (Xte, yte), meta


def _has_mnist_train(directory) -> bool:
    from pathlib import Path

    d = Path(directory)
    return all((d / f"train-{k}").exists() or (d / f"train-{k}.gz").exists()
               for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def _gesture_windows(recordings, all_recordings, length: int, stride: int = 2):
    """Windows of ``length`` frames (every ``stride``-th start) from each recording, labelled by
    the phase of their last frame; features standardised over the frames of all_recordings."""
    frames = torch.cat([f for f, _ in all_recordings])
    mean, std = frames.mean(0), frames.std(0).clamp_min(1e-6)
    xs, ys = [], []
    for feats, phases in recordings:
        if len(feats) < length:
            continue
        starts = torch.arange(0, len(feats) - length + 1, stride)
        idx = starts[:, None] + torch.arange(length)[None, :]
        xs.append((feats[idx] - mean) / std)
        ys.append(phases[idx[:, -1]])
    if not xs:
        raise ValueError(f"gesture recordings are shorter than {length} frames")
    return torch.cat(xs), torch.cat(ys)


def _word_ids(texts, length: int, max_vocab: int = 5000, min_count: int = 1, clean: bool = False,
              pad: str = "pre", ascii: bool = False, unknown_is_padding: bool = False, fit_on=None):
    """Lower-cased word ids (0 = padding, 1 = unknown): the ``max_vocab`` - 2 most frequent
    words seen at least ``min_count`` times (ties: alphabetically); ``ascii`` drops non-ASCII
    characters and ``clean`` punctuation, underscores and digits first; ``pad="pre"`` keeps the
    last ``length`` words, left-padded, ``"post"`` the first ``length``, right-padded;
    ``unknown_is_padding``: the unknown words are 0 too and the words start at 1; ``fit_on``: the
    indices of the texts whose words make the vocabulary (None: all)."""
    if ascii:
        texts = [t.encode("ascii", errors="ignore").decode() for t in texts]
    if clean:
        texts = [" ".join(re.sub(r"([^\s\w]|_|[0-9])+", "", t).split()) for t in texts]
    words = [t.lower().split() for t in texts]
    first = 1 if unknown_is_padding else 2
    fit = words if fit_on is None else [words[i] for i in fit_on]
    counts = sorted(Counter(w for ws in fit for w in ws).items(), key=lambda x: (-x[1], x[0]))[:max_vocab - first]
    vocab = {w: i + first for i, (w, c) in enumerate(x for x in counts if x[1] >= min_count)}
    ids = torch.zeros(len(texts), length, dtype=torch.int64)
    for r, ws in enumerate(words):
        seq = [vocab.get(w, first - 1) for w in ws]
        seq = seq[-length:] if pad == "pre" else seq[:length]
        if seq:
            if pad == "pre":
                ids[r, length - len(seq):] = torch.tensor(seq)
            else:
                ids[r, :len(seq)] = torch.tensor(seq)
    return ids, len(vocab) + first
