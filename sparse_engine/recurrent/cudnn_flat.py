"""The one buffer cuDNN's recurrence reads its weights from, for the dense path on CUDA.

``nn.LSTM`` keeps its weights as views of one buffer laid out as cuDNN wants (``flatten_parameters``).
Given weights held anywhere else, torch's cuDNN recurrence copies every matrix into a new buffer at
each call, warns "RNN module weights are not part of single contiguous chunk of memory" (a Python
warning raised from C++ at every call), and its backward reads the copy. The dense path
(:func:`~.compute_paths.dense_recurrence`) writes its matrices at each forward anyway, so on CUDA it
writes them straight into views of such a buffer (:func:`views`): one zero fill, no copy, no
warning, the layout ``masked nn.LSTM`` (the baseline of issue 44) has. The layout, each weight's
offset and the buffer's size, is cuDNN's own: asked once per shape from torch's
``_cudnn_rnn_flatten_weight`` on empty weights, and kept.
"""
from __future__ import annotations

import math
import threading

import torch

#: cudnnRNNMode_t of each mode (torch.backends.cudnn.rnn.get_cudnn_mode)
CUDNN_MODES = {"RNN_RELU": 0, "RNN_TANH": 1, "LSTM": 2, "GRU": 3}

_layouts: dict = {}  # key -> (numel, offsets) or None (cuDNN would not lay these weights out)
_lock = threading.Lock()


def layout(mode: str, shapes, dtype: torch.dtype, device: torch.device, input_size: int, hidden_size: int,
           proj_size: int, num_layers: int, bidirectional: bool):
    """(numel, offsets): cuDNN's flat buffer for weights of ``shapes`` in torch's flat order (per
    layer and direction w_ih, w_hh[, b_ih, b_hh][, w_hr]), each weight's offset in it; None off CUDA,
    with cuDNN off, or where torch's flatten refuses them (a dtype cuDNN does not take)."""
    if (device.type != "cuda" or mode not in CUDNN_MODES or not torch.backends.cudnn.enabled
            or not torch.backends.cudnn.is_available()):
        return None
    return _learned(mode, shapes, dtype, device, input_size, hidden_size, proj_size, num_layers, bidirectional)


def _learned(mode: str, shapes, dtype: torch.dtype, device: torch.device, input_size: int, hidden_size: int,
             proj_size: int, num_layers: int, bidirectional: bool):
    """:func:`layout` as torch's flatten gives it (asked once per key, kept; None where it fails)."""
    shapes = tuple(tuple(s) for s in shapes)
    key = (mode, shapes, dtype, device, input_size, hidden_size, proj_size, num_layers, bidirectional)
    with _lock:
        if key in _layouts:
            return _layouts[key]
    empty = [torch.empty(s, dtype=dtype, device=device) for s in shapes]
    per_layer = len(shapes) // (num_layers * (2 if bidirectional else 1))
    try:
        with torch.no_grad():  # the flatten sets each empty weight to its view of the buffer it returns
            buf = torch._cudnn_rnn_flatten_weight(empty, per_layer, input_size, CUDNN_MODES[mode], hidden_size,
                                                  proj_size, num_layers, False, bidirectional)
        found = (buf.numel(), tuple(w.storage_offset() for w in empty))
        if any(w.untyped_storage().data_ptr() != buf.untyped_storage().data_ptr() for w in empty):
            found = None
    except (RuntimeError, TypeError, AttributeError):  # refused, or another torch's signature: copies as before
        found = None
    with _lock:
        _layouts[key] = found
    return found


def views(mode: str, weights, x: torch.Tensor, h0: torch.Tensor, c0, num_layers: int, bidirectional: bool):
    """Zero-filled views of one new buffer in cuDNN's layout, one per weight (torch's flat order;
    SparseWeights and tensors), for :func:`~.compute_paths.materialize_all` to write the weights
    into; None where :func:`layout` is None (the weights then go to cuDNN as they are)."""
    hidden = c0.size(-1) if mode == "LSTM" else h0.size(-1)
    proj = h0.size(-1) if mode == "LSTM" and h0.size(-1) != hidden else 0
    shapes = [tuple(w.shape) for w in weights]
    found = layout(mode, shapes, x.dtype, x.device, x.size(-1), hidden, proj, num_layers, bidirectional)
    if found is None:
        return None
    numel, offsets = found
    buf = torch.zeros(numel, dtype=x.dtype, device=x.device)  # torch's recurrence takes weights of x's dtype
    return [buf[o:o + math.prod(s)].view(s) for o, s in zip(offsets, shapes)]
