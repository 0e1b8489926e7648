"""SparseMLP: a stack of SparseLinear layers (Erdos-Renyi topology, ReLU, dropout, bias), the
network of SET-MLP (Mocanu et al. 2018) that the scipy implementation trains past 10^5 neurons.

Two modes (see docs/set_mlp.md):

* default: softmax + cross-entropy on the logits, inverted dropout (kept units scaled by
  1/(1-p) in training, nothing at test time), exactly round(epsilon*(in+out)) connections per
  layer (capped at in*out);
* ``faithful=True``: what SET implementation 2 does, so results compare with published SET
  numbers: a sigmoid output trained with its MSE-style error (a - y) * s(a) * (1 - s(a)) (the
  sigmoid's derivative taken at the output a, not at the pre-activation, as that code does),
  dropout of hidden activations without rescaling whose mask is not applied on the way back,
  pre-activations of every layer after the first scaled by (1 - p) at test time, and
  epsilon*(in+out) positions drawn with replacement so that duplicates collapse (fewer
  connections).

Weights start N(0, 0.1^2) and biases 0 in both modes, as in that code. Inside, activations are
feature-major (features x batch), the kernels' layout: the input is transposed once on the way
in and the output once on the way out, not at every layer.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import init as _init
from .. import ops
from ..sparse import SparseWeight
from .linear import SparseLinear
from .weights import EMPTY, check_dropout

#: SET-MLP's value scale: N(0, 0.1^2) weights (randn/10 in the scipy code)
INIT_STD = 0.1


def set_mlp_weight(rows: int, cols: int, epsilon: float, *, faithful: bool = False,
                   generator: torch.Generator | None = None, dtype=torch.float32) -> SparseWeight:
    """An Erdos-Renyi (rows x cols) weight of SET-MLP: exactly min(round(epsilon*(rows+cols)),
    rows*cols) distinct random positions, or with ``faithful`` that many positions drawn with
    replacement, duplicates collapsed. Values N(0, 0.1^2). O(nnz) memory."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    draws = min(int(round(epsilon * (rows + cols))), rows * cols)
    if faithful:
        linear = torch.unique(torch.randint(rows * cols, (draws,), generator=generator))  # sorted
        row = torch.div(linear, cols, rounding_mode="floor")
        col_idx = (linear - row * cols).to(torch.int32)
        row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(row, minlength=rows), 0, out=row_ptr[1:])
        del linear, row
    else:
        row_ptr, col_idx = _init.random_pattern(rows, cols, draws, generator)
    values = torch.empty(col_idx.numel(), dtype=dtype).normal_(0.0, INIT_STD, generator=generator)
    return SparseWeight(row_ptr, col_idx, values, (rows, cols), validate=False)


def _hash_seed() -> int:
    """A seed for the ``relu_dropout`` kernel's hash, drawn from torch's generator (so that
    ``torch.manual_seed`` fixes the masks)."""
    return int(torch.randint(-2**63, 2**63 - 1, (), dtype=torch.int64))


class _FaithfulDrop(torch.autograd.Function):
    """x * keep for x >= 0 (a ReLU's output), keep = (u >= p), without rescaling; the gradient
    passes unmasked (the scipy SET code back-propagates the error through dropped units: its delta
    is never multiplied by the mask). On the CPU one pass of the ``relu_dropout`` kernel with scale
    1 over a copy of x (its hash draws: torch's ``rand_like`` is a serial generator, a fifth of a
    faithful step at 784-100,000 x 3-10); elsewhere ``rand_like(x) >= p``."""

    @staticmethod
    def forward(ctx, x, p: float):
        if x.device.type == "cpu":
            out = x.clone(memory_format=torch.contiguous_format)
            torch.ops.sparse_engine.relu_dropout(out, p, _hash_seed(), 1.0)
            return out
        return x * torch.rand_like(x).ge_(p)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ReluDropout(torch.autograd.Function):
    """relu(z) with inverted dropout in one step that saves only its output: the gradient is
    grad * scale where the output is > 0 (a dropped or negative unit gives 0 either way), so
    neither z nor the mask is kept for backward (the output is kept anyway: the next layer's
    weight gradient needs it).

    On the CPU it is one pass of the ``relu_dropout`` kernel, whose uniform draws are a hash of a
    seed taken from torch's generator and of the element's position (parallel, thread-count
    independent), over z itself with ``inplace`` (SparseMLP: z is the fresh output of the
    layer's spmm, which nothing saves; no batch-sized allocation) or over a copy; elsewhere
    it draws ``torch.rand_like(z)``."""

    @staticmethod
    def forward(ctx, z, p: float, inplace: bool):
        ctx.scale = 1.0 / (1.0 - p)
        if z.device.type == "cpu":
            out = z if inplace and z.is_contiguous() else z.clone(memory_format=torch.contiguous_format)
            torch.ops.sparse_engine.relu_dropout(out, p, _hash_seed())
            if out is z:
                ctx.mark_dirty(z)
        else:
            keep = torch.rand_like(z).ge_(p).mul_(ctx.scale)  # uniform draws: twice as fast as bernoulli ones
            out = torch.relu(z).mul_(keep)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0.0).mul_(ctx.scale), None, None  # grad where out > 0


