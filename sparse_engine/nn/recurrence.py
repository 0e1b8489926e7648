"""One recurrent layer-direction over a whole sequence as a single autograd.Function.

Everything here is feature-major: the input is X (I x T*B) with column t*B + b, the
output Y (H x T*B) the same, states are (H x B). That is the layout of the sparse kernels,
so a stacked network transposes its input once and never again.

Forward:  Gx = W_ih X (+ biases): ONE product over all T*B columns; then per step one
          recurrent product W_hh h and the gate nonlinearities, fused into one op where it has
          a kernel (CPU: ``csrc/cpu/rnn_step_cpu.cpp``; CUDA: ``csrc/cuda/rnn_step_cuda.cu``), composed
          from spmm + torch elementwise ops otherwise (see :func:`fused_ok`).
Backward: per step the elementwise gate gradient and one spmm_t (W_hh^T dG) for the hidden
          gradient; at the end ONE sddmm over all T*B columns per weight (the per-step gate
          gradients and hidden states are stacked), one spmm_t for the input gradient.
Memory:   O(T*B*gates*H) for the saved activations plus O(nnz); nothing is O(H^2) unless the
          user asked for a dense matrix.

A weight is either sparse (its ``values`` plus the 5 index tensors of a SparseWeight) or
dense (an ordinary (rows x cols) tensor, index ``None``); the two matrices of a layer are
chosen independently (``sparse='both'|'recurrent'|'input'``).

Modes: ``RNN_TANH``, ``RNN_RELU``, ``LSTM`` (gates i, f, g, o like torch), ``GRU`` (r, z, n
like torch: n = tanh(Wx_n x + b_in + r * (W_hn h + b_hn)), so the hidden product of the n gate
is kept separately) and ``CTRNN`` (Euler-unfolded continuous-time RNN:
h += dt * (-h / tau + tanh(W_ih x + W_hh h + b)), ``unfolds`` sub-steps per input step). Each is
an entry of :data:`sparse_engine.nn.cell_table.CELLS`: its gate layout, fused step op pair and
composed step and step-backward, called the same way for every mode.

The fused step ops' contract (``csrc/cpu/rnn_step_cpu.cpp``; the CUDA kernels implement the same):
for every hidden unit j, the G gate rows j, H+j, ... of W_hh h (one CSR row each, gathered
from the feature-major h), plus the precomputed input part gx, then the gate math, writing
h', (c') and the saved activations; backward: the elementwise gate gradient followed by
W_hh^T dG through the transposed index. The fused path takes only float32/float64 values on a
device whose dispatch key has the ops; any other dtype (fp16/bf16) or device composes the
step from spmm/spmm_t and torch's elementwise ops, which give the same results. Whether to
use it at all is the module's ``fused`` setting (``Config.fused``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .cell_table import CELLS, has_fused_kernels, mm, mm_t, wgrad
from ..export import check_not_torchscript


@dataclass(frozen=True)
class Config:
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
    #: the fused step ops where they apply (:func:`fused_ok`), else the composed step; the
    #: modules' ``fused`` setting
    fused: bool = True
    #: when set, backward stores the weight-gradient factors here: {"ih": (G, X), "hh": (G, X)}
    sink: dict | None = field(default=None, compare=False)


_FUSED_DTYPES = (torch.float32, torch.float64)


def fused_ok(cfg: Config, w_hh: torch.Tensor) -> bool:
    """The fused step ops apply: asked for (``cfg.fused``), sparse W_hh, float32/float64, a
    device with the kernels."""
    return (cfg.fused and cfg.idx_hh is not None and w_hh.dtype in _FUSED_DTYPES
            and has_fused_kernels(w_hh.device.type))


# ----------------------------------------------------------------- the Function
def _to_cols(stacked: torch.Tensor) -> torch.Tensor:
    """(S, R, B) step-major -> (R, S*B) feature-major (one copy)."""
    S, R, B = stacked.shape
    return stacked.permute(1, 0, 2).reshape(R, S * B)


class Recurrence(torch.autograd.Function):
    """(cfg, X, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (Y, h_T, c_T).

    X (I x T*B), h0/c0 (H x B) (c0 and c_T only for LSTM: pass None, get an empty tensor),
    Y (H x T*B) in time order also for the reverse direction.
    """

    @staticmethod
    def forward(ctx, cfg: Config, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        cell, T, B = CELLS[cfg.mode], cfg.steps, cfg.batch
        ctx.device_type = w_hh.device.type
        gx = mm(w_ih, cfg.idx_ih, x)  # (G*H, T*B): one product for all steps
        bias = None
        if b_ih is not None:
            bias = b_ih if cell.hidden_bias or b_hh is None else b_ih + b_hh
        if bias is not None:
            gx = gx + bias[:, None]
        gx = gx.view(cell.gates * cfg.hidden, T, B).permute(1, 0, 2).contiguous()  # (T, G*H, B), per step
        fused = fused_ok(cfg, w_hh)
        step, _ = cell.steps(fused)
        idx, U = cfg.idx_hh, cell.unfolds(cfg)
        tail = ((b_hh,) if cell.hidden_bias else ()) + cell.params(cfg)
        order = range(T - 1, -1, -1) if cfg.reverse else range(T)
        hs, cs, acts = [h0], [c0], []
        h, c = h0, c0
        for t in order:
            g = gx[t]
            for _ in range(U):
                h, c, a = cell.forward_step(step, w_hh, idx, g, h, c, tail)
                hs.append(h)
                if cell.cell_state:
                    cs.append(c)
                if a is not None:
                    acts.append(a)
        hbuf = torch.stack(hs)  # (T*U+1, H, B), processing order
        out = hbuf[U::U]
        if cfg.reverse:
            out = out.flip(0)
        y = _to_cols(out)
        cbuf = torch.stack(cs) if cell.cell_state else None
        abuf = torch.stack(acts) if acts else None
        ctx.cfg = cfg
        ctx.has_bias = b_ih is not None
        ctx.fused = fused
        ctx.save_for_backward(x, w_ih, w_hh, b_hh if cell.hidden_bias else None, hbuf, cbuf, abuf)
        c_T = c if cell.cell_state else h.new_empty(0)
        ctx.mark_non_differentiable(*(() if cell.cell_state else (c_T,)))
        return y, h, c_T

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dh_T, dc_T):
        # in the parameters' dtype even when .backward() is called inside an autocast region
        with torch.autocast(ctx.device_type, enabled=False):
            return Recurrence._backward(ctx, dy, dh_T, dc_T)

    @staticmethod
    def _backward(ctx, dy, dh_T, dc_T):
        cfg = ctx.cfg
        cell, H, B, T = CELLS[cfg.mode], cfg.hidden, cfg.batch, cfg.steps
        x, w_ih, w_hh, b_hh, hbuf, cbuf, abuf = ctx.saved_tensors
        need = ctx.needs_input_grad  # (cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        _, step_backward = cell.steps(ctx.fused)
        idx, U, params = cfg.idx_hh, cell.unfolds(cfg), cell.params(cfg)
        bufs = {"h": hbuf, "c": cbuf, "acts": abuf}
        dy3 = dy.view(H, T, B).permute(1, 0, 2)  # (T, H, B) view
        dh = dh_T.clone()
        dc = dc_T if cell.cell_state else None
        S = T * U
        G = cell.gates * H
        dgh = dh.new_empty(G, S, B)  # hidden-side gate gradients, feature-major, processing order
        # input-side gradients in time order, where they are not the hidden-side ones of the step:
        # GRU's own, or a CT-RNN's summed over the sub-steps that share one input step
        dgx = [None] * T if cell.input_grad or cell.continuous else None
        order = list(range(T - 1, -1, -1)) if cfg.reverse else list(range(T))
        for s in range(S - 1, -1, -1):
            t = order[s // U]
            if s % U == U - 1:
                dh = dh + dy3[t]
            dG_x, dG, dh, dc = cell.backward_step(step_backward, w_hh, idx, cell.saved_at(s, bufs), dh, dc, params)
            dgh[:, s] = dG
            if dgx is not None:
                dgx[t] = dG_x if dgx[t] is None else dgx[t] + dG_x
        dgh_cols = dgh.view(G, S * B)  # (G*H, S*B) in processing order
        if dgx is None:  # LSTM/RNN: the input-side gradient is the hidden-side one, per time step
            dgx_cols = dgh.flip(1).reshape(G, S * B) if cfg.reverse else dgh_cols
        else:
            dgx_cols = _to_cols(torch.stack(dgx))
        d_x = mm_t(w_ih, cfg.idx_ih, dgx_cols) if need[1] else None
        h_cols = _to_cols(hbuf[:-1])
        d_w_ih = wgrad(cfg.idx_ih, dgx_cols, x) if need[4] else None
        d_w_hh = wgrad(idx, dgh_cols, h_cols) if need[5] else None
        if cfg.sink is not None:  # growth by gradient: dL/dW = G X^T, also at empty positions
            cfg.sink["ih"] = (dgx_cols.detach(), x.detach())
            cfg.sink["hh"] = (dgh_cols.detach(), h_cols.detach())
        d_b_ih = d_b_hh = None
        if ctx.has_bias:
            d_b_ih = dgx_cols.sum(1) if need[6] else None
            d_b_hh = dgh_cols.sum(1) if need[7] else None
        d_h0 = dh if need[2] else None
        d_c0 = dc if cell.cell_state and need[3] else None
        return None, d_x, d_h0, d_c0, d_w_ih, d_w_hh, d_b_ih, d_b_hh


# ------------------------------------------------------------------- module entry
def check_input_dtype(input: torch.Tensor, ref: torch.Tensor, name: str = "input") -> None:
    """A recurrent module's input (or initial state ``name``) must have its parameters' dtype,
    except under autocast, where :func:`recurrence` casts it."""
    if input.dtype != ref.dtype and not torch.is_autocast_enabled(ref.device.type):
        raise TypeError(f"{name} must have dtype {ref.dtype} like the parameters, got {input.dtype}")


def recurrence(cfg: Config, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """``Recurrence.apply`` for the modules. Under autocast (``torch.autocast``) a sparse
    recurrent layer runs in its parameters' dtype: the inputs and states are cast to it and
    autocast is off inside, so the fused step kernels (float32/float64) still run and the
    sequential recurrence keeps full precision; a layer whose parameters were converted to
    float16/bfloat16 (``module.to(torch.bfloat16)``) runs in that dtype instead. (Unlike
    ``nn.LSTM``, which autocast runs in float16 on a GPU.) The layer's outputs have the
    parameters' dtype; autocast casts them again where the next op wants it."""
    check_not_torchscript()  # torch.jit.trace cannot follow the Function: say what to use instead
    dev = w_hh.device.type
    if not torch.is_autocast_enabled(dev):
        return Recurrence.apply(cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    dtype = w_hh.dtype
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    with torch.autocast(dev, enabled=False):
        return Recurrence.apply(cfg, cast(x), cast(h0), cast(c0), w_ih, w_hh, b_ih, b_hh)


# ------------------------------------- growth by gradient: the modules' side of Config.sink
class RecordsGradFactors:
    """The growth-by-gradient protocol of :mod:`sparse_engine.training.grad_factors` for the
    recurrent modules: while ``record_grad_factors`` is True, each layer-direction's backward
    keeps the (G, X) its sddmm uses (dL/dW = G X^T), and ``dense_grad_factors(name)`` returns
    them for ``weight_ih*``/``weight_hh*``. Nothing is kept otherwise."""

    record_grad_factors = False

    def _factor_sink(self, suffix: str, first: bool = True) -> dict | None:
        """The dict a layer-direction's backward fills with its (G, X) (``Config.sink``), None
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


# ------------------------------------------------------------- LSTM with a projection
def projected_lstm(cfg: Config, x, h0, c0, w_ih, w_hh, w_hr, b_ih, b_hh, idx_hr):
    """An LSTM layer-direction with ``proj_size`` (torch's ``nn.LSTM(proj_size=P)``): per step
    c' = f c + i g, h' = W_hr (o tanh c'), so the recurrent product takes the P-dimensional h.
    Feature-major like :class:`Recurrence`: x (I x T*B), h0 (P x B), c0 (H x B) ->
    (Y (P x T*B), h_T, c_T).

    Composed from the differentiable products (``spmm``/``sddmm`` through their registered
    autograd formulas, or ``@`` for a dense matrix) and torch's elementwise ops under plain autograd:
    the fused step kernels have no projection, so this costs one sddmm per step and weight
    instead of one per sequence. Growth by gradient has no factors here (see ``SparseLSTM``)."""
    H, T, B = cfg.hidden, cfg.steps, cfg.batch
    gx = mm(w_ih, cfg.idx_ih, x)
    if b_ih is not None:
        gx = gx + (b_ih + b_hh)[:, None]
    gx = gx.view(4 * H, T, B)
    h, c = h0, c0
    out = [None] * T
    for t in (range(T - 1, -1, -1) if cfg.reverse else range(T)):
        g = gx[:, t] + mm(w_hh, cfg.idx_hh, h)
        i, f, gg, o = g.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = mm(w_hr, idx_hr, torch.sigmoid(o) * torch.tanh(c))
        out[t] = h
    return torch.stack(out, 1).view(h.shape[0], T * B), h, c
