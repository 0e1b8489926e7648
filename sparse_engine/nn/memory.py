"""The memory of one training step of a sparse recurrent network, predicted from its sizes alone.

Users train recurrent layers of up to a million units; before a run they need to know whether a
step fits. :func:`predict` answers for a :class:`~sparse_engine.nn.SparseRNN` / ``SparseLSTM`` /
``SparseGRU`` / ``SparseCTRNN``, the command line's ``SequenceModel`` (the recurrent layers plus
an optional embedding and a dense readout), or their :class:`RecurrentSizes`, without allocating
anything (a million-unit prediction takes milliseconds). :func:`recompute_for_budget` picks the
recompute interval (``recompute_every``) for a budget, :func:`largest_hidden` the widest layer
that fits one.

How: a replay of the step's allocations in the order the code makes and frees them, kept in a
ledger by kind (:data:`KINDS`), whose high-water mark is the prediction. Every line of the replay
names what it stands for in :mod:`.recurrence` (the ``Recurrence`` Function: what its forward
keeps, what its backward allocates), :mod:`.cell_table` (the steps) and the CPU kernels'
temporaries (their padded copies, ``csrc/cpu/gather.h``). The replay does each loop's last
iteration alone and the iterations before it in bulk: a loop's allocations are the same in every
iteration and what the forward keeps only grows, so the last iteration is where the loop peaks.

The step is the steady state of a training loop: ``opt.zero_grad()`` (gradients freed),
forward, backward, ``opt.step()``, with the transposed index of every sparse weight built and the
optimizer state made (both by the first step). For a bare module the loss is ``out.sum()`` or any
loss whose gradient is one tensor of the output's size (its own temporaries are the caller's), and
the caller holds the input batch and the output through the step; a ``SequenceModel`` step is
the command line's (its readout, cross-entropy or MSE loss, the batch's targets). Growth by
gradient (RigL, Selfish-RNN) and PackedSequence inputs are not modelled, nor ``proj_size``; a
module on the dense compute path (small layers, :mod:`.compute`) is refused: its memory is
torch's recurrence's and at most a few hundred MB.

The optimizer: ``"adam"`` (two moments; on the CPU torch's per-tensor Adam takes two temporaries
of the largest parameter, on CUDA the foreach Adam one of all of them), ``"sgd"`` (no state) and
``"sgd-momentum"`` (one buffer). CUDA: allocations rounded up to the caching allocator's 512 bytes,
no padded copies; not checked on a GPU yet. Checked on the CPU against the allocation events of
torch's profiler (``tests/test_memory_model.py``) and the process's resident memory at 10,000 and
100,000 units (``benchmarks/bench_memory_model.py``, docs/memory.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from ..kernels.choose import choose_fused
from ..kernels.constants import GATES, SAVED_ACTS
from .cell_table import CELLS, FUSED_DTYPES, has_fused_kernels
from .compute import dense_by_sizes
from .recurrence import Config, stacks
from .weights import sparse_flags

__all__ = ["KINDS", "OPTIMIZERS", "RecurrentSizes", "Head", "MemoryBreakdown", "MemoryBudgetError", "sizes_of",
           "predict", "recompute_for_budget", "largest_hidden", "parse_size", "format_size"]

#: What the ledger keeps apart: parameters' values (sparse values, dense matrices, biases),
#: the sparse index (CSR and transposed), parameter gradients, optimizer state, what the forward
#: keeps for the backward, transient buffers, and the batch the caller holds (input, targets,
#: a bare module's output).
KINDS = ("weights", "index", "gradients", "optimizer", "activations", "workspace", "batch")
OPTIMIZERS = ("adam", "sgd", "sgd-momentum")
PHASES = ("forward", "backward", "optimizer")
#: The modes of the modules (SparseRNN's nonlinearity is the mode's tail).
MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU", "CTRNN")

#: csrc/cpu/gather.h: spmm / spmm_t read their dense source unpadded below this many entries per
#: source row (kUnpaddedBelow), padded copies of it from there on
_UNPADDED_BELOW = 192
#: the CUDA caching allocator's rounding of every block
_CUDA_BLOCK = 512


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


def _weight_nnz(w):
    """A matrix's nonzeros (SparseWeight) or None (a dense Parameter)."""
    return w.nnz if hasattr(w, "nnz") else None