class SparseMLP(nn.Module):
    """sizes[0] inputs -> sparse hidden layers with ReLU and dropout -> sizes[-1] outputs.

    ``forward(x)``: x (batch, sizes[0]) -> logits (batch, sizes[-1]) (pre-activations of the
    output layer; in faithful mode the prediction is their sigmoid, same argmax).
    :meth:`loss` is the training loss of the mode; ``self.layers`` are the SparseLinear layers
    (``layer.weight`` a SparseWeight, ``layer.bias`` a Parameter), so topology controllers and
    optimizers find them as usual."""

    def __init__(self, sizes: Sequence[int], epsilon: float = 13.0, dropout: float = 0.2, *, faithful: bool = False,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"sizes must be at least two positive ints (inputs, ..., outputs), got {sizes!r}")
        self.dropout = check_dropout("dropout", dropout)
        self.sizes, self.epsilon, self.faithful = sizes, float(epsilon), bool(faithful)
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layer = SparseLinear(n_in, n_out, density=EMPTY, dtype=dtype)
            layer.weight = set_mlp_weight(n_out, n_in, epsilon, faithful=faithful, generator=generator, dtype=dtype)
            layer.bias.data.zero_()
            layers.append(layer)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"x must be a (batch, {self.sizes[0]}) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        h = x.t().contiguous()  # feature-major from here on
        p, last = self.dropout, len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            z = ops.spmm(layer.weight, h).add_(layer.bias[:, None])  # in place: one batch-sized tensor less
            if self.faithful and not self.training and i > 0 and p > 0:
                z = z * (1.0 - p)  # test-time scaling of the layers fed by dropped units
            if i == last:
                return z.t()
            if not (self.training and p > 0):
                h = torch.relu(z)
            elif self.faithful:
                h = _FaithfulDrop.apply(torch.relu_(z), p)  # z: this layer's fresh output, saved by nothing
            else:
                h = _ReluDropout.apply(z, p, True)
        raise AssertionError("unreachable")

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores: softmax of the logits, or in faithful mode their sigmoid."""
        out = self(x)
        return torch.sigmoid(out) if self.faithful else torch.softmax(out, dim=1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mode's training loss of a batch: cross-entropy (mean), or in faithful mode the
        mean squared error of sigmoid(logits) against one-hot targets whose gradient is the
        scipy code's: d/dlogits = (a - y) * s(a) * (1 - s(a)) / batch with a = sigmoid(logits)."""
        if not self.faithful:
            return nn.functional.cross_entropy(logits, target)
        a = torch.sigmoid(logits)
        y = nn.functional.one_hot(target, logits.shape[1]).to(a.dtype)
        mse = ((a - y) ** 2).mean()
        with torch.no_grad():
            s = torch.sigmoid(a)
            delta = (a - y) * s * (1 - s) / logits.shape[0]
        surrogate = (delta * logits).sum()
        return mse.detach() + surrogate - surrogate.detach()

    @property
    def nnz(self) -> int:
        return sum(layer.weight.nnz for layer in self.layers)

    def extra_repr(self) -> str:
        return (f"sizes={self.sizes}, epsilon={self.epsilon:g}, dropout={self.dropout:g}, "
                f"faithful={self.faithful}, nnz={self.nnz}")
