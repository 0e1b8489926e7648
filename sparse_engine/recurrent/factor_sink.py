"""Growth by gradient, the recurrent modules' side: where a layer-direction's backward leaves the
factors (G, X) of its weight gradients (dL/dW = G X^T) while a controller asks for them
(:mod:`sparse_engine.training.grad_factors` is the protocol; :func:`~.sequence.recurrence`'s
``sink`` the other end)."""
from __future__ import annotations

import torch

__all__ = ["RecordsGradFactors"]


class RecordsGradFactors:
    """The growth-by-gradient protocol of :mod:`sparse_engine.training.grad_factors` for the
    recurrent modules: while ``record_grad_factors`` is True, each layer-direction's backward
    keeps the (G, X) its sddmm uses (dL/dW = G X^T), and ``dense_grad_factors(name)`` returns
    them for ``weight_ih*``/``weight_hh*``. Nothing is kept otherwise."""

    record_grad_factors = False

    def _factor_sink(self, suffix: str, first: bool = True) -> dict | None:
        """The dict a layer-direction's backward fills with its (G, X) (the ``sink`` of
        :func:`recurrence`), None
        unless recording. ``first=False`` adds a part for a further run of the same
        layer-direction in one forward (the length groups of a PackedSequence); the parts are read
        back concatenated along the columns (dL/dW = sum over parts of G X^T)."""
        if not self.record_grad_factors:
            self.__dict__.pop("_grad_factor_store", None)
            return None
        parts = self.__dict__.setdefault("_grad_factor_store", {}).setdefault(suffix, [{}])
        if first:
            del parts[1:]  # the further parts of an earlier forward
            return parts[0]
        parts.append({})
        return parts[-1]

    def dense_grad_factors(self, name: str):
        for kind in ("ih", "hh"):
            if name.startswith(f"weight_{kind}"):
                parts = self.__dict__.get("_grad_factor_store", {}).get(name[len(f"weight_{kind}"):], [])
                got = [part[kind] for part in parts if kind in part]
                if len(got) <= 1:
                    return got[0] if got else None
                return tuple(torch.cat(factor, 1) for factor in zip(*got))
        raise ValueError(f"name must name a weight_ih*/weight_hh* matrix, got {name!r}")
