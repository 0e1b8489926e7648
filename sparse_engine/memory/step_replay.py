"""The memory model's replay of a whole training step: the sizes it reads (:class:`RecurrentSizes`,
:class:`Head`), the layer-directions of the stack (:func:`runs_of`) and their inputs and outputs
as the modules pass them (``nn/rnn.py``'s ``_run``: the batch's step-major copy, each layer's Y,
the cat of two directions, dropout, the final states, ``batch_rows``), ``SequenceModel``'s readout
and loss, the backward from the top layer down, and the optimizer step; each layer-direction is
:mod:`.memory_recurrence`. :mod:`.memory` is the public side.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.choose import choose_fused
from ..kernels.constants import GATES, SAVED_ACTS
from ..nn.weights import sparse_flags
from ..recurrent.cell_steps import CELLS, FUSED_DTYPES, has_fused_kernels
from ..recurrent.compute_paths import dense_by_sizes, persistent_by_sizes
from ..recurrent.config import Config
from ..recurrent.persistent import MODES as PERSISTENT_MODES
from ..training.compact_adam import CHUNK
from ..recurrent.sequence import stacks
from .recurrence_replay import Ledger, Run, run_backward, run_forward, transpose_buffer

#: "adam-bf16": :class:`~sparse_engine.training.CompactAdam`, Adam with bfloat16 moments
OPTIMIZERS = ("adam", "adam-bf16", "sgd", "sgd-momentum")
#: The modes of the modules (SparseRNN's nonlinearity is the mode's tail).
MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU", "CTRNN")


# --------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Head:
    """What ``SequenceModel`` adds around the recurrent layers: ``n_out`` classes or values, the
    readout of the ``"last"`` step or of every step (``"steps"``), a classification or a
    regression (``kind``), and an embedding of ``vocab`` words (None: float inputs)."""
    n_out: int
    readout: str = "last"
    kind: str = "classify"
    vocab: int | None = None


@dataclass(frozen=True)
class RecurrentSizes:
    """The sizes of a recurrent module that its memory depends on. ``nnz_ih`` / ``nnz_hh``: the
    nonzeros of each layer-direction's W_ih / W_hh (layer-major, forward direction first), None
    where the matrix is dense. Build one with :meth:`build` (from a density) or :func:`sizes_of`
    (from a module)."""
    mode: str
    input_size: int
    hidden: int
    nnz_ih: tuple
    nnz_hh: tuple
    layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    dropout: float = 0.0
    unfolds: int = 1                  # CTRNN: Euler sub-steps per input step
    fused: bool = True                # the module's ``fused`` setting
    compute: str | None = "sparse"    # the module's ``compute`` setting (None: the global default)
    recompute_every: int | None = None
    saved_dtype: torch.dtype | None = None  # the modules' saved_dtype: the kept c's and activations' dtype
    head: Head | None = None          # a SequenceModel's embedding and readout
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    @classmethod
    def build(cls, model: str, input_size: int, hidden: int, *, layers: int = 1, density: float | None = None,
              row_nnz: float | None = None, sparse: str = "both", **options) -> "RecurrentSizes":
        """Sizes of a module not built: ``model`` 'lstm', 'gru', 'rnn' (tanh), 'rnn_relu' or 'ctrnn';
        the sparse matrices at ``density`` (nonzeros round(density * rows * cols), as
        ``SparseWeight.random``) or with ``row_nnz`` nonzeros per row of W_hh (density
        row_nnz / hidden for every sparse matrix); ``options``: the other fields."""
        mode = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH", "rnn_relu": "RNN_RELU", "ctrnn": "CTRNN"}.get(model)
        if mode is None:
            raise ValueError(f"model must be one of lstm, gru, rnn, rnn_relu, ctrnn; got {model!r}")
        for name, v in (("input_size", input_size), ("hidden", hidden), ("layers", layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if (density is None) == (row_nnz is None):
            raise ValueError("give exactly one of density= and row_nnz=")
        if row_nnz is not None:
            density = row_nnz / hidden
        if not 0 < density <= 1:
            raise ValueError(f"density must be in (0, 1], got {density!r}")
        sp_ih, sp_hh = sparse_flags(sparse)
        G, D = GATES[mode] * hidden, 2 if options.get("bidirectional") else 1
        nnz_ih, nnz_hh = [], []
        for layer in range(layers):
            cols = input_size if layer == 0 else D * hidden
            for _ in range(D):
                nnz_ih.append(int(round(density * G * cols)) if sp_ih else None)
                nnz_hh.append(int(round(density * G * hidden)) if sp_hh else None)
        options.setdefault("compute", "sparse")
        return cls(mode, input_size, hidden, tuple(nnz_ih), tuple(nnz_hh), layers=layers, **options)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def gates(self) -> int:
        return GATES[self.mode]


# -------------------------------------------------------------------------------------- the step
def runs_of(s: RecurrentSizes, T: int, B: int, k: int | None) -> list[Run]:
    """The layer-directions of a forward, in the order it runs them."""
    e = torch.empty(0, dtype=s.dtype).element_size()
    ref = torch.empty(0, dtype=s.dtype)
    cell, H, D = CELLS[s.mode], s.hidden, s.directions
    cpu = s.device == "cpu"
    runs = []
    for layer in range(s.layers):
        for d in range(D):
            i = layer * D + d
            nnz_ih, nnz_hh = s.nnz_ih[i], s.nnz_hh[i]
            cfg = Config(s.mode, H, B, T, bool(d), unfolds=s.unfolds)
            # cell_table.fused_ok and fused_steps from sizes (a CUDA prediction assumes a build with its kernels)
            fused = (s.fused and nnz_hh is not None and s.dtype in FUSED_DTYPES
                     and (has_fused_kernels(s.device) or s.device == "cuda"))
            fwd = bwd = fused
            # persistent.applies from sizes: the whole sequence in one op each way
            one_op = (fused and s.mode in PERSISTENT_MODES and k is None
                      and persistent_by_sizes(s.compute, nnz_hh, e, H, s.device, GATES[s.mode] * H, T, B))
            if fused and cpu:
                fwd = choose_fused(s.mode, H, nnz_hh, B)
            runs.append(Run(f"{s.mode}:{layer}.{d}", s.input_size if layer == 0 else D * H, H, GATES[s.mode] * H,
                             SAVED_ACTS[s.mode], nnz_ih, nnz_hh, T, B, s.unfolds, e, cpu, fwd, bwd,
                             stacks(cfg, cell, ref), layer > 0 or (s.head is not None and s.head.vocab is not None),
                             s.bias, k if k and k < T * s.unfolds else None, s.mode != "CTRNN",
                             one_op and s.saved_dtype is None,
                             e if s.saved_dtype is None else s.saved_dtype.itemsize))
    return runs


def _param_bytes(s: RecurrentSizes, e: int) -> list[int]:
    """Bytes of each parameter tensor in ``model.parameters()`` order (the optimizer's): a module's
    own Parameters first (dense matrices and biases, in the order it registers them), then its
    children's (each SparseWeight's values); a SequenceModel's embedding, recurrent module, readout.
    (The CT-RNN has one bias.)"""
    H, D, G = s.hidden, s.directions, s.gates * s.hidden
    own, children = [], []
    for i, (nnz_ih, nnz_hh) in enumerate(zip(s.nnz_ih, s.nnz_hh)):
        cols = s.input_size if i < D else D * H
        for nnz, c in ((nnz_ih, cols), (nnz_hh, H)):
            if nnz is None:
                own.append(G * c * e)
            else:
                children.append(nnz * e)
        if s.bias:
            own += [G * e] * (1 if s.mode == "CTRNN" else 2)
    sizes = own + children
    if s.head is not None:
        embed = [s.head.vocab * s.input_size * e] if s.head.vocab else []
        sizes = embed + sizes + [s.head.n_out * H * e, s.head.n_out * e]
    return sizes


def _index_bytes(s: RecurrentSizes) -> int:
    """CSR (row_ptr int64, col_idx int32) and the transposed index the recurrence builds
    (csc_ptr int64, csc_row and csc_perm int32) of every sparse matrix."""
    H, D, G = s.hidden, s.directions, s.gates * s.hidden
    total = 0
    for i, (nnz_ih, nnz_hh) in enumerate(zip(s.nnz_ih, s.nnz_hh)):
        cols = s.input_size if i < D else D * H
        for nnz, c in ((nnz_ih, cols), (nnz_hh, H)):
            if nnz is not None:
                total += 8 * (G + 1) + 4 * nnz + 8 * (c + 1) + 8 * nnz
    return total


def check_args(s: RecurrentSizes, T: int, B: int, optimizer: str, k: int | None) -> None:
    """ValueError naming the argument for sizes the replay cannot take, and for a module that would
    compute on the dense path (its memory is torch's recurrence's, not replayed here)."""
    for name, v in (("steps", T), ("batch", B)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"recompute_every must be None or an integer >= 1, got {k!r}")
    entries = nnz = 0
    for i, (a, b) in enumerate(zip(s.nnz_ih, s.nnz_hh)):
        cols = s.input_size if i < s.directions else s.directions * s.hidden
        for w, c in ((a, cols), (b, s.hidden)):
            if w is not None:
                entries += s.gates * s.hidden * c
                nnz += w
    itemsize = torch.empty(0, dtype=s.dtype).element_size()
    # the modules take the sparse path when recomputing (rnn.py, _dense_now)
    dense = dense_by_sizes(s.compute, entries, nnz, itemsize, s.hidden, s.device, s.mode, B, T)
    if s.mode != "CTRNN" and k is None and dense:
        raise ValueError("this module computes on the dense path (compute='auto' takes it for small, dense enough "
                         "layers: docs/compute_paths.md), whose memory is torch's recurrence's; the model covers the "
                         "sparse path: build it with compute='sparse' (or sizes with compute='sparse')")


def replay(s: RecurrentSizes, steps: int, batch: int, optimizer: str) -> tuple[Ledger, list[Run]]:
    """The ledger of one training step of ``s`` (checked by :func:`check_args`), and its runs."""
    e = torch.empty(0, dtype=s.dtype).element_size()
    led = Ledger(s.device)
    params = _param_bytes(s, e)
    # what lives from step to step: values and dense parameters, the index, the optimizer state
    led.alloc("params", "weights", sum(params))
    led.alloc("index", "index", _index_bytes(s))
    # bytes of state per byte of parameter (CompactAdam: two bfloat16 moments), plus Adam's step counters
    per_byte = {"adam": 2, "adam-bf16": 4 / e, "sgd": 0, "sgd-momentum": 1}[optimizer]
    steps_bytes = 4 * len(params) if optimizer.startswith("adam") else 0
    led.alloc("opt_state", "optimizer", int(per_byte * sum(params)) + steps_bytes)
    runs = runs_of(s, steps, batch, s.recompute_every)
    layer_in = _forward(led, s, runs, steps, batch, e)
    led.begin("backward")
    _backward(led, s, runs, layer_in, steps, batch, e)
    led.begin("optimizer")
    _optimizer_step(led, optimizer, params, s.device, e)
    return led, runs


def _forward(led: Ledger, s: RecurrentSizes, runs: list[Run], T: int, B: int, e: int) -> dict:
    """The forward of the module (nn/rnn.py: _forward, _run) and of SequenceModel's head; returns
    the name of each layer's input (and, under ``s.layers``, of the top layer's output)."""
    H, D, head = s.hidden, s.directions, s.head
    I0 = s.input_size
    if head is None:  # the caller's (T, B, I) batch
        led.alloc("batch", "batch", T * B * I0 * e)
    else:  # (B, T) word ids or (B, T, I) features, and the targets
        led.alloc("batch", "batch", B * T * (8 if head.vocab else I0 * e))
        n_targets = B * (T if head.readout == "steps" else 1)
        led.alloc("targets", "batch", n_targets * (8 if head.kind == "classify" else head.n_out * e))
        if head.vocab:  # the embedding's output, held until the module's forward returns
            led.alloc("embedded", "workspace", B * T * I0 * e)
    n_states = (1 if s.mode == "CTRNN" else s.layers * D) * B * H * e
    led.alloc("h0", "activations", n_states)  # _initial_state's zeros
    if s.mode == "LSTM":
        led.alloc("c0", "activations", n_states)
    led.alloc("x0", "activations", T * I0 * B * e)  # x.permute(0, 2, 1).contiguous(): (T, I, B)
    layer_in, top = {0: "x0"}, s.layers - 1
    rec = any(r.k for r in runs)  # recomputing (k below the run's steps: else recomputes() stores)
    # the top layer's output sequence: SequenceModel's readout of the last step asks final_state() for
    # the final states alone (Y is then made only where it holds the stored states)
    top_output = head is None or s.mode == "CTRNN" or head.readout == "steps"
    # recomputing, the layer's Y is kept by nobody once the next layer has its input (the cat of the
    # directions, the dropout's output): it lives while _run's names hold it: the list ``outs`` until
    # the next layer starts, the variable ``y`` (the last direction's) until its first run returns
    outs = []
    for layer in range(s.layers):
        output = layer < top or top_output
        led.free(*outs[:-1])
        ys = [r.name + ".y" for r in runs[layer * D:(layer + 1) * D]]
        for i, (r, y) in enumerate(zip(runs[layer * D:(layer + 1) * D], ys)):
            run_forward(led, r, y, output)
            if not i:
                led.free(*outs[-1:])
        outs = []
        out = ys[0]
        if D == 2 and output:  # torch.cat(outs, 1): the next layer's input (each run keeps its Y when storing)
            out = f"cat{layer}"
            led.alloc(out, "activations", T * D * H * B * e)
            if rec:
                outs = ys
        if s.dropout and layer < top:  # F.dropout: a new output and the mask it is multiplied with
            # (CPU: torch's composite dropout, a mask of values; CUDA: native_dropout's bool mask)
            led.alloc(f"drop{layer}", "activations", T * D * H * B * e)
            led.alloc(f"mask{layer}", "activations", T * D * H * B * (e if s.device == "cpu" else 1))
            if D == 2:
                led.free(out)
            elif rec:
                outs = ys  # saved by nobody: the mask's product keeps only the mask
            out = f"drop{layer}"
        layer_in[layer + 1] = out
    if s.mode == "CTRNN":  # h_T.t().unsqueeze(0).contiguous()
        led.alloc("h_n", "activations", n_states)
    else:  # torch.stack(h_n).transpose(1, 2).contiguous(), and c_n
        for name in ("h_n", "c_n") if s.mode == "LSTM" else ("h_n",):
            led.alloc(name, "activations", n_states)
            led.temp(name + "_stack", "workspace", n_states)  # (live with the copy made of it)
    for r in runs:  # the runs' h_T (and, not kept when recomputing, c_T), copied into h_n / c_n
        led.free(r.name + ".hT", *((r.name + ".cT",) if r.k else ()))
    led.free(*outs)
    led.free("embedded")
    top_out = layer_in[s.layers]
    if head is None or s.mode == "CTRNN":  # batch_rows: torch's (T, B, D*H) output, a 2-D transposing
        # copy_ per step (on the CPU through a 60 x 60 block buffer)
        led.alloc("out", "batch" if head is None else "activations", T * B * D * H * e)
        led.temp("transpose", "workspace", transpose_buffer(s.device == "cpu", B * D * H, e))
        if D == 2 or rec:
            led.free(top_out)  # nobody keeps the top layer's step-major output
    if head is None:
        led.free("h_n", "c_n")  # the caller keeps the output, not the final states
    _head_forward(led, s, T, B, e)
    return layer_in


def _backward(led: Ledger, s: RecurrentSizes, runs: list[Run], layer_in: dict, T: int, B: int, e: int) -> None:
    """The backward from the loss to the first layer, and the release of what each part kept."""
    H, D, head, I0 = s.hidden, s.directions, s.head, s.input_size
    top_out = layer_in[s.layers]
    rec = any(r.k for r in runs)
    dy = _head_backward(led, s, T, B, e)
    if rec:
        led.free(top_out)  # the readout of every step kept the top layer's Y; its run did not
    for layer in range(s.layers - 1, -1, -1):
        dx = f"dx{layer}"
        for d in range(D - 1, -1, -1):
            part = dx if d == D - 1 else dx + ".other"
            run_backward(led, runs[layer * D + d], dy, part)
            led.free(dx + ".other")  # the engine adds the second direction's d_x into the first's
        led.free(dy or "")
        # this layer's input goes with its backward where nothing else keeps it: the copy of the batch,
        # the cat of the two directions, or (recomputing) the layer below's Y, which its run did not save
        if not layer or (not s.dropout and (D == 2 or rec)):
            led.free(layer_in[layer])
        if layer and s.dropout:  # the dropout below: its output was this layer's input; grad * mask / (1 - p)
            led.free(f"drop{layer - 1}")
            if led.has(dx):
                led.alloc(dx + ".drop", "workspace", T * D * H * B * e)
                led.free(dx)
                dx += ".drop"
            led.free(f"mask{layer - 1}")
        dy = dx if led.has(dx) else None
    if head is not None and head.vocab:  # embedding_dense_backward: the (vocab, I) gradient
        led.temp("embed_bwd", "workspace", B * T * I0 * e, 4 * B * T * 8)
        led.alloc("embed.grad", "gradients", head.vocab * I0 * e)
    led.free(dy or "", "h0", "c0", "h_n", "c_n")


def _head_forward(led: Ledger, s: RecurrentSizes, T: int, B: int, e: int) -> None:
    """SequenceModel's readout and loss after the recurrent layers (models.py; runs/train_run.py's losses)."""
    head = s.head
    if head is None:
        return
    C, n = head.n_out, B * (T if head.readout == "steps" else 1)
    if s.mode == "CTRNN" and head.readout == "steps":  # nn.Linear on the (B, T, H) view: a reshaped copy,
        # which its product keeps (the output itself is dropped)
        led.alloc("out_rows", "activations", T * B * s.hidden * e)
        led.free("out")
    led.alloc("logits", "activations", n * C * e)
    if head.readout == "steps":  # the loss reads the permuted (B, T, C) logits as rows: a copy
        led.alloc("logits_rows", "activations", n * C * e)
    led.alloc("loss_saved", "activations", n * C * e)  # log_softmax's output, or MSE's difference


def _head_backward(led: Ledger, s: RecurrentSizes, T: int, B: int, e: int) -> str | None:
    """The gradient that reaches the top layer's output: the name of one (T, D*H, B) tensor, or
    None where only h_T is read (SequenceModel's readout of the last step)."""
    head, H, D = s.head, s.hidden, s.directions
    if head is None:  # _BatchRows.backward: out.sum()'s gradient made contiguous, then transposed per step
        led.alloc("out_grad", "workspace", T * B * D * H * e)
        led.alloc("dy", "workspace", T * D * H * B * e)
        led.temp("transpose", "workspace", transpose_buffer(s.device == "cpu", B * D * H, e))
        led.free("out_grad")
        return "dy"
    C, n = head.n_out, B * (T if head.readout == "steps" else 1)
    led.temp("loss_bwd", "workspace", n * C * e, n * C * e)
    led.free("loss_saved", "logits_rows")
    led.alloc("dlogits", "workspace", n * C * e)
    led.alloc("readout.grad", "gradients", C * H * e + C * e)  # (the readout's own order aside)
    if s.mode == "CTRNN":  # the readout input's gradient (the last step's, in zeros, or every step's),
        # then _BatchRows.backward's contiguous copy of that (B, T, H) view and its step-major transpose
        led.free("dlogits", "logits", "out_rows", "out")
        led.alloc("out_grad", "workspace", T * B * H * e)
        led.alloc("out_grad_c", "workspace", T * B * H * e)
        led.alloc("dy", "workspace", T * H * B * e)
        led.temp("transpose", "workspace", transpose_buffer(s.device == "cpu", B * H, e))
        led.free("out_grad", "out_grad_c")
        return "dy"
    if head.readout == "last":  # readout(h_n[-1]): its input's gradient, written into zeros of h_n's shape
        led.temp("dh_n", "workspace", B * H * e, s.layers * D * B * H * e)
        led.free("dlogits", "logits")
        return None
    # baddbmm(bias, W expanded over T, y): dW per step and dy = W^T dlogits per step, beside the Y it
    # saved; then the expand's backward sums dW over T
    led.alloc("dW_steps", "workspace", T * C * H * e)
    led.alloc("dy", "workspace", T * H * B * e)
    led.free("dlogits", "logits")
    led.free("dW_steps")
    return "dy"


def _optimizer_step(led: Ledger, optimizer: str, params: list[int], device: str, e: int) -> None:
    """torch.optim's step on the CPU (one tensor at a time) or CUDA (foreach, all at once);
    CompactAdam's a chunk at a time on both."""
    if optimizer == "adam-bf16":  # its _update: m, v, denom in float32, then round_stochastic's noise,
        c = min(CHUNK, max(params) // e)  # its sum and the bfloat16 result, for the largest chunk
        led.temp("compact_adam", "workspace", *[4 * c] * 5, 2 * c)
        return
    if optimizer != "adam":
        return  # SGD (with momentum: buf.mul_().add_()) updates in place
    if device == "cuda":  # _multi_tensor_adam: exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs)
        led.temp("adam_sqrt", "workspace", *params)
    else:  # _single_tensor_adam, a parameter at a time: denom = (exp_avg_sq.sqrt() / c).add_(eps), the
        # previous parameter's denom still bound while the next one's sqrt and quotient are made
        prev = 0
        for p in params:
            led.temp("adam_denom", "workspace", prev, p, p)
            prev = p
