"""The settings of one run of the recurrence (a layer-direction over a sequence) and the index half
of its sparse weights: the frozen :class:`Config` that ``torch.compile`` traces as a constant."""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Config"]


@dataclass(frozen=True)
class Config:
    """One run's settings (a layer-direction over ``steps`` input steps of ``batch`` columns) and
    the index half of its sparse weights (the values are the Function's inputs, see the module
    docstring)."""
    mode: str
    hidden: int
    batch: int
    steps: int
    reverse: bool = False
    idx_ih: tuple | None = None  # index tensors of a sparse W_ih, None when dense
    idx_hh: tuple | None = None
    dt: float = 0.1       # CTRNN only
    tau: float = 0.5      # CTRNN only
    unfolds: int = 1      # CTRNN only
    #: the fused step ops where they apply (:func:`~sparse_engine.recurrent.cell_steps.fused_steps`), else
    #: the composed step; the modules' ``fused`` setting
    fused: bool = True
    #: the whole sequence in one op each way where it applies (:mod:`~sparse_engine.recurrent.persistent`):
    #: the modules' ``compute="persistent"``
    persistent: bool = False
    #: None: every step's activations are kept for the backward; k: only the state every k steps,
    #: the rest recomputed in the backward (:func:`recomputes`); the modules' ``recompute_every``
    recompute_every: int | None = None
    #: None: a run that keeps every step keeps LSTM's c's and the saved activations in the values'
    #: dtype; torch.bfloat16 (or float16): in that dtype, made back into the values' dtype for each
    #: step's backward (half the bytes, the backward reads them rounded); the modules' ``saved_dtype``
    saved_dtype: torch.dtype | None = None
    #: False: the caller reads only the final state (the modules' ``final_state``): Y is returned
    #: empty, and a recomputed run never makes it
    output: bool = True
    #: False: no backward will follow (:func:`recurrence` under ``torch.no_grad``), so the forward
    #: keeps nothing for one: no states, c's or activations beyond what it returns
    backward: bool = True
