"""One recurrent layer-direction over a whole sequence as a single autograd.Function.

Everything here is feature-major: the input is X (I x T*B) with column t*B + b, the
output Y (H x T*B) the same, states are (H x B). That is the layout of the sparse kernels,
so a stacked network transposes its input once and never again.

Forward:  Gx = W_ih X (+ biases): ONE product over all T*B columns; then per step one
          recurrent product W_hh h and the gate nonlinearities, fused into one op where it has
          a kernel (CPU: ``csrc/cpu/rnn_cpu.cpp``; CUDA: ``csrc/cuda/rnn_step.cu``), composed
          from spmm + torch elementwise ops otherwise (see ``_fused_ok``).
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
h += dt * (-h / tau + tanh(W_ih x + W_hh h + b)), ``unfolds`` sub-steps per input step).

The fused step ops' contract (``csrc/cpu/rnn_cpu.cpp``; the CUDA kernels implement the same):
for every hidden unit j, the G gate rows j, H+j, ... of W_hh h (one CSR row each, gathered
from the feature-major h), plus the precomputed input part gx, then the gate math, writing
h', (c') and the saved activations; backward: the elementwise gate gradient followed by
W_hh^T dG through the transposed index. The fused path takes only float32/float64 values on a
device whose dispatch key has the ops; any other dtype (fp16/bf16) or device composes the
step from spmm/spmm_t and torch's elementwise ops, which give the same results.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

_ops = torch.ops.sparse_engine

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3, "CTRNN": 1}

#: Use the fused step ops where available (CPU or CUDA, sparse recurrent matrix, float32/64;
#: see ``_fused_ok``). Tests flip it
#: to check the fused and the composed paths against each other. Measured (benchmarks/
#: bench_rnn_step.py, results/rnn_step_cpu.md, 2 threads, quiet machine): neither wins
#: everywhere; composed/fused time is 0.67-1.39x (the fused forward loses at hidden 4,096, 1%,
#: where it gathers 4 CSR rows per hidden unit; its backward wins at small sizes). On a busy
#: machine the fused step was 2-8x faster, having one parallel region instead of a dozen.
#: On CUDA the fused step (csrc/cuda/rnn_step.cu) saves the gate pre-activations' round trip
#: through global memory and ~10 kernel launches per step; not yet measured on a GPU
#: (``bench_rnn_step.py --device cuda``).
USE_FUSED = True


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
    #: when set, backward stores the weight-gradient factors here: {"ih": (G, X), "hh": (G, X)}
    sink: dict | None = field(default=None, compare=False)


# ------------------------------------------------------------- products, either kind
def _mm(w, idx, x):
    """W x for a sparse (values, index) or dense W."""
    return w @ x if idx is None else _ops.spmm(*idx, w, x)


def _mm_t(w, idx, g):
    """W^T g."""
    return w.t() @ g if idx is None else _ops.spmm_t(*idx, w, g)


def _wgrad(idx, g, x):
    """Gradient of W for y = W x: g x^T, only at the nonzeros when W is sparse."""
    return g @ x.t() if idx is None else _ops.sddmm(*idx, g, x)


_FUSED_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=None)
def _has_fused_kernels(device_type: str) -> bool:
    """Whether this build registered the fused step ops for the device's dispatch key."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None or not hasattr(_ops, "lstm_step"):
        return False
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_engine::{op}", key)
               for op in ("lstm_step", "lstm_step_backward", "gru_step", "gru_step_backward",
                          "rnn_step", "rnn_step_backward", "ctrnn_step", "ctrnn_step_backward"))


def _fused_ok(cfg: Config, w_hh: torch.Tensor) -> bool:
    """The fused step ops apply: sparse W_hh, float32/float64, a device with the kernels."""
    return (USE_FUSED and cfg.idx_hh is not None and w_hh.dtype in _FUSED_DTYPES
            and _has_fused_kernels(w_hh.device.type))


