"""Saving and loading: atomic checkpoints (:mod:`.checkpoint`), the classes
``torch.load(weights_only=True)`` must allow (:mod:`.serialization`) and ONNX export
(:mod:`.export`). Resuming a training run bit for bit is the train command's
(:mod:`sparse_engine.runs.resume`)."""
from .._moved import old_name
from . import checkpoint, export, serialization  # noqa: F401

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
