"""SparseRNN, SparseLSTM, SparseGRU: drop-in ``nn.RNN``/``nn.LSTM``/``nn.GRU`` with CSR weights.

Same constructor arguments, parameter names (``weight_ih_l0``, ``weight_hh_l0_reverse``,
``bias_ih_l0``, ...), input/output shapes and state handling as torch, plus

* ``density=`` / ``epsilon=``: the density of each sparse matrix (uniform, or Erdos-Renyi
  epsilon*(rows+cols)/(rows*cols); with neither, epsilon=20 as in SET),
* ``sparse=``: which matrices are sparse: ``'both'`` (default), ``'recurrent'`` (Zhang et al.
  2023: input and readout dense) or ``'input'``. Dense matrices are ordinary Parameters.
* ``fused=`` (default True; also the attribute ``module.fused``, read at each forward): allow the
  fused step ops, which apply to a sparse W_hh in float32/float64 on a device whose build has the
  step kernels (CPU: ``csrc/cpu/rnn_step_cpu.cpp``, CUDA: ``csrc/cuda/rnn_step_cuda.cu``). Where
  they apply, the forward and the backward step each run fused unless, on the CPU, the measured
  rule expects the composed step to be faster for this W_hh and batch
  (:func:`~sparse_engine.recurrent.cell_steps.fused_steps`, the one decision;
  :mod:`sparse_engine.kernels.choose`, the rule and its measurements); otherwise, and always with
  ``fused=False``, the step is composed from spmm/spmm_t and torch's elementwise ops. Both give the
  same results (tests run each against the other). On CUDA the fused step saves the gate
  pre-activations' round trip through global memory and ~10 kernel launches per step; not yet
  measured on a GPU (``bench_rnn_step.py --device cuda``).
  On the dense-compute path (below) ``fused`` picks the CPU GRU: torch's GRU with each
  layer-direction's steps fused (:mod:`sparse_engine.recurrent.dense_gru`), or ``torch.gru`` itself.

A sparse weight is a :class:`~sparse_engine.SparseWeight` child module under torch's name, its
gates stacked in one CSR in torch's order (LSTM i, f, g, o: 4H rows; GRU r, z, n: 3H rows).
Sparse values are initialised U(-b, b), b = 1/sqrt(nonzeros per row) (what a dense layer with
the same fan-in gets), so the activation scale does not shrink with density; dense matrices
and biases use torch's U(-1/sqrt(H), 1/sqrt(H)).

Input shapes are torch's: batched ``(T, B, I)`` (``batch_first=True``: ``(B, T, I)``) or
unbatched ``(T, I)`` whatever ``batch_first`` says, giving ``(T, D*H)``; states are
``(num_layers*D, B, H)`` batched and ``(num_layers*D, H)`` unbatched, never batch-first. As
torch's, a batch-first output is the transposed view of the time-major one (not contiguous).
``module.step_major(input, hx)`` returns ``forward``'s output before its transposition to torch's
layout, step-major ``(T, D*H, B)`` (features x batch per step, the kernels' layout), and its final
states: a model that applies its own product per step (the readout of ``SequenceModel``) skips a
T x B x H copy forward and backward. ``module.final_state(input, hx)`` returns only the final
states, and the last layer makes no output sequence (a classifier reading the last step).

Each layer-direction runs as one :class:`~sparse_engine.recurrent.sequence.Recurrence` (see there
for the kernel schedule), handed its weights as the module holds them
(:func:`~sparse_engine.recurrent.sequence.recurrence`). What the layers and cells share lives beside
this module, each part in a module named for it: :mod:`.weights` (building, drawing and converting
the weights), :mod:`.sequences` (input, output and state layouts), :mod:`.products` (W x for a
sparse or dense weight); the names that were defined here stay importable from here.

``proj_size`` (LSTM only) works as in ``nn.LSTM``: h has ``proj_size`` features, each
layer-direction has a ``weight_hr_l{k}[_reverse]`` of shape (proj_size, hidden_size), sparse when
the recurrent weights are (``sparse='both'``/``'recurrent'``: it is inside the recurrence), and
h_0/h_n are (num_layers*D, B, proj_size) while c_0/c_n keep hidden_size. On the sparse path a
projected layer is composed from the differentiable products under plain autograd
(:func:`~sparse_engine.recurrent.sequence.projected_lstm`; no fused steps, no growth by gradient).
Every module has ``.proj_size`` (0 without a projection), as ``nn.RNNBase``.

``recompute_every=k`` (default None; also the attribute, read at each forward): keep the state
(h, and c for an LSTM) only every k steps and recompute each segment of k steps in the backward,
from its kept state, with the same calls (:func:`~sparse_engine.recurrent.sequence.recomputes`): the
saved activations are O(T/k + k) steps instead of O(T) (an LSTM keeps h, c and 4 gates a step),
for one more forward's time less the last segment's (its backward runs first, on the steps the
forward kept); gradients identical bit for bit on the CPU. For layers whose
activations do not fit (hidden 10^5-10^6 units; :mod:`sparse_engine.memory` predicts a step's
peak and picks k for a budget). Not with ``proj_size`` or ``compute='dense'`` (ValueError); it
keeps ``compute='auto'`` on the sparse path.

``saved_dtype=torch.bfloat16`` (or float16; default None: the parameters' dtype; also the
attribute): a run that keeps every step keeps LSTM's c's and the gates' saved activations in that
dtype, half the bytes of its activations but Y, and its backward reads them rounded (gradients
within bfloat16's rounding of float32's: docs/memory.md). On the per-step sparse path, like
``recompute_every``, with which it does not combine (a recomputed run keeps a few steps only).

``compute=`` ('auto' | 'sparse' | 'dense' | 'persistent'; default None: the global default, 'auto'):
the sparse kernels, or torch's own dense recurrence (``torch.lstm``, ...; the GRU fused on the CPU)
on the weights written into dense matrices kept between forwards, under a memory budget; see
:mod:`sparse_engine.recurrent.compute_paths` and docs/compute_paths.md; or the sparse kernels with
each layer-direction's whole sequence in one op each way (on a GPU one persistent kernel launch
for all steps; :mod:`sparse_engine.recurrent.persistent`; ``auto`` takes it on a GPU where W_hh fits
the chip's shared memory). Same results every way (float
reassociation aside), and the gradient reaches the stored values only.

``PackedSequence`` input works as in torch: the output is a PackedSequence with the input's
``batch_sizes``/``sorted_indices``/``unsorted_indices``, each sequence sees only its own steps
(the reverse direction starts at its last real step), h_n (c_n) hold each sequence's state after
its own steps, and ``hx`` and h_n are in the caller's (unsorted) batch order; ``batch_first``
does not apply. Cost: the fused recurrence runs one batch size for all steps, so the sequences
are grouped by length and the whole stack runs once per distinct length, on that group's
sequences only (few distinct lengths, e.g. bucketed batches: about the padded cost; all lengths
different: B passes of batch 1). Padding never enters the recurrence, so results are exact.
The cells and :class:`~sparse_engine.nn.SparseCTRNN` refuse a PackedSequence (TypeError), as
torch's cells do.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from .._moved import old_name
from ..kernels.constants import GATES
from ..recurrent import (Config, RecordsGradFactors, batch_rows, check_compute, dense_recurrence, recurrence, use_dense,
                         use_persistent)
from ..sparse import SparseWeight
from .sequences import (caller_layout, check_input_dtype, check_not_packed, packed_positions, run_by_length,
                        time_major)
from .weights import (TorchConversion, check_positive_int, check_recompute_every, check_saved_dtype, make_bias,
                      make_weight, refuse_dense_weights, reset_weights, sparse_flags)

__all__ = ["SparseRNN", "SparseLSTM", "SparseGRU", "SparseRNNBase"]

#: torch's whole-sequence recurrences, which its modules' forward calls (the dense-compute path)
class SparseRNNBase(RecordsGradFactors, TorchConversion, nn.Module):
    """Shared body of SparseRNN/SparseLSTM/SparseGRU (the ``nn.RNNBase`` of this package)."""
    #: allow the fused step ops (see :mod:`sparse_engine.nn.rnn`); an instance attribute
    #: set by ``fused=``, this default for modules pickled before the setting existed
    fused = True
    #: the compute path ('auto', 'sparse', 'dense', 'persistent'; None: the global default), see
    #: :mod:`sparse_engine.recurrent.compute_paths`; this default for modules pickled before the setting existed
    compute = None
    #: size of h with a projection (LSTM only, as ``nn.LSTM``); 0: none
    proj_size = 0
    #: keep the state every k steps and recompute the rest in the backward (see the module
    #: docstring); None: keep every step. This default for modules pickled before the setting existed
    recompute_every = None
    #: the dtype of the kept c's and saved activations (see the module docstring); None: the parameters'
    saved_dtype = None

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 *, density: float | None = None, epsilon: float | None = None, sparse: str = "both",
                 fused: bool = True, compute: str | None = None, recompute_every: int | None = None,
                 saved_dtype: torch.dtype | None = None, device=None, dtype=None):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:  # torch.nn's warning, word for word
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}")
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size must be a non-negative int (0: no projection), got {proj_size!r}")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size is only supported for LSTM, not RNN or GRU (as in torch.nn)")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size={hidden_size}, got {proj_size}")
        self.compute = None if compute is None else check_compute(compute)
        self.proj_size = proj_size
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = float(dropout)
        self.sparse = sparse
        self.fused = bool(fused)
        self.recompute_every = check_recompute_every(recompute_every)
        if recompute_every is not None and compute in ("dense", "persistent"):
            raise ValueError(f"recompute_every needs the per-step sparse compute path: compute={compute!r} "
                             "keeps every step")
        if recompute_every is not None and proj_size:
            raise ValueError("recompute_every is not available with proj_size (the projected LSTM runs under "
                             "plain autograd; wrap it in torch.utils.checkpoint instead)")
        self.saved_dtype = check_saved_dtype(saved_dtype)
        if saved_dtype is not None and (compute in ("dense", "persistent") or proj_size or recompute_every):
            what = (f"compute={compute!r}" if compute in ("dense", "persistent") else
                    "proj_size" if proj_size else "recompute_every (it keeps a few steps only)")
            raise ValueError(f"saved_dtype needs the per-step sparse path keeping every step, not {what}")
        sp_ih, sp_hh = sparse_flags(sparse)
        dtype = dtype or torch.get_default_dtype()
        G = GATES[mode] * hidden_size
        D = 2 if bidirectional else 1
        out = proj_size or hidden_size  # the size of h
        self._flat_weights_names = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else out * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                setattr(self, "weight_ih" + sfx,
                        make_weight(G, layer_in, sp_ih, hidden_size, density, epsilon, device, dtype))
                setattr(self, "weight_hh" + sfx,
                        make_weight(G, out, sp_hh, hidden_size, density, epsilon, device, dtype))
                names = ["weight_ih" + sfx, "weight_hh" + sfx]
                if self.bias:
                    setattr(self, "bias_ih" + sfx, make_bias(G, hidden_size, device, dtype))
                    setattr(self, "bias_hh" + sfx, make_bias(G, hidden_size, device, dtype))
                    names += ["bias_ih" + sfx, "bias_hh" + sfx]
                if proj_size:  # in the recurrence, so sparse with W_hh (sparse='both'/'recurrent')
                    setattr(self, "weight_hr" + sfx,
                            make_weight(proj_size, hidden_size, sp_hh, hidden_size, density, epsilon, device, dtype))
                    names.append("weight_hr" + sfx)
                self._flat_weights_names += names

    def _load_from_state_dict(self, state_dict, prefix, *args):
        refuse_dense_weights(self, state_dict, prefix, args[-1])  # a torch state_dict: say what to call
        super()._load_from_state_dict(state_dict, prefix, *args)

    def reset_parameters(self) -> None:
        """As torch's: every weight drawn again (see :func:`~sparse_engine.nn.weights.reset_weights`); patterns kept."""
        reset_weights(self)

    @property
    def all_weights(self) -> list:
        """torch's ``all_weights``: per layer-direction its weights in ``_flat_weights_names`` order
        ([weight_ih, weight_hh(, bias_ih, bias_hh)]), a sparse matrix as its SparseWeight."""
        groups: dict[str, list] = {}
        for name in self._flat_weights_names:  # grouped by the suffix: "_l1_reverse" of "weight_hh_l1_reverse"
            groups.setdefault(name.rpartition("_l")[2], []).append(getattr(self, name))
        return list(groups.values())

    def flatten_parameters(self) -> None:
        """No-op, for code written against nn.LSTM (there is no cuDNN weight buffer to pack)."""

    # ---------------------------------------------------------------------- forward
    def _check_input(self, input, packed: bool = False, ref: torch.Tensor | None = None):
        check_not_packed(input, type(self).__name__)
        if packed and input.dim() != 2:
            raise ValueError(f"a PackedSequence's data must be 2-D (steps, input_size), got shape {tuple(input.shape)}")
        if input.dim() not in (2, 3):
            raise ValueError(f"input must be 3-D (batched) or 2-D (unbatched), got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input must have last dimension input_size={self.input_size}, "
                             f"got shape {tuple(input.shape)}")
        ref = self._reference() if ref is None else ref
        check_input_dtype(input, ref)
        if input.device != ref.device:
            raise ValueError(f"input must be on {ref.device} like the parameters, got {input.device}")

    def _reference(self, weights=None) -> torch.Tensor:
        """The tensor whose dtype and device the inputs and states must have: the first matrix's
        values (``weights``: the module's matrices in ``_flat_weights_names`` order, as
        ``_forward_once`` read them)."""
        w = self.weight_ih_l0 if weights is None else weights[0]
        return w.parts()[0] if isinstance(w, SparseWeight) else w

    def _check_state(self, t, name, batched, B, size, ref):
        D = 2 if self.bidirectional else 1
        want = (self.num_layers * D, B, size) if batched else (self.num_layers * D, size)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
        check_input_dtype(t, ref, name)
        if t.device != ref.device:
            raise ValueError(f"{name} must be on {ref.device} like the parameters, got {t.device}")

    def _initial_state(self, hx, like: torch.Tensor, batched: bool, B: int, ref: torch.Tensor | None = None):
        """(h0, c0) as (num_layers*D, B, P or H) and (num_layers*D, B, H) tensors (c0 None unless
        LSTM) from the caller's ``hx`` (checked against ``ref``, see ``_reference``) or zeros."""
        is_lstm = self.mode == "LSTM"
        out = self.proj_size or self.hidden_size
        if hx is None:
            D = 2 if self.bidirectional else 1
            h0 = like.new_zeros(self.num_layers * D, B, out)
            c0 = like.new_zeros(self.num_layers * D, B, self.hidden_size) if is_lstm else None
            return h0, c0
        if is_lstm:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError("hx must be a tuple (h_0, c_0) for an LSTM")
            ref = self._reference() if ref is None else ref
            h0, c0 = hx
            self._check_state(h0, "h_0", batched, B, out, ref)
            self._check_state(c0, "c_0", batched, B, self.hidden_size, ref)
        else:
            h0, c0 = hx, None
            self._check_state(h0, "hx", batched, B, out, self._reference() if ref is None else ref)
        if not batched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
        return h0, c0

    def _run(self, x: torch.Tensor, h0: torch.Tensor, c0, sink, output: bool = True):
        """The whole stack on a time-major (T, B, I) ``x`` from (num_layers*D, B, H) states:
        (output step-major (T, D*H, B), h_n, c_n or None), states (num_layers*D, B, H) (h: P with
        a projection). ``sink(suffix)`` gives each layer-direction's grad-factor sink. ``output``
        False: the last layer computes no output sequence (None in its place; ``final_state``)."""
        is_lstm = self.mode == "LSTM"
        T, B, _ = x.shape
        D = 2 if self.bidirectional else 1
        # step-major once: (T, I, B), the Recurrence's layout
        layer_x = x.permute(0, 2, 1).contiguous()
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
                b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
                b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
                cfg = Config(self.mode, self.hidden_size, B, T, bool(d), fused=self.fused,
                             recompute_every=check_recompute_every(self.recompute_every),
                             saved_dtype=check_saved_dtype(self.saved_dtype),
                             output=output or layer < self.num_layers - 1,
                             persistent=use_persistent(self.compute, w_hh, T, B, torch.is_grad_enabled()))
                if self.proj_size and self.record_grad_factors:
                    raise ValueError("growth by gradient (record_grad_factors) is not available with "
                                     "proj_size: the projected LSTM has no fused backward to take the factors from")
                w_hr = getattr(self, "weight_hr" + sfx) if self.proj_size else None
                y, h_T, c_T = recurrence(cfg, layer_x, h0[k].t(), c0[k].t() if is_lstm else None, w_ih, w_hh,
                                         b_ih, b_hh, None if w_hr is not None else sink(sfx), w_hr)
                outs.append(y)
                h_n.append(h_T)
                c_n.append(c_T)
            if not output and layer == self.num_layers - 1:
                layer_x = None
                break
            layer_x = outs[0] if D == 1 else torch.cat(outs, 1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_x = F.dropout(layer_x, self.dropout, training=True)
        h_n = torch.stack(h_n).transpose(1, 2).contiguous()
        c_n = torch.stack(c_n).transpose(1, 2).contiguous() if is_lstm else None
        return layer_x, h_n, c_n

    # ------------------------------------------------------------- dense compute
    def _dense_now(self, ref: torch.Tensor, weights=None, batch: int | None = None, steps: int | None = None) -> bool:
        """This forward, over ``batch`` sequences of ``steps`` steps (a backward to follow where gradient
        mode is on), materialises the weights
        (:mod:`sparse_engine.recurrent.compute_paths`): the module's ``compute`` setting says so, not
        recording gradient factors, not under autocast (where the sparse recurrence keeps the
        parameters' precision, see ``recurrence``), not while ``torch.compile`` traces (dynamo does not
        trace torch's RNN modules: a graph break), not when ``recompute_every`` or ``saved_dtype`` is
        set (options of the sparse recurrence only)."""
        if (self.record_grad_factors or torch.is_autocast_enabled(ref.device.type)
                or torch.compiler.is_compiling() or self.recompute_every is not None or self.saved_dtype is not None):
            return False
        if weights is None:
            weights = [getattr(self, n) for n in self._flat_weights_names]
        return use_dense(self.compute, weights, self.hidden_size, ref.device.type, self.mode, batch, steps,
                         torch.is_grad_enabled())

    def _run_dense(self, x: torch.Tensor, h0: torch.Tensor, c0, batch_sizes=None, weights=None):
        """The dense path (:func:`~sparse_engine.recurrent.compute_paths.dense_recurrence`) on this
        module's weights and settings, from states checked by ``_initial_state``."""
        if weights is None:
            weights = [getattr(self, n) for n in self._flat_weights_names]
        return dense_recurrence(self.mode, x, h0, c0, weights, self.bias, self.num_layers, self.dropout,
                                self.training, self.bidirectional, self.fused, batch_sizes)

    def forward(self, input, hx=None):
        return self._forward_once(input, hx, step_major=False)

    def step_major(self, input, hx=None):
        """``forward(input, hx)`` with the output step-major, ``(T, D*H, B)`` ((T, D*H, 1) for an
        unbatched input), as the recurrence computed it, before the T x B x D*H transposition to
        torch's layout; the states as ``forward``'s. Same values and gradients. No PackedSequence."""
        if isinstance(input, PackedSequence):
            raise TypeError("step_major does not take a PackedSequence; call the module")
        return self._forward_once(input, hx, step_major=True)

    def final_state(self, input, hx=None):
        """The final states of ``forward(input, hx)`` (h_n, or (h_n, c_n) for an LSTM), same values
        and gradients, without the last layer's output sequence: for a model that reads only the
        last step (a classifier), a recomputed run (``recompute_every``) then never holds its
        T x H x B output (at hidden 10^6 and B=20, 80 MB a step). No PackedSequence."""
        if isinstance(input, PackedSequence):
            raise TypeError("final_state does not take a PackedSequence; call the module")
        return self._forward_once(input, hx, step_major=True, output=False)[1]

    def _forward_once(self, input, hx, step_major: bool, output: bool = True):
        # parametrized values (weight drop, ...) are evaluated once per forward: one dropout mask
        # for every step and every length group
        # (the matrices are read once here and handed down: nn.Module's attribute lookup is
        # about half a microsecond a name)
        weights = [getattr(self, n) for n in self._flat_weights_names]
        if any(type(w) is not SparseWeight and isinstance(w, SparseWeight) and parametrize.is_parametrized(w)
               for w in weights):
            with parametrize.cached():
                return self._forward(input, hx, step_major, weights, output)
        return self._forward(input, hx, step_major, weights, output)

    def _forward(self, input, hx, step_major: bool = False, weights=None, output: bool = True):
        if weights is None:
            weights = [getattr(self, n) for n in self._flat_weights_names]
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx, weights)
        ref = self._reference(weights)
        self._check_input(input, ref=ref)
        x, batched = time_major(input, self.batch_first)
        h0, c0 = self._initial_state(hx, x, batched, x.shape[1], ref)
        if self._dense_now(x, weights, x.shape[1], x.shape[0]):
            out, h_n, c_n = self._run_dense(x, h0, c0, None, weights)  # time-major (T, B, D*H)
            out = out.permute(0, 2, 1) if step_major else caller_layout(out, self.batch_first, batched)
        else:
            out, h_n, c_n = self._run(x, h0, c0, self._factor_sink, output)
            if not step_major:
                out = caller_layout(batch_rows(out), self.batch_first, batched)
        if not batched:
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        return out, ((h_n, c_n) if self.mode == "LSTM" else h_n)

    def _forward_packed(self, input: PackedSequence, hx, weights=None):
        """torch's semantics for a PackedSequence (module doc): the sequences grouped by length,
        the stack run once per distinct length on that group alone (``_run`` takes one batch
        size for all steps), outputs and states put back in the input's packed / batch order."""
        data, batch_sizes, sorted_indices, unsorted_indices = input
        ref = self._reference(weights)
        self._check_input(data, packed=True, ref=ref)
        if batch_sizes.numel() == 0 or data.shape[0] == 0:
            raise ValueError("a PackedSequence with no steps")
        lengths, pos = packed_positions(batch_sizes, unsorted_indices)
        B = int(batch_sizes[0])
        h0, c0 = self._initial_state(hx, data, True, B, ref)
        if self._dense_now(data, weights, B, batch_sizes.numel()):  # torch's order: sorted by length, longest first
            if sorted_indices is not None:
                h0 = h0.index_select(1, sorted_indices)
                c0 = None if c0 is None else c0.index_select(1, sorted_indices)
            out, h_n, c_n = self._run_dense(data, h0, c0, batch_sizes, weights)
            if unsorted_indices is not None:
                h_n = h_n.index_select(1, unsorted_indices)
                c_n = None if c_n is None else c_n.index_select(1, unsorted_indices)
            packed = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
            return packed, ((h_n, c_n) if self.mode == "LSTM" else h_n)
        def run(i, x, h0_g, c0_g):
            y, h, c = self._run(x, h0_g, c0_g, lambda sfx, first=(i == 0): self._factor_sink(sfx, first))
            return batch_rows(y).reshape(-1, y.shape[1]), h, c
        out, h_n, c_n = run_by_length(data, lengths, pos, h0, c0, run)
        packed = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
        return packed, ((h_n, c_n) if self.mode == "LSTM" else h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for attr, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False),
                              ("proj_size", 0)):
            if getattr(self, attr) != default:
                s += f", {attr}={getattr(self, attr)}"
        return (s + f", sparse={self.sparse!r}" + ("" if self.fused else ", fused=False")
                + ("" if self.compute is None else f", compute={self.compute!r}")
                + ("" if self.recompute_every is None else f", recompute_every={self.recompute_every}")
                + ("" if self.saved_dtype is None else f", saved_dtype={self.saved_dtype}"))


class SparseRNN(SparseRNNBase):
    """Sparse ``nn.RNN`` (Elman, tanh or relu)."""
    _DENSE = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, **kwargs)


class SparseLSTM(SparseRNNBase):
    """Sparse ``nn.LSTM``: ``output, (h_n, c_n) = lstm(input, (h_0, c_0))``."""
    _DENSE = nn.LSTM

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 **kwargs):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, **kwargs)


class SparseGRU(SparseRNNBase):
    """Sparse ``nn.GRU``."""
    _DENSE = nn.GRU

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, **kwargs):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         **kwargs)

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