# --------------------------------------------------------------- composed steps
def _lstm_fwd(w, idx, gx, h, c):
    g = gx + _mm(w, idx, h)
    H = h.shape[0]
    i, f, o = (torch.sigmoid(g[k * H:(k + 1) * H]) for k in (0, 1, 3))
    gg = torch.tanh(g[2 * H:3 * H])
    c2 = torch.addcmul(f * c, i, gg)
    h2 = o * torch.tanh(c2)
    return h2, c2, torch.cat([i, f, gg, o])


def _lstm_bwd(w, idx, acts, c_prev, c, dh, dc):
    i, f, g, o = acts.chunk(4)
    tc = torch.tanh(c)
    dct = dc + dh * o * (1 - tc * tc)
    dG = torch.cat([dct * g * i * (1 - i), dct * c_prev * f * (1 - f), dct * i * (1 - g * g),
                    dh * tc * o * (1 - o)])
    return dG, _mm_t(w, idx, dG), dct * f


def _gru_fwd(w, idx, gx, h, b_hh):
    gh = _mm(w, idx, h)
    if b_hh is not None:
        gh = gh + b_hh[:, None]
    H = h.shape[0]
    r = torch.sigmoid(gx[:H] + gh[:H])
    z = torch.sigmoid(gx[H:2 * H] + gh[H:2 * H])
    ghn = gh[2 * H:]
    n = torch.tanh(gx[2 * H:] + r * ghn)
    h2 = n + z * (h - n)
    return h2, torch.cat([r, z, n, ghn])


def _gru_bwd(w, idx, acts, h_prev, dh):
    r, z, n, ghn = acts.chunk(4)
    dn = dh * (1 - z) * (1 - n * n)
    dr = dn * ghn * r * (1 - r)
    dz = dh * (h_prev - n) * z * (1 - z)
    dgx = torch.cat([dr, dz, dn])
    dgh = torch.cat([dr, dz, dn * r])
    return dgx, dgh, dh * z + _mm_t(w, idx, dgh)


def _rnn_fwd(w, idx, gx, h, relu):
    pre = gx + _mm(w, idx, h)
    return torch.relu(pre) if relu else torch.tanh(pre)


def _rnn_bwd(w, idx, h2, dh, relu):
    dpre = dh * (h2 > 0) if relu else dh * (1 - h2 * h2)
    return dpre, _mm_t(w, idx, dpre)


def _ctrnn_fwd(w, idx, gx, h, dt, tau):
    a = torch.tanh(gx + _mm(w, idx, h))
    return h * (1 - dt / tau) + dt * a, a


def _ctrnn_bwd(w, idx, a, dh, dt, tau):
    dpre = dh * dt * (1 - a * a)
    return dpre, dh * (1 - dt / tau) + _mm_t(w, idx, dpre)


# ----------------------------------------------------------------- the Function
def _to_cols(stacked: torch.Tensor) -> torch.Tensor:
    """(S, R, B) step-major -> (R, S*B) feature-major (one copy)."""
    S, R, B = stacked.shape
    return stacked.permute(1, 0, 2).reshape(R, S * B)


class RecordsGradFactors:
    """The growth-by-gradient protocol of :mod:`sparse_engine.training.grad_factors` for the
    recurrent modules: while ``record_grad_factors`` is True, each layer-direction's backward
    keeps the (G, X) its sddmm uses (dL/dW = G X^T), and ``dense_grad_factors(name)`` returns
    them for ``weight_ih*``/``weight_hh*``. Nothing is kept otherwise."""

    record_grad_factors = False

    def _factor_sink(self, suffix: str) -> dict | None:
        if not self.record_grad_factors:
            self.__dict__.pop("_grad_factor_store", None)
            return None
        return self.__dict__.setdefault("_grad_factor_store", {}).setdefault(suffix, {})

    def dense_grad_factors(self, name: str):
        for kind in ("ih", "hh"):
            if name.startswith(f"weight_{kind}"):
                store = self.__dict__.get("_grad_factor_store", {})
                return store.get(name[len(f"weight_{kind}"):], {}).get(kind)
        raise ValueError(f"name must name a weight_ih*/weight_hh* matrix, got {name!r}")


