"""One recurrent layer-direction over a whole sequence as a single autograd.Function.

Everything here is step-major: the input is X (T x I x B), the output Y (T x H x B), states
are (H x B), so every step reads and writes whole contiguous (features x batch) blocks, the
layout of the sparse kernels; a stacked network feeds one layer's Y to the next as it is, and
the module transposes to torch's (T, B, H) once at the end (:func:`batch_rows`).

Forward:  per step the input part W_ih x_t (+ biases) (one product on that step's block, used at
          once: no T x G*H x B buffer), then the recurrent product W_hh h and the gate
          nonlinearities, fused into one op where it has a kernel (CPU: ``csrc/cpu/rnn_step_cpu.cpp``;
          CUDA: ``csrc/cuda/rnn_step_cuda.cu``) and, on the CPU, where the measured rule says it is
          faster (:func:`~sparse_engine.recurrent.cell_steps.fused_steps`, the one decision), composed
          from spmm + torch elementwise ops otherwise; the new
          state is written into Y's block.
Backward: per step the elementwise gate gradient and one spmm_t (W_hh^T dG) for the hidden
          gradient, then that step's part of each weight gradient (sddmm, or a dense product,
          added up over the steps), of the bias gradients and of the input gradient (spmm_t):
          no stacked gate gradients or states. The spmm_t of every step read the values in
          column order: they are gathered once per backward (``transposed``, an nnz copy held
          while it runs), not in each step (csrc/values_t.h).
Small runs (:data:`STACK_BYTES`: big weights, small activations) instead compute the input part
          of all steps as one product and, in the backward, stack the per-step gate gradients and
          states for one sddmm (or dense product) per weight over all T*B columns.
Memory:   the saved activations are Y itself (the states are read back from it), plus LSTM's c
          and gate activations, GRU's and CT-RNN's saved activations and CT-RNN's sub-step states:
          O(T*B*gates*H), plus O(nnz); nothing is O(H^2) unless the user asked for a dense matrix.
Recomputed (``Config.recompute_every`` k, the modules' ``recompute_every``): the forward keeps
          the state (h, and c for LSTM) after every k-th step and the last segment's steps, whose
          backward runs first (:class:`StepRunner` runs the steps); the backward takes the segments from
          the last, runs each earlier one's k steps again from its kept state with the same calls
          on the same inputs (so the same numbers, bit for bit) and then its backward steps, and
          drops them before the next: O(T/k + k) steps of activations instead of O(T), for one
          more forward of all but the last segment. Stacked runs keep their input part (gx) too.
Narrower (``Config.saved_dtype``, the modules' ``saved_dtype``): a stored run keeps LSTM's c's and
          the saved activations in bfloat16 (or float16), each step's copied narrower as it is made
          and back into the values' dtype for its backward step: their bytes halved for a rounding
          of what the backward reads. Done here, around the step ops, not inside the kernels, so
          that every device and path (fused or composed) takes it with no kernel of its own
          (docs/memory.md: what it costs). Not with recomputation (its segments live briefly).
Under ``torch.no_grad`` (``Config.backward`` False) a run keeps nothing for a backward and its
          forward is called without autograd's wrapping of the Function (:func:`recurrence`).

A weight is either sparse or dense (an ordinary (rows x cols) tensor); the two matrices of a
layer are chosen independently (``sparse='both'|'recurrent'|'input'``). The modules hand each
weight to :func:`recurrence` as they hold it (a SparseWeight or the tensor). There it is split,
once, into what ``torch.autograd.Function`` needs: its values (or dense matrix) are the Function's
tensor inputs, which autograd gives their gradients to (under a parametrization such as weight drop
they are computed for this forward: the module itself cannot be the input), and a sparse weight's
5 index tensors, which take no gradient, travel in the frozen :class:`Config` with the run's
settings (``torch.compile`` traces the Function with the Config as a constant). Inside, each
(values, index) pair goes to the products as the raw operators take it (:mod:`.products`).

Modes: ``RNN_TANH``, ``RNN_RELU``, ``LSTM`` (gates i, f, g, o like torch), ``GRU`` (r, z, n
like torch: n = tanh(Wx_n x + b_in + r * (W_hn h + b_hn)), so the hidden product of the n gate
is kept separately) and ``CTRNN`` (Euler-unfolded continuous-time RNN:
h += dt * (-h / tau + tanh(W_ih x + W_hh h + b)), ``unfolds`` sub-steps per input step). Each is
an entry of :data:`sparse_engine.recurrent.cell_steps.CELLS`: its gate layout, fused step op pair and
composed step and step-backward, called the same way for every mode.

The fused step ops' contract (``csrc/cpu/rnn_step_cpu.cpp``; the CUDA kernels implement the same):
for every hidden unit j, the G gate rows j, H+j, ... of W_hh h (one CSR row each, gathered
from the feature-major h), plus the precomputed input part gx, then the gate math, writing
h', (c') and the saved activations; backward: the elementwise gate gradient followed by
W_hh^T dG through the transposed index. The fused path takes only float32/float64 values on a
device whose dispatch key has the ops; any other dtype (fp16/bf16) or device composes the
step from spmm/spmm_t and torch's elementwise ops, which give the same results. Whether to
use it at all is the module's ``fused`` setting (``Config.fused``).

Growth by gradient (:class:`RecordsGradFactors`): a run given a ``sink`` dict has its backward
store each weight's gradient factors there; the sink is the Function's last argument, the one
thing its backward writes outside autograd.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .._moved import old_name
from ..sparse import SparseWeight
from ..sparse.no_torchscript import check_not_torchscript
from . import persistent
from .cell_steps import CELLS, fused_steps
from .config import Config
from .products import mm, mm_t, transposed, untransposed, weight_args, wgrad
from .projected import projected_lstm
from .recompute import StepRunner, last_start, recomputed_segments, recomputes, step_tensors, stored_segments


# ----------------------------------------------------------------- the Function
def _to_cols(stacked: torch.Tensor) -> torch.Tensor:
    """(S, R, B) step-major -> (R, S*B) feature-major (one copy)."""
    S, R, B = stacked.shape
    return stacked.permute(1, 0, 2).reshape(R, S * B)


#: Up to this size of the stacked per-step gate gradients and states (bytes), the input part and the
#: weight gradients are one product over all T*B columns (the fast way for big weights and small
#: activations: long rows in each dot product, the weights read once); above it they are done per
#: step (the fast way for big activations: no T x G*H x B buffers and no layout copies). Measured
#: (1 thread): LSTM hidden 1,500 at 33%, T=35, B=20 (17 MB) 1.95 s stacked vs 2.82 s per step; vanilla
#: RNN hidden 100,000 at 1e-4, T=28, B=64 (0.7 GB) about 11 s stacked (with its layout copies) vs 4.4 s.
STACK_BYTES = 128 * 2**20


def stacks(cfg: Config, cell, ref: torch.Tensor) -> bool:
    """Whether a run takes the stacked products (see :data:`STACK_BYTES`)."""
    steps = cfg.steps * cell.unfolds(cfg)
    size = (cell.gates + 1) * cfg.hidden * steps * cfg.batch * ref.element_size()
    if not isinstance(size, int):  # symbolic sizes (torch.export, dynamic shapes): per step, no guard on them
        return False
    return size <= STACK_BYTES


def _kept(t: torch.Tensor, cfg: Config) -> torch.Tensor:
    """A step's c or saved activations as a stored run keeps them for the backward: in
    ``cfg.saved_dtype`` where set (a copy; the step's own tensor goes once the loop moves on)."""
    return t if cfg.saved_dtype is None else t.to(cfg.saved_dtype)


def _wgrad_into(acc, idx, g, x):
    """acc += g x^T (at the nonzeros when sparse): one step's part of a weight gradient."""
    if idx is None:
        return acc.addmm_(g, x.t())
    return acc.add_(wgrad(idx, g, x))


class Recurrence(torch.autograd.Function):
    """(cfg, X, h0, c0, w_ih, w_hh, b_ih, b_hh[, sink]) -> (Y, h_T, c_T).

    X (T x I x B), h0/c0 (H x B) (c0 and c_T only for LSTM: pass None, get an empty tensor),
    Y (T x H x B) in time order also for the reverse direction (see the module docstring), empty
    when ``cfg.output`` is False. w_ih, w_hh: the weights' values (sparse, their index in ``cfg``) or dense matrices. ``sink``:
    None, or a dict the backward fills with the weight-gradient factors {"ih": (G, X), "hh": (G, X)}.
    """

    @staticmethod
    def forward(ctx, cfg: Config, x, h0, c0, w_ih, w_hh, b_ih, b_hh, sink=None):
        cell, T, B, H = CELLS[cfg.mode], cfg.steps, cfg.batch, cfg.hidden
        ctx.device_type = w_hh.device.type
        ctx.set_materialize_grads(False)  # an unused output (Y, when only h_T is read) costs nothing
        bias = None
        if b_ih is not None:
            bias = b_ih if cell.hidden_bias or b_hh is None else b_ih + b_hh
        fused, fused_backward = fused_steps(cfg, w_hh)
        one_op = persistent.applies(cfg, w_hh)  # the whole sequence in one op each way
        stacked = one_op or stacks(cfg, cell, h0)
        gx = None
        if stacked:  # the input part of all steps as one product, (G*H, T*B); step t reads its
            # B columns where they are (the CPU step kernel takes a row stride): no step-major copy
            gx = mm(w_ih, cfg.idx_ih, _to_cols(x))
            if bias is not None:
                gx.add_(bias[:, None])
        ctx.cfg = cfg
        ctx.has_bias = b_ih is not None
        ctx.sink = sink
        ctx.persistent = one_op
        if one_op:
            y, h, c, saved = persistent.forward(cfg, w_hh, b_hh, gx, h0, c0)
            ctx.kept = None
            ctx.save_for_backward(x, w_ih, w_hh, b_hh if cell.hidden_bias else None, y, h0, c0, *saved)
            return Recurrence._outputs(ctx, cfg, cell, y, h, c)
        k_every = recomputes(cfg, cell)
        saving = cfg.backward and any(ctx.needs_input_grad)  # anything kept for a backward
        y = h0.new_empty(T, H, B) if cfg.output or (saving and not k_every) else None  # the stored run's states
        run = StepRunner(cfg, cell, x, w_ih, w_hh, bias, b_hh, gx, fused)
        keep = {}  # the states kept for recomputation: {s: (h_s, c_s)} at every k_every-th step
        # and the last segment's steps (h', c', activations): its backward comes first, so they are
        # used at once instead of recomputed, and held no longer than a recomputed one (not saved
        # tensors, which would live to the end of the backward; detached: h_T is an output)
        # (eager only: torch.compile's traced backward recomputes it)
        last_lo = last_start(T * run.U, k_every) if k_every else None
        last_segment = [] if saving and k_every and not torch.compiler.is_compiling() else None
        inner, cs, acts = {}, [c0], []
        h, c = h0, c0
        for s, t, last, (h, c, a) in run.steps(0, T * run.U, h0, c0):
            if not saving:
                pass
            elif k_every:
                if (s + 1) % k_every == 0 and s + 1 < T * run.U:
                    keep[s + 1] = (h, c)
                if s >= last_lo and last_segment is not None:
                    last_segment.append(tuple(None if v is None else v.detach() for v in (h, c, a)))
            else:
                if not last:
                    inner[s + 1] = h
                if cell.cell_state:
                    cs.append(_kept(c, cfg))
                if a is not None:
                    acts.append(_kept(a, cfg))
            if last and y is not None:
                y[t] = h
        ctx.fused = fused
        ctx.fused_backward = fused_backward
        ctx.stacked = stacked
        if k_every:  # x, the weights, h0 (c0), the kept states; the stacked input part (small runs)
            ctx.kept = tuple(keep)
            ctx.last_segment = last_segment or None
            ctx.last_versions = [v._version for v in step_tensors(last_segment or [])]
            ctx.save_for_backward(x, w_ih, w_hh, b_hh if cell.hidden_bias else None, None, h0, c0, bias, gx,
                                  *(h_ for h_, _ in keep.values()),
                                  *(c_ for _, c_ in keep.values() if cell.cell_state))
        else:
            ctx.kept = None
            ctx.inner_keys = tuple(inner)
            ctx.n_c = len(cs) if cell.cell_state else 0
            ctx.save_for_backward(x, w_ih, w_hh, b_hh if cell.hidden_bias else None, y, h0, *inner.values(),
                                  *(cs if cell.cell_state else ()), *acts)
        return Recurrence._outputs(ctx, cfg, cell, y, h, c)

    @staticmethod
    def _outputs(ctx, cfg, cell, y, h, c):
        """(Y, h_T, c_T) as the Function returns them: empty where not asked for or not the cell's."""
        c_T = c if cell.cell_state else h.new_empty(0)
        if not cfg.output:
            y = h.new_empty(0)
        ctx.mark_non_differentiable(*(() if cell.cell_state else (c_T,)), *(() if cfg.output else (y,)))
        return y, h, c_T

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dh_T, dc_T):
        # in the parameters' dtype even when .backward() is called inside an autocast region
        with torch.autocast(ctx.device_type, enabled=False):
            return Recurrence._backward(ctx, dy, dh_T, dc_T)

    @staticmethod
    def _backward(ctx, dy, dh_T, dc_T):
        """dy, dh_T, dc_T may be None (outputs nobody read): zeros."""
        cfg = ctx.cfg
        cell, H, B, T = CELLS[cfg.mode], cfg.hidden, cfg.batch, cfg.steps
        x, w_ih, w_hh, b_hh, y, h0, *rest = ctx.saved_tensors
        need = ctx.needs_input_grad  # (cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        idx, U, params = cfg.idx_hh, cell.unfolds(cfg), cell.params(cfg)
        dh = h0.new_zeros(H, B) if dh_T is None else dh_T
        dc = None
        if cell.cell_state:
            dc = h0.new_zeros(H, B) if dc_T is None else dc_T
        if ctx.persistent:  # one op back through time, then the stacked products
            c0, *saved = rest
            g_ih, g_hh, x_hh, dh, dc = persistent.backward(cfg, w_hh, transposed(w_hh, idx) if T > 1 else None, y, h0,
                                                           c0, saved, dy, dh, dc)
            return Recurrence._stacked_grads(ctx, need, cell, x, w_ih, g_ih, g_hh, x_hh, dh, dc)
        _, step_backward = cell.steps(ctx.fused_backward)
        order = list(range(T - 1, -1, -1)) if cfg.reverse else list(range(T))
        segments = recomputed_segments(ctx, cell, x, w_ih, w_hh, b_hh, h0, rest) if ctx.kept is not None else \
            stored_segments(ctx, cell, y, h0, rest, order, U)
        sink = ctx.sink
        step_dtype = h0.dtype  # the dtype the steps compute in
        stacked = ctx.stacked or sink is not None  # growth by gradient: the whole (G, X) of each weight
        # W^T dG in every step reads the values in column order: gathered once here, not per step
        w_hh_t = transposed(w_hh, idx) if T * U > 1 else None
        w_ih_t = transposed(w_ih, cfg.idx_ih) if need[1] and not stacked and T > 1 else None
        bias_grads = ctx.has_bias and (need[6] or need[7])
        # a fused step backward adds W_hh's gradient itself, from the rows of dG it gathers for
        # W_hh^T dG anyway (no sddmm pass gathering the states again), in the transposed index's
        # order: d_w_hh accumulates in that order and is put in the CSR's at the end
        fused_wgrad = ctx.fused_backward and not stacked and need[5] and idx is not None
        d_x = d_w_ih = d_w_hh = d_b_ih = d_b_hh = dgx_t = dgh_s = None
        if stacked:
            dgx_t, dgh_s = [None] * T, [None] * (T * U)
        else:
            d_x = torch.zeros_like(x) if need[1] else None
            d_w_ih = torch.zeros_like(w_ih) if need[4] else None
            d_w_hh = torch.zeros_like(w_hh) if need[5] else None
            if bias_grads:
                d_b_ih = h0.new_zeros(cell.gates * H)
                d_b_hh = h0.new_zeros(cell.gates * H)
        states_all = [None] * (T * U) if stacked else None  # the stacked wgrad's states, in step order
        for lo, hi, bufs in segments:  # from the last steps to the first
            states = bufs["h"]
            for s in range(hi - 1, lo - 1, -1):
                t = order[s // U]
                if s % U == U - 1 and dy is not None:
                    dh = dh + dy[t]
                extra = {"h_in": states[s], "dw_t": d_w_hh} if fused_wgrad else {}
                saved = cell.saved_at(s, bufs)
                if cfg.saved_dtype is not None:  # kept narrower (_kept): back in the values' dtype
                    saved = [v.to(step_dtype) for v in saved]
                dG_x, dG, dh, dc = cell.backward_step(step_backward, w_hh, idx, saved, dh, dc, params, w_hh_t,
                                                      **extra)
                saved = None
                if stacked:
                    dgh_s[s] = dG
                    dgx_t[t] = dG_x if dgx_t[t] is None else dgx_t[t] + dG_x
                    states_all[s] = states[s]
                    continue
                x_t = x[t]
                if d_w_hh is not None and not fused_wgrad:
                    _wgrad_into(d_w_hh, idx, dG, states[s])
                if d_w_ih is not None:
                    _wgrad_into(d_w_ih, cfg.idx_ih, dG_x, x_t)
                if d_x is not None:
                    d_x[t] += mm_t(w_ih, cfg.idx_ih, dG_x, w_ih_t)
                if bias_grads:
                    g_sum = dG.sum(1)
                    d_b_hh += g_sum
                    d_b_ih += g_sum if dG_x is dG else dG_x.sum(1)
                dG = dG_x = None  # gone before the next step's are made (G*H x B each: 320 MB at 10^6 units)
            del bufs, states  # a recomputed segment's buffers go before the next one is made
        if fused_wgrad:
            del w_hh_t  # before the copy in the CSR's order: a lower peak
            d_w_hh = untransposed(d_w_hh, idx)
        if stacked:  # one product per weight over all T*B columns
            return Recurrence._stacked_grads(ctx, need, cell, x, w_ih, _to_cols(torch.stack(dgx_t)),
                                             _to_cols(torch.stack(dgh_s)), _to_cols(torch.stack(states_all)), dh, dc)
        if bias_grads:
            d_b_ih, d_b_hh = (d_b_ih if need[6] else None), (d_b_hh if need[7] else None)
        return Recurrence._grads(need, cell, d_x, dh, dc, d_w_ih, d_w_hh, d_b_ih, d_b_hh)

    @staticmethod
    def _stacked_grads(ctx, need, cell, x, w_ih, g_ih, g_hh, x_hh, dh, dc):
        """The gradients of a stacked run from the gate gradients of all steps, input side ``g_ih``
        and hidden side ``g_hh`` ((G*H) x (T*B)), and the states W_hh multiplied, ``x_hh`` (H x (T*B)),
        in the same column order: one product per weight over all T*B columns (dL/dW = G X^T); a
        ``sink`` gets those factors (growth by gradient)."""
        cfg, sink = ctx.cfg, ctx.sink
        T, B = cfg.steps, cfg.batch
        x_ih = _to_cols(x)
        d_x = mm_t(w_ih, cfg.idx_ih, g_ih).view(x.shape[1], T, B).permute(1, 0, 2).contiguous() if need[1] else None
        d_w_ih = wgrad(cfg.idx_ih, g_ih, x_ih) if need[4] else None
        d_w_hh = wgrad(cfg.idx_hh, g_hh, x_hh) if need[5] else None
        d_b_ih = d_b_hh = None
        if ctx.has_bias:
            d_b_ih, d_b_hh = (g_ih.sum(1) if need[6] else None), (g_hh.sum(1) if need[7] else None)
        if sink is not None:
            sink["ih"] = (g_ih.detach(), x_ih.detach())
            sink["hh"] = (g_hh.detach(), x_hh.detach())
        return Recurrence._grads(need, cell, d_x, dh, dc, d_w_ih, d_w_hh, d_b_ih, d_b_hh)

    @staticmethod
    def _grads(need, cell, d_x, dh, dc, d_w_ih, d_w_hh, d_b_ih, d_b_hh):
        """The backward's return value, in the order of the forward's inputs."""
        d_h0 = dh if need[2] else None
        d_c0 = dc if cell.cell_state and need[3] else None
        return None, d_x, d_h0, d_c0, d_w_ih, d_w_hh, d_b_ih, d_b_hh, None


# ------------------------------------------------------------------- module entry
def recurrence(cfg: Config, x, h0, c0, w_ih, w_hh, b_ih, b_hh, sink: dict | None = None, w_hr=None):
    """One layer-direction on the sparse path, the engine's entry for the modules: ``Recurrence.apply``
    for weights handed over as the modules hold them (a SparseWeight is split here, once, into its
    values (the Function's input) and its index (filled into ``cfg``); a tensor is taken as it is,
    with its index in ``cfg`` when sparse (the Function's own form) or none when dense). ``sink``: see
    :class:`Recurrence`. ``w_hr``: an LSTM's projection (``proj_size``), which
    :func:`~.projected.projected_lstm` computes instead (no fused steps, no sink).

    Under autocast (``torch.autocast``) a sparse recurrent layer runs in its parameters' dtype:
    the inputs and states are cast to it and autocast is off inside, so the fused step kernels
    (float32/float64) still run and the sequential recurrence keeps full precision; a layer whose
    parameters were converted to float16/bfloat16 (``module.to(torch.bfloat16)``) runs in that
    dtype instead. (Unlike ``nn.LSTM``, which autocast runs in float16 on a GPU.) The layer's
    outputs have the parameters' dtype; autocast casts them again where the next op wants it."""
    if w_hr is not None:
        return projected_lstm(cfg, x, h0, c0, w_ih, w_hh, w_hr, b_ih, b_hh)
    check_not_torchscript()  # torch.jit.trace cannot follow the Function: say what to use instead
    grad = torch.is_grad_enabled()
    backward = cfg.backward and grad
    if isinstance(w_ih, SparseWeight) or isinstance(w_hh, SparseWeight):
        (w_ih, idx_ih), (w_hh, idx_hh) = weight_args(w_ih, cfg.idx_ih), weight_args(w_hh, cfg.idx_hh)
        cfg = replace(cfg, idx_ih=idx_ih, idx_hh=idx_hh, backward=backward)
    elif backward != cfg.backward:
        cfg = replace(cfg, backward=backward)
    run = Recurrence.apply if grad else _without_autograd
    dev = w_hh.device.type
    if not torch.is_autocast_enabled(dev):
        return run(cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh, sink)
    dtype = w_hh.dtype
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    with torch.autocast(dev, enabled=False):
        return run(cfg, cast(x), cast(h0), cast(c0), w_ih, w_hh, b_ih, b_hh, sink)


class _NoBackward:
    """The context :meth:`Recurrence.forward` is given when no backward can follow: it keeps nothing."""
    needs_input_grad = (False,) * 9

    def set_materialize_grads(self, value):
        pass

    def save_for_backward(self, *tensors):
        self.to_save = tensors  # as autograd's context holds them, until the call returns

    def mark_non_differentiable(self, *tensors):
        pass


def _without_autograd(cfg: Config, *args):
    """``Recurrence.apply`` where gradient mode is off (inference, a sampler's one step at a time):
    the same forward called directly, the same outputs (none requires grad), without autograd's
    wrapping of a Function (12-25 us a call, as much as the kernels of a 256-unit GRU step at B = 1)."""
    return Recurrence.forward(_NoBackward(), cfg, *args)

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
