"""Readers for standard dataset files the user names (nothing is downloaded)."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import torch

GESTURE_PHASES = ("D", "P", "S", "H", "R")  # rest, preparation, stroke, hold, retraction


def _existing(path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what}: {p} does not exist")
    return p


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
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
    d = _existing(directory, "MNIST directory")
    found = {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [d / f"{split}-{kind}.gz", d / f"{split}-{kind}"]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise FileNotFoundError(f"MNIST directory {d} has no {split}-{kind}[.gz]")
        found[kind] = _read_idx(path)
    images, labels = found["images-idx3-ubyte"], found["labels-idx1-ubyte"]
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    return torch.tensor(images, dtype=torch.float32) / 255.0, torch.tensor(labels, dtype=torch.int64)


def load_sms_spam(path):
    """The UCI SMS Spam Collection (``label<TAB>text`` a line): (texts, labels) with
    label 1 for spam and 0 for ham."""
    p = _existing(path, "SMS Spam Collection file")
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
    return texts, torch.tensor(labels)


def load_gesture(path):
    """UCI Gesture Phase Segmentation processed files (``*_va3.csv``: 32 velocity and
    acceleration features then ``Phase``). ``path`` is one file or a directory of them; returns
    a list of (features (frames, 32) float32, phases (frames,) int64 indexing GESTURE_PHASES),
    one per recording, in file-name order."""
    p = _existing(path, "gesture data")
    files = sorted(p.glob("*_va3.csv")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no *_va3.csv files in {p}")
    recordings = []
    for file in files:
        with open(file, newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        if header[-1] != "Phase" or len(header) != 33:
            raise ValueError(f"{file}: expected 32 feature columns then 'Phase', got {len(header)} columns")
        feats = torch.tensor([[float(v) for v in r[:-1]] for r in body], dtype=torch.float32)
        try:
            phases = torch.tensor([GESTURE_PHASES.index(r[-1].strip()) for r in body])
        except ValueError as exc:
            raise ValueError(f"{file}: unknown phase label ({exc})") from None
        recordings.append((feats, phases))
    return recordings


def load_series(path) -> torch.Tensor:
    """A one-value-a-line time series such as MackeyGlass_t17.txt, as float32."""
    p = _existing(path, "series file")
    return torch.tensor(np.loadtxt(p, dtype=np.float64, ndmin=1), dtype=torch.float32)
