"""Readers for standard dataset files the user names (nothing is downloaded), and the checks
the recipes run on the paths they are given before any work starts (inputs that must exist,
outputs that must be writable). Malformed files raise
ValueError naming the file (and the line where there is one); missing ones FileNotFoundError."""
from __future__ import annotations

import csv
import gzip
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

GESTURE_PHASES = ("D", "P", "S", "H", "R")  # rest, preparation, stroke, hold, retraction


def where_to_get(name: str) -> str:
    """The end of a missing-data error: how to fetch dataset ``name`` (:mod:`.sources`) and its page."""
    from .sources import ABOUT

    return f" (get it with: python -m sparse_engine.data.fetch {name} --root data; about it: {ABOUT[name][2]})"


def _existing(path, what: str, kind: str | None = None) -> Path:
    """``path`` as a Path; FileNotFoundError when it does not exist, NotADirectoryError /
    IsADirectoryError when ``kind`` ('file' or 'dir') says which it must be and it is not."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what}: {p} does not exist")
    if kind == "dir" and not p.is_dir():
        raise NotADirectoryError(f"{what}: {p} is not a directory")
    if kind == "file" and p.is_dir():
        raise IsADirectoryError(f"{what}: {p} is a directory, expected a file")
    return p


# ------------------------------------------------------------------ path checks before a run
def output_path_problem(path) -> str | None:
    """Why a file cannot be written at ``path`` (its directory is missing or not writable,
    it is a directory, it exists read-only, or no file can be created there: a read-only file system,
    /proc; permissions the access check cannot see, as for root), or None when it can. A file is
    created in the directory and removed at once, as the atomic writes will: nothing is left."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        return f"expected a file name, got {str(path)!r}"
    parent = p.parent
    if p.is_dir():
        return f"{p} is a directory, expected a file name"
    if not parent.exists():
        return f"directory {parent} does not exist (create it first)"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {parent} is not writable"
    if p.exists() and not os.access(p, os.W_OK):
        return f"{p} exists and is not writable"
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".probe")
    except OSError as exc:
        return f"cannot create a file in {parent} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def input_path_problem(path, kind: str | None = None) -> str | None:
    """Why ``path`` cannot be read as input (missing; not a ``kind`` 'file' or 'dir'), or None."""
    p = Path(path)
    if not p.exists():
        return f"{p} does not exist"
    if kind == "file" and not p.is_file():
        return f"{p} is not a file"
    if kind == "dir" and not p.is_dir():
        return f"{p} is not a directory"
    if not os.access(p, os.R_OK):
        return f"{p} is not readable"
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile) as exc:  # a truncated or corrupt .gz
        raise ValueError(f"{path}: cannot be read as gzip ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def load_mnist(directory, split: str = "t10k"):
    """MNIST from the standard idx files (gzipped or not) in ``directory``:
    (images (N, 28, 28) float32 in [0, 1], labels int64). Row by row, an image is a
    28-step sequence of 28 features, the sequential-MNIST task."""
    d = _existing(directory, "MNIST directory", "dir")
    found = {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [d / f"{split}-{kind}.gz", d / f"{split}-{kind}"]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise FileNotFoundError(f"MNIST directory {d} has no {split}-{kind}[.gz]"
                                    + (where_to_get("mnist_test") if split == "t10k" else ""))
        found[kind] = _read_idx(path)
    images, labels = found["images-idx3-ubyte"], found["labels-idx1-ubyte"]
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    return torch.tensor(images, dtype=torch.float32) / 255.0, torch.tensor(labels, dtype=torch.int64)


def load_sms_spam(path):
    """The UCI SMS Spam Collection (``label<TAB>text`` a line): (texts, labels) with
    label 1 for spam and 0 for ham."""
    try:
        p = _existing(path, "SMS Spam Collection file", "file")
    except FileNotFoundError as exc:
        raise FileNotFoundError(str(exc) + where_to_get("sms_spam")) from None
    texts, labels = [], []
    with open(p, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            label, sep, text = line.partition("\t")
            if not sep or label not in ("ham", "spam"):
                raise ValueError(f"{p}:{number}: expected 'ham|spam<TAB>text', got {line[:40]!r}")
            texts.append(text)
            labels.append(int(label == "spam"))
    if not texts:
        raise ValueError(f"{p} holds no messages: expected 'ham|spam<TAB>text' lines")
    return texts, torch.tensor(labels)


def load_gesture(path):
    """UCI Gesture Phase Segmentation processed files (``*_va3.csv``: 32 velocity and
    acceleration features then ``Phase``). ``path`` is one file or a directory of them; returns
    a list of (features (frames, 32) float32, phases (frames,) int64 indexing GESTURE_PHASES),
    one per recording, in file-name order."""
    try:
        p = _existing(path, "gesture data")
    except FileNotFoundError as exc:
        raise FileNotFoundError(str(exc) + where_to_get("gesture")) from None
    files = sorted(p.glob("*_va3.csv")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no *_va3.csv files in {p}" + where_to_get("gesture"))
    recordings = []
    for file in files:
        with open(file, newline="", encoding="utf-8", errors="replace") as f:
            rows = [r for r in csv.reader(f) if r]
        if not rows:
            raise ValueError(f"{file} is empty: expected a header of 32 feature columns then 'Phase'")
        header, body = [h.strip() for h in rows[0]], rows[1:]
        if header[-1] != "Phase" or len(header) != 33:
            raise ValueError(f"{file}:1: expected 32 feature columns then 'Phase', got {len(header)} columns")
        if not body:
            raise ValueError(f"{file} holds a header but no frames")
        feats, phases = [], []
        for number, r in enumerate(body, 2):
            if len(r) != 33:
                raise ValueError(f"{file}:{number}: expected 33 columns like the header, got {len(r)}")
            try:
                feats.append(_finite([float(v) for v in r[:-1]]))
            except ValueError as exc:
                raise ValueError(f"{file}:{number}: expected 32 numbers then a phase ({exc})") from None
            if r[-1].strip() not in GESTURE_PHASES:
                raise ValueError(f"{file}:{number}: unknown phase {r[-1].strip()!r}, expected one of "
                                 f"{', '.join(GESTURE_PHASES)}")
            phases.append(GESTURE_PHASES.index(r[-1].strip()))
        recordings.append((torch.tensor(feats, dtype=torch.float32), torch.tensor(phases)))
    return recordings


def _finite(values: list[float]) -> list[float]:
    """``values``, or ValueError where one is NaN or infinite (a sample of them would make every
    loss NaN, and training would go on silently); the callers name the file and line."""
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{v} is not a finite number")
    return values


def load_series(path) -> torch.Tensor:
    """A one-value-a-line time series such as MackeyGlass_t17.txt, as float32 (blank lines and
    ``#`` comments skipped)."""
    p = _existing(path, "series file", "file")
    values = []
    with open(p, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()  # '#' starts a comment, as for numpy.loadtxt
            if text:
                try:
                    values.append(_finite([float(text)])[0])
                except ValueError:
                    raise ValueError(f"{p}:{number}: expected one finite number a line, got {text[:40]!r}") from None
    if not values:
        raise ValueError(f"{p} holds no values: expected one number a line")
    return torch.tensor(values, dtype=torch.float64).float()


def load_table(path, label_column: str):
    """A feature matrix with a label column, for ``--model mlp`` (task ``table``): a CSV file
    with a header row (every other column a number), or a NumPy ``.npz`` holding a 2-D array
    ``X`` and a 1-D array named ``label_column``. Returns (features (N, F) float32, labels
    int64 0..C-1 in the sorted order of the distinct label values, the label values)."""
    p = _existing(path, "feature file", "file")
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                if "X" not in z.files or label_column not in z.files:
                    raise ValueError(f"{p}: expected arrays 'X' and {label_column!r}, found {', '.join(z.files)}")
                X, raw = np.asarray(z["X"]), np.asarray(z[label_column])
        except (OSError, EOFError) as exc:  # not a zip archive, truncated
            raise ValueError(f"{p}: not a readable .npz file ({exc})") from None
        if X.ndim != 2 or raw.ndim != 1 or len(X) != len(raw):
            raise ValueError(f"{p}: expected X of shape (N, F) and {label_column!r} of shape (N,), got "
                             f"{X.shape} and {raw.shape}")
        if not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"{p}: X must be numeric, got dtype {X.dtype}")
        X = X.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if bad.size:
            raise ValueError(f"{p}: X row {bad[0]} holds a value that is not a finite number (NaN or inf; "
                             f"{bad.size} such rows)")
    else:
        with open(p, newline="", encoding="utf-8", errors="replace") as f:
            rows = list(csv.reader(f))
        if not rows or label_column not in rows[0]:
            raise ValueError(f"{p}: the header row has no column {label_column!r}"
                             + (f" (columns: {', '.join(rows[0][:10])})" if rows else " (the file is empty)"))
        header, body = rows[0], [r for r in rows[1:] if r]
        j = header.index(label_column)
        features = [i for i in range(len(header)) if i != j]
        X = np.empty((len(body), len(features)), dtype=np.float32)
        for line, r in enumerate(body, 2):
            if len(r) != len(header):
                raise ValueError(f"{p}:{line}: expected {len(header)} fields like the header, got {len(r)}")
            try:
                X[line - 2] = _finite([float(r[i]) for i in features])
            except ValueError:
                raise ValueError(f"{p}:{line}: expected finite numbers in every column but {label_column!r}") from None
        raw = np.array([r[j] for r in body])
    if len(X) == 0 or X.shape[1] == 0:
        raise ValueError(f"{p}: no examples or no feature columns")
    classes, y = np.unique(raw, return_inverse=True)
    return torch.from_numpy(X), torch.from_numpy(y.astype(np.int64)), [str(c) for c in classes]
