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


def task_data_problem(task: str, data) -> str | None:
    """Why ``data`` does not suit ``task`` before anything is read (the task needs a path and
    has none; digits takes none), or None."""
    if task not in TASK_DATA:
        return None if data is None else f"task {task!r} reads no data file, got {str(data)!r}"
    kind, what, required = TASK_DATA[task]
    if data is None and required:
        return f"task {task!r} needs {what}"
    return None


# Zhang et al.'s SMS preprocessing (their data/SMS_preprocess.py): punctuation, underscores and
# digits removed, lower case, the first 25 words, words seen at least 10 times, zero-padded after.
ZHANG_SMS = dict(length=25, min_count=10, clean=True, pad="post")
VARIANTS = {"sms": {"zhang": ZHANG_SMS}}


def load_task(task: str, data: str | None, seed: int, *, label_column: str | None = None,
              variant: str | None = None):
    """(train, test, meta): train/test are (inputs, targets); inputs (N, T, F) float or (N, T)
    token ids; meta holds n_in, n_out, kind ('classify' or 'regress') and vocab size.
    Task ``table`` (a feature matrix, for --model mlp: inputs (N, F), standardised with the
    training split's mean and deviation) reads its labels from the column ``label_column``.
    ``variant``: a paper's preprocessing of the task (:data:`VARIANTS`: "zhang" for sms).
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
    elif task == "sms":
        texts, y = load_sms_spam(data)
        X, vocab = _word_ids(texts, **(VARIANTS["sms"][variant] if variant else dict(length=40)))
        meta = dict(n_in=50, n_out=2, kind="classify", vocab=vocab)
    elif task == "gesture":
        recordings = load_gesture(data)
        meta = dict(n_in=recordings[0][0].shape[1], n_out=len(GESTURE_PHASES), kind="classify")
        if len(recordings) >= 2:  # whole recordings held out: overlapping windows would leak
            n_test = max(1, round(0.2 * len(recordings)))
            train = _gesture_windows(recordings[:-n_test], recordings, GESTURE_WINDOW)
            return train, _gesture_windows(recordings[-n_test:], recordings, GESTURE_WINDOW), meta
        X, y = _gesture_windows(recordings, recordings, GESTURE_WINDOW)
    else:  # mackey-glass
        series = load_series(data) if data else mackey_glass(6000)
        try:
            X, y = sequence_windows(series[:6000], length=50)
        except ValueError as exc:
            raise ValueError(f"{data}: {exc}" if data else str(exc)) from None
        X, y = X[::5], y[::5]
        meta = dict(n_in=1, n_out=1, kind="regress")
    perm = torch.randperm(len(X), generator=g)
    cut = int(0.8 * len(X))
    if cut == 0 or cut == len(X):
        raise ValueError(f"task {task!r}: {len(X)} examples are too few to split 80/20 into train and test"
                         + (f" (data: {data})" if data else ""))
    tr, te = perm[:cut], perm[cut:]
    if task == "table":
        mean, std = X[tr].mean(0), X[tr].std(0).clamp_min(1e-6)
        X = (X - mean) / std
    return (X[tr], y[tr]), (X[te], y[te]), meta


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
              pad: str = "pre"):
    """Lower-cased word ids (0 = padding, 1 = unknown): the ``max_vocab`` - 2 most frequent
    words seen at least ``min_count`` times; ``clean`` drops punctuation, underscores and digits
    first; ``pad="pre"`` keeps the last ``length`` words, left-padded, ``"post"`` the first
    ``length``, right-padded."""
    if clean:
        texts = [" ".join(re.sub(r"([^\s\w]|_|[0-9])+", "", t).split()) for t in texts]
    words = [t.lower().split() for t in texts]
    counts = Counter(w for ws in words for w in ws).most_common(max_vocab - 2)
    vocab = {w: i + 2 for i, (w, c) in enumerate(x for x in counts if x[1] >= min_count)}
    ids = torch.zeros(len(texts), length, dtype=torch.int64)
    for r, ws in enumerate(words):
        seq = [vocab.get(w, 1) for w in ws]
        seq = seq[-length:] if pad == "pre" else seq[:length]
        if seq:
            if pad == "pre":
                ids[r, length - len(seq):] = torch.tensor(seq)
            else:
                ids[r, :len(seq)] = torch.tensor(seq)
    return ids, len(vocab) + 2