class Recurrence(torch.autograd.Function):
    """(cfg, X, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (Y, h_T, c_T).

    X (I x T*B), h0/c0 (H x B) (c0 and c_T only for LSTM: pass None, get an empty tensor),
    Y (H x T*B) in time order also for the reverse direction.
    """

    @staticmethod
    def forward(ctx, cfg: Config, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        mode, H, B, T = cfg.mode, cfg.hidden, cfg.batch, cfg.steps
        ctx.device_type = w_hh.device.type
        gx = _mm(w_ih, cfg.idx_ih, x)  # (G*H, T*B): one product for all steps
        bias = None
        if b_ih is not None:
            bias = b_ih if mode == "GRU" or b_hh is None else b_ih + b_hh
        if bias is not None:
            gx = gx + bias[:, None]
        gx = gx.view(-1, T, B).permute(1, 0, 2).contiguous()  # (T, G*H, B): contiguous per step
        fused = _fused_ok(cfg, w_hh)
        idx, relu = cfg.idx_hh, mode == "RNN_RELU"
        U = cfg.unfolds if mode == "CTRNN" else 1
        order = range(T - 1, -1, -1) if cfg.reverse else range(T)
        hs, cs, acts = [h0], [c0], []
        h, c = h0, c0
        for t in order:
            g = gx[t]
            for _ in range(U):
                if mode == "LSTM":
                    h, c, a = (_ops.lstm_step(*idx, w_hh, g, h, c) if fused else _lstm_fwd(w_hh, idx, g, h, c))
                    cs.append(c)
                elif mode == "GRU":
                    h, a = (_ops.gru_step(*idx, w_hh, g, h, b_hh) if fused else _gru_fwd(w_hh, idx, g, h, b_hh))
                elif mode == "CTRNN":
                    h, a = (_ops.ctrnn_step(*idx, w_hh, g, h, cfg.dt, cfg.tau) if fused
                            else _ctrnn_fwd(w_hh, idx, g, h, cfg.dt, cfg.tau))
                else:
                    h = _ops.rnn_step(*idx, w_hh, g, h, relu) if fused else _rnn_fwd(w_hh, idx, g, h, relu)
                    a = None
                hs.append(h)
                if a is not None:
                    acts.append(a)
        hbuf = torch.stack(hs)  # (T*U+1, H, B), processing order
        out = hbuf[U::U]
        if cfg.reverse:
            out = out.flip(0)
        y = _to_cols(out)
        cbuf = torch.stack(cs) if mode == "LSTM" else None
        abuf = torch.stack(acts) if acts else None
        ctx.cfg = cfg
        ctx.has_bias = b_ih is not None
        ctx.fused = fused
        ctx.save_for_backward(x, w_ih, w_hh, b_hh if mode == "GRU" else None, hbuf, cbuf, abuf)
        c_T = c if mode == "LSTM" else h.new_empty(0)
        ctx.mark_non_differentiable(*(() if mode == "LSTM" else (c_T,)))
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
        mode, H, B, T = cfg.mode, cfg.hidden, cfg.batch, cfg.steps
        x, w_ih, w_hh, b_hh, hbuf, cbuf, abuf = ctx.saved_tensors
        need = ctx.needs_input_grad  # (cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        idx, relu, fused = cfg.idx_hh, mode == "RNN_RELU", ctx.fused
        U = cfg.unfolds if mode == "CTRNN" else 1
        dy3 = dy.view(H, T, B).permute(1, 0, 2)  # (T, H, B) view
        dh = dh_T.clone()
        dc = dc_T if mode == "LSTM" else None
        S = T * U
        G = GATES[mode] * H
        dgh = dh.new_empty(G, S, B)  # hidden-side gate gradients, feature-major, processing order
        dgx = [None] * T if mode in ("GRU", "CTRNN") else None  # input-side gradients, time order
        order = list(range(T - 1, -1, -1)) if cfg.reverse else list(range(T))
        for s in range(S - 1, -1, -1):
            step = s // U
            t = order[step]
            if s % U == U - 1:
                dh = dh + dy3[t]
            if mode == "LSTM":
                if fused:
                    dG, dh, dc = _ops.lstm_step_backward(*idx, w_hh, abuf[s], cbuf[s], cbuf[s + 1], dh, dc)
                else:
                    dG, dh, dc = _lstm_bwd(w_hh, idx, abuf[s], cbuf[s], cbuf[s + 1], dh, dc)
                dgh[:, s] = dG
            elif mode == "GRU":
                if fused:
                    gx_s, dG, dh = _ops.gru_step_backward(*idx, w_hh, abuf[s], hbuf[s], dh)
                else:
                    gx_s, dG, dh = _gru_bwd(w_hh, idx, abuf[s], hbuf[s], dh)
                dgh[:, s], dgx[t] = dG, gx_s
            elif mode == "CTRNN":
                if fused:
                    dG, dh = _ops.ctrnn_step_backward(*idx, w_hh, abuf[s], dh, cfg.dt, cfg.tau)
                else:
                    dG, dh = _ctrnn_bwd(w_hh, idx, abuf[s], dh, cfg.dt, cfg.tau)
                dgh[:, s] = dG
                dgx[t] = dG if dgx[t] is None else dgx[t] + dG
            else:
                if fused:
                    dG, dh = _ops.rnn_step_backward(*idx, w_hh, hbuf[s + 1], dh, relu)
                else:
                    dG, dh = _rnn_bwd(w_hh, idx, hbuf[s + 1], dh, relu)
                dgh[:, s] = dG
        dgh_cols = dgh.view(G, S * B)  # (G*H, S*B) in processing order
        if dgx is None:  # LSTM/RNN: the input-side gradient is the hidden-side one, per time step
            dgx_cols = dgh.flip(1).reshape(G, S * B) if cfg.reverse else dgh_cols
        else:
            dgx_cols = _to_cols(torch.stack(dgx))
        d_x = _mm_t(w_ih, cfg.idx_ih, dgx_cols) if need[1] else None
        h_cols = _to_cols(hbuf[:-1])
        d_w_ih = _wgrad(cfg.idx_ih, dgx_cols, x) if need[4] else None
        d_w_hh = _wgrad(idx, dgh_cols, h_cols) if need[5] else None
        if cfg.sink is not None:  # growth by gradient: dL/dW = G X^T, also at empty positions
            cfg.sink["ih"] = (dgx_cols.detach(), x.detach())
            cfg.sink["hh"] = (dgh_cols.detach(), h_cols.detach())
        d_b_ih = d_b_hh = None
        if ctx.has_bias:
            d_b_ih = dgx_cols.sum(1) if need[6] else None
            d_b_hh = dgh_cols.sum(1) if need[7] else None
        d_h0 = dh if need[2] else None
        d_c0 = dc if mode == "LSTM" and need[3] else None
        return None, d_x, d_h0, d_c0, d_w_ih, d_w_hh, d_b_ih, d_b_hh


# ------------------------------------------------------------------- module entry
def check_input_dtype(input: torch.Tensor, ref: torch.Tensor) -> None:
    """A recurrent module's input must have its parameters' dtype, except under autocast,
    where :func:`recurrence` casts it."""
    if input.dtype != ref.dtype and not torch.is_autocast_enabled(ref.device.type):
        raise TypeError(f"input must have dtype {ref.dtype} like the parameters, got {input.dtype}")


def recurrence(cfg: Config, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """``Recurrence.apply`` for the modules. Under autocast (``torch.autocast``) a sparse
    recurrent layer runs in its parameters' dtype: the inputs and states are cast to it and
    autocast is off inside, so the fused step kernels (float32/float64) still run and the
    sequential recurrence keeps full precision; a layer whose parameters were converted to
    float16/bfloat16 (``module.to(torch.bfloat16)``) runs in that dtype instead. (Unlike
    ``nn.LSTM``, which autocast runs in float16 on a GPU.) The layer's outputs have the
    parameters' dtype; autocast casts them again where the next op wants it."""
    dev = w_hh.device.type
    if not torch.is_autocast_enabled(dev):
        return Recurrence.apply(cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    dtype = w_hh.dtype
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    with torch.autocast(dev, enabled=False):
        return Recurrence.apply(cfg, cast(x), cast(h0), cast(c0), w_ih, w_hh, b_ih, b_hh)
