"""SparseLinear: ``nn.Linear`` with a CSR weight."""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops
from ..kernels.checks import DtypeMismatch, check_dtype_like
from ..sparse import SparseWeight
from .weights import EMPTY, fill_dense, refuse_dense_weights, resolve_density


class SparseLinear(nn.Module):
    """y = x W^T + b with W a :class:`SparseWeight` of shape (out_features, in_features).

    Same calling convention as ``nn.Linear``: input (*, in_features) -> (*, out_features).
    ``density`` sets the fraction of stored weights; ``epsilon`` sets an Erdos-Renyi density
    epsilon*(in+out)/(in*out) (capped at 1); with neither, epsilon=20 as in SET.
    The weight's values are ``self.weight.values`` (one Parameter of length nnz).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, density: float | None = None,
                 epsilon: float | None = None, device=None, dtype=None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        d = resolve_density(out_features, in_features, density, epsilon)
        weight = SparseWeight.random(out_features, in_features, d, dtype=dtype or torch.get_default_dtype())
        self.weight = weight.to(device) if device is not None else weight
        if bias:
            bound = 1.0 / math.sqrt(max(1.0, weight.nnz / out_features))
            b = torch.empty(out_features, dtype=weight.values.dtype, device=device).uniform_(-bound, bound)
            self.bias = nn.Parameter(b)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_dense(cls, linear: nn.Linear, mask: torch.Tensor | None = None) -> "SparseLinear":
        """A SparseLinear holding the nonzeros of ``linear.weight`` (or those under ``mask``)."""
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, density=EMPTY,
                     device=linear.weight.device, dtype=linear.weight.dtype)
        module.weight = SparseWeight.from_dense(linear.weight.detach(), mask)
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def _load_from_state_dict(self, state_dict, prefix, *args):
        refuse_dense_weights(self, state_dict, prefix, args[-1])
        super()._load_from_state_dict(state_dict, prefix, *args)

    def to_dense(self) -> nn.Linear:
        """The equivalent ``nn.Linear`` (zeros where W has no entry; same requires_grad and
        training mode). O(in*out) memory: for tests and export."""
        v = self.weight.values
        dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=v.device,
                          dtype=v.dtype)
        return fill_dense(dense, self, ["weight", "bias"])

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 0 or input.shape[-1] != self.in_features:
            raise ValueError(f"input must have last dimension in_features={self.in_features}, "
                             f"got shape {tuple(input.shape)}")
        lead = input.shape[:-1]
        x = input.reshape(-1, self.in_features)
        try:
            y = ops.spmm(self.weight, x.t()).t()  # feature-major inside the kernel
        except DtypeMismatch:  # named as the caller knows it (the op calls it X)
            check_dtype_like(input, "input", self.weight.parts()[0], "the weight values")
            raise
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)  # (a no-op outside autocast)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, density={self.weight.density:.4g}, nnz={self.weight.nnz}")
