"""The recurrence's step-major output (T, F, B) turned into torch's time-major (T, B, F) layout,
differentiably (:func:`batch_rows`): the modules call it once per sequence, not once per step."""
from __future__ import annotations

import torch

__all__ = ["batch_rows"]


def batch_rows(y: torch.Tensor) -> torch.Tensor:
    """(T, F, B) step-major -> (T, B, F) contiguous, torch's time-major layout, differentiably: on
    the CPU one 2-D transpose per step (torch's blocked transpose copy; a 3-D ``transpose(1, 2)
    .contiguous()`` copies element by element, about 3x slower at hidden 100k), elsewhere that one
    copy (on a GPU one kernel, not T launches: 70 of the 81 copies a training step of the H200's
    persistent LSTM at 4,096 units, T = 35, made)."""
    if not (y.requires_grad and torch.is_grad_enabled()):  # no graph to record: the copy alone (a
        return _transpose_steps(y)  # sampler's step at B = 1 saves the Function's wrapping, about 8 us)
    return _BatchRows.apply(y)


def _transpose_steps(a: torch.Tensor) -> torch.Tensor:
    if a.device.type != "cpu":  # always a copy: at one column the transposed view is already contiguous
        return a.transpose(1, 2).clone(memory_format=torch.contiguous_format)
    if 1 in a.shape[1:]:  # one column or one feature: the same order, one copy instead of one a step
        return a.reshape(a.shape[0], a.shape[2], a.shape[1]).clone(memory_format=torch.contiguous_format)
    a = a.contiguous()
    out = a.new_empty(a.shape[0], a.shape[2], a.shape[1])
    for t in range(a.shape[0]):
        out[t].copy_(a[t].t())
    return out


class _BatchRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y):
        return _transpose_steps(y)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return _transpose_steps(g)
