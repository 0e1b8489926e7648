"""The one-line refusals of TorchScript (``torch.jit.script`` / ``torch.jit.trace``) and of the legacy
TorchScript ONNX exporter, raised by :class:`~sparse_engine.SparseWeight` (script, legacy export)
and by the recurrence (trace), saying what to use instead. Why they cannot work, and the ONNX export
that does: :mod:`sparse_engine.io.export`, which re-exports these names."""
from __future__ import annotations

import sys

import torch

__all__ = ["NO_TORCHSCRIPT", "NO_LEGACY_ONNX", "check_not_torchscript", "check_not_legacy_onnx_export"]

#: What to use instead of TorchScript, in every refusal.
INSTEAD = ("use torch.compile for speed, torch.export.export for a graph, or "
           "torch.onnx.export(model, args, f, dynamo=True, "
           "custom_translation_table=sparse_engine.io.export.onnx_translation_table()) for ONNX")
NO_TORCHSCRIPT = ("sparse-engine modules do not support TorchScript (torch.jit.script / torch.jit.trace): "
                  "the recurrence is a torch.autograd.Function with Python control flow around custom "
                  "operators; " + INSTEAD)
NO_LEGACY_ONNX = ("sparse-engine modules do not support the legacy TorchScript ONNX exporter "
                  "(torch.onnx.export(..., dynamo=False)): it traces with TorchScript and cannot hold a "
                  "SparseWeight's extra state; export with torch.onnx.export(model, args, f, dynamo=True, "
                  "custom_translation_table=sparse_engine.io.export.onnx_translation_table())")


def check_not_torchscript() -> None:
    """RuntimeError(:data:`NO_TORCHSCRIPT`) while ``torch.jit.trace`` is tracing."""
    if torch.jit.is_tracing():
        raise RuntimeError(NO_TORCHSCRIPT)


def check_not_legacy_onnx_export() -> None:
    """RuntimeError while the legacy (TorchScript) ONNX exporter runs. torch's public
    ``torch.onnx.is_in_onnx_export()`` is True for both exporters, so this reads the legacy
    exporter's own flag (a private name, where torch 2.4-2.13 keep it), from ``sys.modules``
    only: while that exporter runs its module is loaded, and otherwise nothing is imported."""
    for where in ("torch.onnx._internal.torchscript_exporter._globals", "torch.onnx._globals"):
        flags = getattr(sys.modules.get(where), "GLOBALS", None)
        if flags is not None:
            if getattr(flags, "in_onnx_export", False):
                raise RuntimeError(NO_LEGACY_ONNX)
            return