def sizes_of(module, **overrides) -> RecurrentSizes:
    """:class:`RecurrentSizes` of a built module: a SparseRNN/LSTM/GRU, a SparseCTRNN, or a
    ``SequenceModel`` (any module with ``rnn`` and ``readout`` children, read as the command
    line's model). ``overrides``: fields to replace (``recompute_every``, ``device``, ...)."""
    head = None
    if hasattr(module, "rnn") and hasattr(module, "readout"):
        embed = module.embed
        head = Head(module.readout.out_features, module.readout_mode, module.kind,
                    None if embed is None else embed.num_embeddings)
        module = module.rnn
    mode = getattr(module, "mode", None)
    if mode not in MODES:
        raise TypeError(f"module must be a SparseRNN, SparseLSTM, SparseGRU, SparseCTRNN or SequenceModel, "
                        f"got {type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise ValueError("proj_size is not modelled (a projected LSTM is composed under plain autograd)")
    if mode == "CTRNN":
        names = [("weight_ih", "weight_hh")]
    else:
        names = [(n, n.replace("weight_ih", "weight_hh")) for n in module._flat_weights_names
                 if n.startswith("weight_ih")]
    ws = [(getattr(module, a), getattr(module, b)) for a, b in names]
    first = ws[0][0]
    ref = first.values if hasattr(first, "nnz") else first
    sizes = RecurrentSizes(
        mode, module.input_size, module.hidden_size, tuple(_weight_nnz(a) for a, _ in ws),
        tuple(_weight_nnz(b) for _, b in ws), layers=getattr(module, "num_layers", 1),
        bidirectional=getattr(module, "bidirectional", False),
        bias=bool(module.bias) if mode != "CTRNN" else module.bias is not None,
        dropout=getattr(module, "dropout", 0.0), unfolds=getattr(module, "unfolds", 1), fused=module.fused,
        compute="sparse" if mode == "CTRNN" else module.compute,
        recompute_every=getattr(module, "recompute_every", None), head=head, dtype=ref.dtype,
        device=ref.device.type)
    return replace(sizes, **overrides)


# ----------------------------------------------------------------------------------- the ledger
@dataclass(frozen=True)
class MemoryBreakdown:
    """Predicted bytes of one training step at its peak, by kind (:data:`KINDS`; they add up to
    ``peak``), the phase it is in (``forward``: the forward's end, ``backward``, ``optimizer``:
    the optimizer step), each phase's own peak, the recompute interval it was predicted for and
    which layer-directions take the stacked products (``stacked``, :data:`..recurrence.STACK_BYTES`)."""
    weights: int
    index: int
    gradients: int
    optimizer: int
    activations: int
    workspace: int
    batch: int
    peak: int
    phase: str
    phases: dict = field(default_factory=dict)
    recompute_every: int | None = None
    stacked: tuple = ()

    def rows(self) -> list[tuple[str, int]]:
        """(kind, bytes) at the peak, then the total: the table the command line prints."""
        return [(kind, getattr(self, kind)) for kind in KINDS] + [(f"peak ({self.phase})", self.peak)]


class _Ledger:
    """Live bytes by kind and name; its high-water mark, with the kinds at that moment, per phase."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.live: dict[str, tuple[str, int]] = {}
        self.by_kind = dict.fromkeys(KINDS, 0)
        self.phase = "forward"
        self.phases = dict.fromkeys(PHASES, 0)
        self.top = (-1, "forward", {})

    def size(self, nbytes: int) -> int:
        nbytes = int(nbytes)
        return -(-nbytes // _CUDA_BLOCK) * _CUDA_BLOCK if self.cuda else nbytes

    def alloc(self, name: str, kind: str, nbytes: int) -> None:
        """A new tensor ``name`` of ``nbytes`` (0: none)."""
        if nbytes <= 0:
            return
        if name in self.live:
            raise AssertionError(f"ledger: {name} allocated twice")
        n = self.size(nbytes)
        self.live[name] = (kind, n)
        self.by_kind[kind] += n
        total = sum(self.by_kind.values())
        self.phases[self.phase] = max(self.phases[self.phase], total)
        if total > self.top[0]:
            self.top = (total, self.phase, dict(self.by_kind))

    def free(self, *names: str) -> None:
        for name in names:
            if name in self.live:
                kind, n = self.live.pop(name)
                self.by_kind[kind] -= n

    def temp(self, name: str, kind: str, *sizes: int) -> None:
        """Buffers that live together for a moment and are freed at once."""
        names = [f"{name}#{i}" for i in range(len(sizes))]
        for n, s in zip(names, sizes):
            self.alloc(n, kind, s)
        self.free(*names)

    def has(self, name: str) -> bool:
        return name in self.live

    def begin(self, phase: str) -> None:
        """The next phase starts with what is live now."""
        self.phase = phase
        self.phases[phase] = max(self.phases[phase], sum(self.by_kind.values()))


# ------------------------------------------------------------------------------- per layer-direction
@dataclass
class _Run:
    """One layer-direction's sizes and choices (a Recurrence call)."""
    name: str
    I: int                 # input features
    H: int
    G: int                 # gate rows (gates * H)
    A: int                 # saved activation rows per step, in units of H (cell_table.SAVED_ACTS)
    nnz_ih: int | None
    nnz_hh: int | None
    T: int
    B: int
    U: int                 # sub-steps per input step (CTRNN)
    e: int                 # bytes per value
    cpu: bool
    fused_fwd: bool
    fused_bwd: bool
    stacked: bool
    need_x: bool           # the input needs a gradient (layers above the first, or an embedding)
    bias: bool
    k: int | None          # recompute_every
    transposed_h0: bool    # h_0 (c_0) reach the Function as transposed views (not the CT-RNN's)

    @property
    def u(self) -> int:
        """One state block, H x B values."""
        return self.H * self.B * self.e

    def stride(self, cols: int) -> int:
        """csrc/cpu/gather.h padded_stride: the batch rounded up to 32 bytes (1 stays 1)."""
        unit = 32 // self.e
        return cols if cols == 1 else -(-cols // unit) * unit

    def copies(self, rows: int, cols: int, strided: bool, padded: bool) -> int:
        """padded_batch's copies of a rows x cols operand (csrc/cpu/gather.h): a contiguous copy of a
        strided one (through torch's transposing copy) and, where ``padded`` and the batch needs it,
        the copy padded to whole 32-byte units; none on CUDA."""
        if not self.cpu:
            return 0
        copy = rows * cols * self.e + _transpose_buffer(True, rows * cols, self.e) if strided else 0
        return copy + (rows * self.stride(cols) * self.e if padded and self.stride(cols) != cols else 0)

    def pad(self, rows: int, cols: int, strided: bool = False) -> int:
        return self.copies(rows, cols, strided, True)

    def source_pad(self, rows: int, cols: int, nnz: int | None, strided: bool = False) -> int:
        """gather_source: spmm / spmm_t pad their dense source (rows x cols) only from
        kUnpaddedBelow entries per source row on (float16/bfloat16 always); a dense weight's
        product is torch's (no copies)."""
        if nnz is None:
            return 0
        return self.copies(rows, cols, strided, not (self.e >= 4 and nnz < _UNPADDED_BELOW * rows))

    def unpadded_sddmm(self) -> bool:
        """sddmm reads float32 unpadded on an AVX2+FMA build (kUnpaddedF32)."""
        return self.e == 4 and _avx2()


def _operand(led: _Ledger, r: _Run, tag: str, rows: int, cols: int, strided: bool, padded: bool) -> None:
    """padded_batch's copies of a kernel's rows x cols operand (csrc/cpu/gather.h): a contiguous copy
    of a strided one (through torch's transposing copy), then, where ``padded`` and the batch needs
    it, the copy padded to whole 32-byte units, which replaces it; left live as ``tag`` (the caller
    frees it). None on CUDA."""
    if not r.cpu:
        return
    if strided:
        led.alloc(tag, "workspace", rows * cols * r.e)
        led.temp(tag + ".tb", "workspace", _transpose_buffer(True, rows * cols, r.e))
    if padded and r.stride(cols) != cols:
        led.alloc(tag + ".p", "workspace", rows * r.stride(cols) * r.e)
        led.free(tag)
        led.live[tag] = led.live.pop(tag + ".p")


def _sddmm(led: _Ledger, r: _Run, tag: str, nnz: int, g_rows: int, x_rows: int, cols: int, *, g_strided: bool = False,
           x_strided: bool = False, keep: str | None = None) -> None:
    """sddmm (csrc/cpu/sddmm_cpu.cpp): its nnz-long output (kept as ``keep``, a gradient, or freed),
    then its copies of G and X."""
    led.alloc(keep or tag, "gradients" if keep else "workspace", nnz * r.e)
    padded = not r.unpadded_sddmm()
    _operand(led, r, tag + ".g", g_rows, cols, g_strided, padded)
    _operand(led, r, tag + ".x", x_rows, cols, x_strided, padded)
    led.free(tag + ".g", tag + ".x", tag)


def _avx2() -> bool:
    """Whether the CPU kernels read float32 unpadded (built with AVX2 and FMA: -march=native on such a CPU)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


# The composed steps' transients at their peak, beyond the outputs a step keeps, in state blocks
# (H x B), read off cell_table's steps: LSTM: mm(W_hh, h) (4) and the new activations (4) at once,
# less the h' and c' not made yet (2); GRU: gh (3) beside the activations (4), h - n and z * (h - n);
# RNN: mm beside the sum; CT-RNN: the Euler update's two terms beside tanh's output and h'.
_FWD_STEP_TEMPS = {"LSTM": 2, "GRU": 4, "RNN_TANH": 1, "RNN_RELU": 1, "CTRNN": 2}
# A composed step backward's transients beside its new gate gradient (dG, and GRU's dgx): LSTM
# tanh(c), dct and the four gate gradients before their cat; GRU dr, dz, dn and dn * r before the
# cats; RNN and CT-RNN two elementwise products.
_BWD_STEP_TEMPS = {"LSTM": 6, "GRU": 4, "RNN_TANH": 2, "RNN_RELU": 2, "CTRNN": 2}


def _forward_step(led: _Ledger, r: _Run, tag: str, keep: list[tuple[str, int]]) -> None:
    """One step at its peak: the tensors it keeps (``keep``: name, bytes) and its transients."""
    for name, n in keep:
        led.alloc(name, "activations", n)
    if r.fused_fwd:
        led.temp(tag + ".hpad", "workspace", r.pad(r.H, r.B))  # padded_batch(h) in rnn_step_cpu.cpp
    else:  # spmm(W_hh, h) pads h when W_hh has kUnpaddedBelow entries per column and more
        led.temp(tag + ".ew", "workspace", max(_FWD_STEP_TEMPS[_mode(r)] * r.u, r.source_pad(r.H, r.B, r.nnz_hh)))


def _mode(r: _Run) -> str:
    return r.name.split(":")[0]


def _run_forward(led: _Ledger, r: _Run, out_name: str, output: bool) -> None:
    """Recurrence.forward of one layer-direction: its output ``out_name`` (Y, T x H x B: always when
    storing, where it holds the states; recomputing, only where ``output``: ``final_state`` makes
    none) and what it keeps for the backward. Stored: every step's c and activations and a CT-RNN's
    sub-step states; recomputed (``recomputes``): the states after every k-th step, the bias sum and,
    stacked, the input part gx."""
    n, T, B, U, u, e = r.name, r.T, r.B, r.U, r.u, r.e
    S, c = T * U, int(_mode(r) == "LSTM")
    if r.bias and _mode(r) not in ("GRU", "CTRNN"):
        led.alloc(n + ".bias", "workspace", r.G * e)  # b_ih + b_hh
    if r.stacked:  # gx = mm(W_ih, _to_cols(x)): the input part of all steps, (G*H, T*B)
        led.alloc(n + ".xcols", "workspace", r.I * T * B * e)
        led.temp(n + ".xpad", "workspace", r.source_pad(r.I, T * B, r.nnz_ih))
        led.alloc(n + ".gx", "activations" if r.k else "workspace", r.G * T * B * e)
        led.free(n + ".xcols")
    if r.k is None or output:
        led.alloc(out_name, "activations", T * u)  # y = h0.new_empty(T, H, B)
    if r.k is None:  # every step's c' and activations so far, in the Function's lists, and the
        # sub-step states (inner), among them the one the last step reads
        led.alloc(n + ".kept", "activations", (c + r.A) * u * (S - 1) + (U - 1) * u * T)
        led.alloc(n + ".h", "workspace", u)  # the state the last step reads (Y has a copy)
    else:  # the states (h, c) after steps k, 2k, ... < S; the step before's h, c and activations,
        # still bound to the loop's variables (not again where they are a kept state)
        led.alloc(n + ".ckpt", "activations", (S - 1) // r.k * (1 + c) * u)
        led.alloc(n + ".h", "workspace", 0 if (S - 1) % r.k == 0 else (1 + c) * u)
        led.alloc(n + ".prev_a", "workspace", r.A * u)
    if not r.stacked:  # _input_part: this step's W_ih x_t (+ bias), (G*H, B)
        led.alloc(n + ".g", "workspace", r.G * B * e)
        led.temp(n + ".gpad", "workspace", r.source_pad(r.I, B, r.nnz_ih))
    keep = [(n + ".hT", u)] + ([(n + ".cT", u)] if c else []) + ([(n + ".a", r.A * u)] if r.A else [])
    _forward_step(led, r, n + ".step", keep)
    led.free(n + ".h", n + ".g", n + ".prev_a")
    if r.k is None:
        led.free(n + ".bias", n + ".gx")  # they die with the forward when every step is kept
    else:
        led.free(n + ".a")  # the last step's activations, dropped when the forward returns


def _run_backward(led: _Ledger, r: _Run, dy: str | None, dx_name: str) -> None:
    """Recurrence.backward of one layer-direction, then the release of what it kept; its
    gradients land as ``gradients`` and its input's gradient as ``dx_name`` (when needed)."""
    n, T, B, U, u, e, G, I = r.name, r.T, r.B, r.U, r.u, r.e, r.G, r.I
    steps = T * U
    c = _mode(r) == "LSTM"
    gru = _mode(r) == "GRU"
    wsize = lambda nnz, cols: (nnz if nnz is not None else G * cols) * e  # noqa: E731
    if steps > 1 and r.nnz_hh is not None:
        led.alloc(n + ".w_hh_t", "workspace", r.nnz_hh * e)  # transposed(w_hh): values in column order
    if r.need_x and not r.stacked and T > 1 and r.nnz_ih is not None:
        led.alloc(n + ".w_ih_t", "workspace", r.nnz_ih * e)
    led.alloc(n + ".dh", "workspace", u)
    if c:
        led.alloc(n + ".dc", "workspace", u)
    if not r.stacked:  # zeros_like accumulators, filled step by step
        if r.need_x:
            led.alloc(dx_name, "workspace", T * I * B * e)
        led.alloc(n + ".dw_ih", "gradients", wsize(r.nnz_ih, I))
        led.alloc(n + ".dw_hh", "gradients", wsize(r.nnz_hh, r.H))
        if r.bias:
            led.alloc(n + ".db_ih", "gradients", G * e)
            led.alloc(n + ".db_hh", "gradients", G * e)
    dgx = 3 * u if gru else 0                  # GRU's input-side gate gradient, apart from dG
    dG_step = G * B * e + dgx
    sums = G * B * e if U > 1 else 0           # a CT-RNN's dG summed per input step (stacked)
    if r.k is not None:  # _recomputed: the segments from the last; the first, [0, k), comes last, with
        # the most beside it: stacked, the gate gradients of the steps after it and the states the
        # other segments made again (states_all keeps each one's but its first, a kept state)
        k, m = r.k, (steps - 1) // r.k
        if r.stacked:
            led.alloc(n + ".dGs", "workspace", (steps - k) * dG_step + (T - -(-k // U)) * sums)
            led.alloc(n + ".states", "activations", (steps - k - m) * u)
        # the segment run again: k - 1 steps' h, c and activations in its dicts, then the last one
        led.alloc(n + ".segment", "activations", (k - 1) * (1 + c + r.A) * u)
        if not r.stacked:
            led.alloc(n + ".seg_g", "workspace", G * B * e)
        _forward_step(led, r, n + ".seg_step", [(n + ".seg_last", (1 + c + r.A) * u)])
        led.free(n + ".seg_g")
        if r.stacked:  # then its backward steps add theirs
            led.alloc(n + ".dGs2", "workspace", (k - 1) * dG_step + (-(-k // U) - 1) * sums)
    if r.stacked and r.k is None:  # every step's gate gradients, kept for one product per weight at
        # the end (the last one is also the one still bound to dG); a CT-RNN's sums beside them
        led.alloc(n + ".dGs", "workspace", (steps - 1) * dG_step + (T - 1) * sums)
    elif not r.stacked:
        led.alloc(n + ".dG", "workspace", dG_step)   # the previous step's, still bound
    led.temp(n + ".dh_dy", "workspace", u if dy else 0)  # dh = dh + dy[t]
    # the step backward: dG (+ GRU's dgx), dh_prev, dc_prev; the fused op's padded dG that W^T dG
    # gathers from and (CPU) GRU's / CT-RNN's ``direct``; a composed step's elementwise temporaries
    new = [G * B * e + dgx, u, u if c else 0]
    # the last step back (s = 0) reads the initial state, a transposed view of h_0 / c_0 (the
    # modules pass h0[k].t()): the fused LSTM and GRU steps copy it contiguous
    first = u + _transpose_buffer(r.cpu, r.H * r.B, e) if r.transposed_h0 else 0
    if r.fused_bwd:
        extra = [u if (r.cpu and _mode(r) in ("GRU", "CTRNN")) else 0, r.pad(G, B),
                 first if _mode(r) in ("LSTM", "GRU") else 0]
    else:
        extra = [max(_BWD_STEP_TEMPS[_mode(r)] * u, r.source_pad(G, B, r.nnz_hh))]
    led.temp(n + ".step", "workspace", *new, *extra)
    if not r.stacked:  # this step's part of each gradient (the new dG is now the bound one)
        if r.nnz_hh is not None:  # sddmm(dG, h_s): a new nnz-long tensor added into d_w_hh (h_0: a view)
            _sddmm(led, r, n + ".sddmm_hh", r.nnz_hh, G, r.H, B, x_strided=r.transposed_h0)
        if r.nnz_ih is not None:
            _sddmm(led, r, n + ".sddmm_ih", r.nnz_ih, G, I, B)
        if r.need_x:  # d_x[t] += W_ih^T dG_x
            led.temp(n + ".mm_t", "workspace", I * B * e, r.source_pad(G, B, r.nnz_ih))
        if r.bias:  # dG.sum(1) (GRU: dG_x.sum(1) too)
            led.temp(n + ".gsum", "workspace", G * e, G * e if gru else 0)
    if r.k is not None:  # the segment's buffers go; stacked, states_all keeps its states but the first
        led.free(n + ".segment", n + ".seg_last")
        if r.stacked:
            led.alloc(n + ".states0", "activations", (r.k - 1) * u)
    if r.stacked:
        _stacked_products(led, r, dx_name)
    led.free(n + ".dG", n + ".dGs", n + ".dGs2", n + ".dh", n + ".dc", n + ".w_hh_t", n + ".w_ih_t",
             n + ".states", n + ".states0", n + ".gcols", n + ".xcols_b", n + ".hcols", n + ".hhcols")
    # the Function's saved tensors are released after its backward (Y: where it saved it)
    led.free(n + ".kept", n + ".hT", n + ".cT", n + ".a", n + ".ckpt", n + ".gx", n + ".bias",
             *((n + ".y",) if r.k is None else ()))


def _stacked_products(led: _Ledger, r: _Run, dx_name: str) -> None:
    """The end of a stacked backward: torch.stack of the gate gradients and states, _to_cols'
    copies, then one product per weight over all T*B columns (recurrence.py, ``if stacked:``)."""
    n, T, B, U, u, e, G, I = r.name, r.T, r.B, r.U, r.u, r.e, r.G, r.I
    steps, TB, gru = T * U, T * B, _mode(r) == "GRU"
    dG_all = steps * G * B * e
    # the last step's dG joins the list: dGs now holds all of them; a CT-RNN's input steps hold the
    # sums of their sub-steps' dG (dgx_t[t] + dG_x: new tensors)
    led.free(n + ".dG", n + ".dGs", n + ".dGs2")
    led.alloc(n + ".dGs", "workspace", dG_all + (steps * 3 * u if gru else 0) + (T * G * B * e if U > 1 else 0))
    # _to_cols: (S, R, B) -> (R, S*B), a copy; with B = 1 a transposed view of the stack, which the
    # kernels then copy contiguous themselves
    view = B == 1

    def to_cols(name: str, nbytes: int) -> None:
        led.alloc(n + ".stack", "workspace", nbytes)
        if view:
            led.live[name] = led.live.pop(n + ".stack")
        else:
            led.alloc(name, "workspace", nbytes)
            led.free(n + ".stack")

    to_cols(n + ".gcols", T * G * B * e)          # g_ih = _to_cols(torch.stack(dgx_t))
    led.alloc(n + ".xcols_b", "workspace", I * TB * e if not view else 0)  # x_ih = _to_cols(x)
    to_cols(n + ".hcols", dG_all)                  # g_hh = _to_cols(torch.stack(dgh_s))
    to_cols(n + ".hhcols", steps * u)              # x_hh = _to_cols(torch.stack(states))
    if r.need_x:  # mm_t(W_ih, g_ih) (I x T*B), then its step-major copy: d_x
        extra = 0 if r.nnz_ih is None else _spmm_t_extra(r, G, I, TB, view)
        led.alloc(n + ".dxcols", "workspace", I * TB * e + extra)
        led.alloc(dx_name, "workspace", T * I * B * e)
        led.free(n + ".dxcols")
    # d_w_ih = g_ih x_ih^T and d_w_hh = g_hh x_hh^T: dense products, or sddmm's output beside its copies
    for w, nnz, rows, cols in (("ih", r.nnz_ih, I, TB), ("hh", r.nnz_hh, r.H, steps * B)):
        if nnz is None:
            led.alloc(f"{n}.dw_{w}", "gradients", G * rows * e)
        else:
            _sddmm(led, r, f"{n}.sddmm_{w}", nnz, G, rows, cols, g_strided=view, x_strided=view, keep=f"{n}.dw_{w}")
    if r.bias:
        led.alloc(n + ".db_ih", "gradients", G * e)
        led.alloc(n + ".db_hh", "gradients", G * e)


def _spmm_t_extra(r: _Run, rows: int, cols: int, B: int, strided: bool = False) -> int:
    """spmm_t's transients without values_t (csrc/cpu/spmm_cpu.cpp): the scatter path's padded
    source and accumulators, or the gather path's padded source."""
    if not r.cpu:
        return 0
    nnz, stride, e = r.nnz_ih, r.stride(B), r.e
    acc = 4 if e < 4 else e
    values_bytes = nnz * e
    parts = 1
    if (nnz + rows) * stride >= 2**19:  # scatter_parts, with the passive-wait parallel bound
        parts = max(1, min(8, nnz // max(4 * cols, 1), rows))
    acc_bytes = parts * cols * stride * acc
    scatter = acc_bytes <= 64 * 2**20 and (B == 1 or (values_bytes >= 4 * 2**20 and acc_bytes <= 2 * values_bytes))
    if scatter:
        in_place = parts == 1 and e >= 4 and stride == B
        return r.pad(rows, B, strided) + (0 if in_place else acc_bytes)
    return r.source_pad(rows, B, nnz, strided)


# -------------------------------------------------------------------------------------- the step
def _runs(s: RecurrentSizes, T: int, B: int, k: int | None) -> list[_Run]:
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
            fused = (s.fused and nnz_hh is not None and s.dtype in FUSED_DTYPES
                     and (has_fused_kernels(s.device) or s.device == "cuda"))
            fwd = bwd = fused
            if fused and cpu:
                fwd = choose_fused(s.mode, H, nnz_hh, B)
            runs.append(_Run(f"{s.mode}:{layer}.{d}", s.input_size if layer == 0 else D * H, H, GATES[s.mode] * H,
                             SAVED_ACTS[s.mode], nnz_ih, nnz_hh, T, B, s.unfolds, e, cpu, fwd, bwd,
                             stacks(cfg, cell, ref), layer > 0 or (s.head is not None and s.head.vocab is not None),
                             s.bias, k if k and k < T * s.unfolds else None, s.mode != "CTRNN"))
    return runs


def _param_bytes(s: RecurrentSizes, e: int) -> list[int]:
    """Bytes of each parameter tensor in ``model.parameters()`` order (the optimizer's): a module's
    own Parameters first (dense matrices and biases, layer by layer), then its children's
    (each SparseWeight's values); a SequenceModel's embedding, recurrent module, readout."""
    H, D, G = s.hidden, s.directions, s.gates * s.hidden
    own, children = [], []
    for i, (nnz_ih, nnz_hh) in enumerate(zip(s.nnz_ih, s.nnz_hh)):
        cols = s.input_size if i < D else D * H
        for nnz, c in ((nnz_ih, cols), (nnz_hh, H)):
            (own.append(G * c * e) if nnz is None else children.append(nnz * e))
        if s.bias:
            own += [G * e] if s.mode == "CTRNN" else [G * e, G * e]
    if s.mode == "CTRNN":  # SparseCTRNNCell registers weight_ih, weight_hh, then the bias
        own, children = [], [(n if n is not None else G * c) * e for n, c in
                              ((s.nnz_ih[0], s.input_size), (s.nnz_hh[0], H))]
        children = [c for c, n in zip(children, (s.nnz_ih[0], s.nnz_hh[0])) if n is not None]
        dense = [(G * c) * e for n, c in ((s.nnz_ih[0], s.input_size), (s.nnz_hh[0], H)) if n is None]
        own = dense + ([G * e] if s.bias else [])
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


def _check_args(s, T, B, optimizer, k):
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
    if s.mode != "CTRNN" and k is None and dense_by_sizes(s.compute, entries, nnz, itemsize, s.hidden, s.device):
        raise ValueError("this module computes on the dense path (compute='auto' takes it for small, dense enough "
                         "layers: docs/compute_paths.md), whose memory is torch's recurrence's; the model covers the "
                         "sparse path: build it with compute='sparse' (or sizes with compute='sparse')")


_UNSET = object()


def predict(model, steps: int, batch: int, optimizer: str = "adam", *, recompute_every=_UNSET,
            **overrides) -> MemoryBreakdown:
    """The predicted peak memory of one training step of ``model`` (a module, see :func:`sizes_of`,
    or :class:`RecurrentSizes`) on ``batch`` sequences of ``steps`` steps with ``optimizer``
    (:data:`OPTIMIZERS`). ``recompute_every``: the interval to predict for (default: the model's);
    ``overrides``: other :class:`RecurrentSizes` fields (``dtype``, ``device``, ...). Reads sizes only."""
    s = model if isinstance(model, RecurrentSizes) else sizes_of(model)
    if recompute_every is not _UNSET:
        overrides["recompute_every"] = recompute_every
    if overrides:
        s = replace(s, **overrides)
    k = s.recompute_every
    _check_args(s, steps, batch, optimizer, k)
    T, B, H, D = steps, batch, s.hidden, s.directions
    e = torch.empty(0, dtype=s.dtype).element_size()
    led = _Ledger(s.device)
    params = _param_bytes(s, e)
    # what lives from step to step: values and dense parameters, the index, the optimizer state
    led.alloc("params", "weights", sum(params))
    led.alloc("index", "index", _index_bytes(s))
    states = {"adam": 2, "sgd": 0, "sgd-momentum": 1}[optimizer]
    led.alloc("opt_state", "optimizer", states * sum(params) + (4 * len(params) if optimizer == "adam" else 0))
    runs = _runs(s, T, B, k)
    head = s.head
    # ------------------------------------------------------------------ forward
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
            _run_forward(led, r, y, output)
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
        led.temp("transpose", "workspace", _transpose_buffer(s.device == "cpu", B * D * H, e))
        if D == 2 or rec:
            led.free(top_out)  # nobody keeps the top layer's step-major output
    if head is None:
        led.free("h_n", "c_n")  # the caller keeps the output, not the final states
    _head_forward(led, s, T, B, e)
    # ------------------------------------------------------------------ backward
    led.begin("backward")
    dy = _head_backward(led, s, T, B, e)
    if rec:
        led.free(top_out)  # the readout of every step kept the top layer's Y; its run did not
    for layer in range(s.layers - 1, -1, -1):
        dx = f"dx{layer}"
        for d in range(D - 1, -1, -1):
            part = dx if d == D - 1 else dx + ".other"
            _run_backward(led, runs[layer * D + d], dy, part)
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
    # ------------------------------------------------------------------ optimizer
    led.begin("optimizer")
    _optimizer_step(led, optimizer, params, s.device)
    total, phase, kinds = led.top
    return MemoryBreakdown(**kinds, peak=total, phase=phase, phases=dict(led.phases), recompute_every=k,
                           stacked=tuple(r.stacked for r in runs))


def _head_forward(led: _Ledger, s: RecurrentSizes, T: int, B: int, e: int) -> None:
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


def _head_backward(led: _Ledger, s: RecurrentSizes, T: int, B: int, e: int) -> str | None:
    """The gradient that reaches the top layer's output: the name of one (T, D*H, B) tensor, or
    None where only h_T is read (SequenceModel's readout of the last step)."""
    head, H, D = s.head, s.hidden, s.directions
    if head is None:  # _BatchRows.backward: out.sum()'s gradient made contiguous, then transposed per step
        led.alloc("out_grad", "workspace", T * B * D * H * e)
        led.alloc("dy", "workspace", T * D * H * B * e)
        led.temp("transpose", "workspace", _transpose_buffer(s.device == "cpu", B * D * H, e))
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
        led.temp("transpose", "workspace", _transpose_buffer(s.device == "cpu", B * H, e))
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


def _transpose_buffer(cpu: bool, n: int, e: int) -> int:
    """The block buffer of torch's CPU copy_ of a transposed matrix of ``n`` elements (measured: 60 x 60)."""
    return 3600 * e if cpu and n >= 3600 else 0


def _optimizer_step(led: _Ledger, optimizer: str, params: list[int], device: str) -> None:
    """torch.optim's step on the CPU (one tensor at a time) or CUDA (foreach, all at once)."""
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


# ------------------------------------------------------------------------------- budgets
class MemoryBudgetError(ValueError):
    """A step does not fit the budget even with recomputation; ``minimum`` is the smallest
    predicted peak and ``recompute_every`` the interval that gives it."""

    def __init__(self, message: str, minimum: int, recompute_every: int | None):
        super().__init__(message)
        self.minimum, self.recompute_every = minimum, recompute_every


def _intervals(T: int) -> list[int]:
    """The recompute intervals tried: every k up to 2,048 steps, a geometric ladder beyond."""
    ks = set(range(1, min(T, 2048) + 1))
    k = 2048
    while k < T:
        k = int(k * 1.05) + 1
        ks.add(min(k, T))
    return sorted(ks)


def recompute_for_budget(model, steps: int, batch: int, budget: int, optimizer: str = "adam",
                         **overrides) -> tuple[int | None, MemoryBreakdown]:
    """(recompute_every, its breakdown) for a step within ``budget`` bytes: None (store every
    step) where that fits, else the interval with the smallest predicted peak (each costs one
    more forward whatever k is, so the least memory wins; the largest such k on a tie).
    :class:`MemoryBudgetError` when no interval fits, naming the smallest peak possible."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a number of bytes >= 1, got {budget!r}")
    stored = predict(model, steps, batch, optimizer, recompute_every=None, **overrides)
    if stored.peak <= budget:
        return None, stored
    best = None
    for k in _intervals(steps):
        got = predict(model, steps, batch, optimizer, recompute_every=k, **overrides)
        if best is None or got.peak <= best[1].peak:
            best = (k, got)
    k, got = best
    if got.peak > budget:
        raise MemoryBudgetError(
            f"does not fit even with recomputation: a step needs at least {format_size(got.peak)} "
            f"(recompute_every={k}; {format_size(stored.peak)} storing every step), the budget is "
            f"{format_size(budget)}", got.peak, k)
    return k, got


def largest_hidden(build, steps: int, batch: int, budget: int, optimizer: str = "adam", *, low: int = 1,
                   high: int = 2**31 - 1) -> tuple[int, MemoryBreakdown] | None:
    """The largest hidden size whose step fits ``budget`` bytes, and its breakdown, or None if
    not even ``low`` fits: ``build(hidden)`` gives the :class:`RecurrentSizes` of each size tried
    (the peak grows with the hidden size; bisection over it)."""
    first = predict(build(low), steps, batch, optimizer)
    if first.peak > budget:
        return None
    best = (low, first)
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = predict(build(mid), steps, batch, optimizer)
        if got.peak <= budget:
            lo, best = mid, (mid, got)
        else:
            hi = mid - 1
    return best


# --------------------------------------------------------------------------- sizes as text
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``16G``, ``512M``, ``1.5T`` or ``1000000`` (binary units, an optional
    trailing ``B`` or ``iB``). ValueError saying what was expected."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    number = t[:-1] if unit else t
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a size such as 16G, 512M or 1000000 (bytes), got {text!r}")
    return int(value * _UNITS[unit])


def format_size(nbytes: int) -> str:
    """``nbytes`` in binary units, three significant digits: ``1.23 GiB``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"
