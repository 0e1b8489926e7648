"""Saving and loading: atomic checkpoints (:mod:`.checkpoint`), resuming a training run bit for bit
(:mod:`.resume`), the classes ``torch.load(weights_only=True)`` must allow (:mod:`.serialization`)
and ONNX export (:mod:`.export`)."""
from . import checkpoint, export, resume, serialization  # noqa: F401
