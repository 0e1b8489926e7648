"""Datasets: generated (Mackey-Glass), bundled with a dependency (scikit-learn's digits),
readers for standard files a user points to (MNIST idx, SMS Spam Collection, UCI
Gesture Phase Segmentation, one-float-a-line series), and :func:`download`, which fetches those
files from their public sources, checked against their SHA-256. The readers return plain tensors.
:func:`load_task` turns them into the train/test sequence tasks of ``sparse-engine train``."""
from .corpus import Corpus, batchify, get_batch, load_corpus, tiny_corpus
from .files import GESTURE_PHASES, load_gesture, load_mnist, load_series, load_sms_spam
from .generated import digits, mackey_glass, sequence_windows
from .tasks import TASKS, load_task

__all__ = ["digits", "mackey_glass", "sequence_windows", "load_mnist", "load_sms_spam", "load_gesture",
           "load_series", "GESTURE_PHASES", "TASKS", "load_task",
           "Corpus", "load_corpus", "tiny_corpus", "batchify", "get_batch", "DATASETS", "download"]


def __getattr__(name):
    """``DATASETS`` and ``download`` come from :mod:`.fetch`, imported on first use: so that
    ``python -m sparse_engine.data.fetch`` runs the module that the package has not imported yet
    (runpy warns otherwise)."""
    if name in ("DATASETS", "download"):
        from . import fetch

        return getattr(fetch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
