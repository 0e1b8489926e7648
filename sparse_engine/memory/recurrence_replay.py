"""The memory model's replay of one ``Recurrence`` call (a layer-direction over a sequence,
:mod:`sparse_engine.recurrent.sequence`): what its forward allocates and keeps, what its backward
allocates, in the order it does, into a :class:`Ledger` of live bytes by kind. The whole step
(the stack of layers, the head, the optimizer) is :mod:`.memory_step`; the public API :mod:`.memory`.

Each function follows the code it stands for line by line and names it; the CPU kernels'
temporaries are their contiguous and padded copies of dense operands (``csrc/cpu/gather.h``,
``padded_batch``), the fused steps' outputs (``csrc/cpu/rnn_step_cpu.cpp``) and torch's transposing
copy's block buffer. A loop is replayed as its last iteration with the ones before it in bulk: its
allocations are the same in every iteration and what it keeps only grows, so it peaks there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.constants import UNPADDED_BELOW
from ..recurrent.products import UNTRANSPOSE_CHUNK
from ..recurrent.recompute import last_start

#: What the ledger keeps apart: parameters' values (sparse values, dense matrices, biases),
#: the sparse index (CSR and transposed), parameter gradients, optimizer state, what the forward
#: keeps for the backward, transient buffers, and the batch the caller holds (input, targets,
#: a bare module's output).
KINDS = ("weights", "index", "gradients", "optimizer", "activations", "workspace", "batch")
PHASES = ("forward", "backward", "optimizer")

#: the CUDA caching allocator's rounding of every block
_CUDA_BLOCK = 512


class Ledger:
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
class Run:
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
    persistent: bool = False  # the whole sequence in one op each way (recurrent/persistent.py)
    es: int = 0            # bytes per value of the kept c's and activations (saved_dtype; 0: e)

    @property
    def narrow(self) -> bool:
        """A stored run keeps its c's and activations narrower than its values (saved_dtype)."""
        return self.es not in (0, self.e) and self.k is None

    @property
    def us(self) -> int:
        """One kept c or activation block, H x B values of saved_dtype."""
        return self.H * self.B * (self.es if self.narrow else self.e)

    @property
    def u(self) -> int:
        """One state block, H x B values."""
        return self.H * self.B * self.e

    def stride(self, cols: int) -> int:
        """csrc/cpu/gather.h padded_stride: the batch rounded up to 32 bytes, 16 for a 2-byte dtype
        (1 stays 1)."""
        unit = 8 if self.e == 2 else 32 // self.e
        return cols if cols == 1 else -(-cols // unit) * unit

    def copies(self, rows: int, cols: int, strided: bool, padded: bool) -> int:
        """padded_batch's copies of a rows x cols operand (csrc/cpu/gather.h): a contiguous copy of a
        strided one (through torch's transposing copy) and, where ``padded`` and the batch needs it,
        the copy padded to whole units (stride); none on CUDA."""
        if not self.cpu:
            return 0
        copy = rows * cols * self.e + transpose_buffer(True, rows * cols, self.e) if strided else 0
        return copy + (rows * self.stride(cols) * self.e if padded and self.stride(cols) != cols else 0)

    def pad(self, rows: int, cols: int, strided: bool = False) -> int:
        return self.copies(rows, cols, strided, True)

    def source_pad(self, rows: int, cols: int, nnz: int | None, strided: bool = False) -> int:
        """gather_source: spmm / spmm_t pad their dense source (rows x cols) only from
        kUnpaddedBelow entries per source row on (float16/bfloat16 always); a dense weight's
        product is torch's (no copies)."""
        if nnz is None:
            return 0
        return self.copies(rows, cols, strided, not (self.e >= 4 and nnz < UNPADDED_BELOW * rows))

    def unpadded_sddmm(self) -> bool:
        """sddmm reads float32 unpadded on an AVX2+FMA build (kUnpaddedF32)."""
        return self.e == 4 and _avx2()


def _operand(led: Ledger, r: Run, tag: str, rows: int, cols: int, strided: bool, padded: bool) -> None:
    """padded_batch's copies of a kernel's rows x cols operand (csrc/cpu/gather.h): a contiguous copy
    of a strided one (through torch's transposing copy), then, where ``padded`` and the batch needs
    it, the copy padded to whole units (Run.stride), which replaces it; left live as ``tag`` (the caller
    frees it). None on CUDA."""
    if not r.cpu:
        return
    if strided:
        led.alloc(tag, "workspace", rows * cols * r.e)
        led.temp(tag + ".tb", "workspace", transpose_buffer(True, rows * cols, r.e))
    if padded and r.stride(cols) != cols:
        led.alloc(tag + ".p", "workspace", rows * r.stride(cols) * r.e)
        led.free(tag)
        led.live[tag] = led.live.pop(tag + ".p")


def _sddmm(led: Ledger, r: Run, tag: str, nnz: int, g_rows: int, x_rows: int, cols: int, *, g_strided: bool = False,
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


def _forward_step(led: Ledger, r: Run, tag: str, keep: list[tuple[str, int]]) -> None:
    """One step at its peak: the tensors it keeps (``keep``: name, bytes) and its transients."""
    for name, n in keep:
        led.alloc(name, "activations", n)
    if r.fused_fwd:
        led.temp(tag + ".hpad", "workspace", r.pad(r.H, r.B))  # padded_batch(h) in rnn_step_cpu.cpp
    else:  # spmm(W_hh, h) pads h when W_hh has kUnpaddedBelow entries per column and more
        led.temp(tag + ".ew", "workspace", max(_FWD_STEP_TEMPS[mode_of(r)] * r.u, r.source_pad(r.H, r.B, r.nnz_hh)))


def mode_of(r: Run) -> str:
    """The run's cell mode (its name's head)."""
    return r.name.split(":")[0]


def run_forward(led: Ledger, r: Run, out_name: str, output: bool) -> None:
    """Recurrence.forward of one layer-direction: its output ``out_name`` (Y, T x H x B: always when
    storing, where it holds the states; recomputing, only where ``output``: ``final_state`` makes
    none) and what it keeps for the backward. Stored: every step's c and activations and a CT-RNN's
    sub-step states; recomputed (``recomputes``): the states after every k-th step, the bias sum and,
    stacked, the input part gx."""
    n, T, B, U, u, e = r.name, r.T, r.B, r.U, r.u, r.e
    S, c = T * U, int(mode_of(r) == "LSTM")
    if r.bias and mode_of(r) not in ("GRU", "CTRNN"):
        led.alloc(n + ".bias", "workspace", r.G * e)  # b_ih + b_hh
    if r.stacked or r.persistent:  # gx = mm(W_ih, _to_cols(x)): the input part of all steps, (G*H, T*B)
        led.alloc(n + ".xcols", "workspace", r.I * T * B * e)
        led.temp(n + ".xpad", "workspace", r.source_pad(r.I, T * B, r.nnz_ih))
        led.alloc(n + ".gx", "activations" if r.k else "workspace", r.G * T * B * e)
        led.free(n + ".xcols")
    if r.persistent:
        _persistent_forward(led, r, out_name)
        return
    if r.k is None or output:
        led.alloc(out_name, "activations", T * u)  # y = h0.new_empty(T, H, B)
    if r.k is None:  # every step's c' and activations so far, in the Function's lists, and the
        # sub-step states (inner), among them the one the last step reads
        led.alloc(n + ".kept", "activations", (c + r.A) * r.us * (S - 1) + (U - 1) * u * T)
        led.alloc(n + ".h", "workspace", u)  # the state the last step reads (Y has a copy)
    else:  # the states (h, c) after steps k, 2k, ... < S; the last segment's L steps (h, c and
        # activations: the step before's among them, kept for the backward, the last one's as keep
        # below); the step before's activations, still bound to the loop's variables, where L = 1
        L = S - last_start(S, r.k)
        led.alloc(n + ".ckpt", "activations", (S - 1) // r.k * (1 + c) * u)
        led.alloc(n + ".last_segment", "activations", (L - 1) * (1 + c + r.A) * u)
        led.alloc(n + ".prev_a", "workspace", r.A * u if L == 1 else 0)
    if not r.stacked:  # _input_part: this step's W_ih x_t (+ bias), (G*H, B)
        led.alloc(n + ".g", "workspace", r.G * B * e)
        led.temp(n + ".gpad", "workspace", r.source_pad(r.I, B, r.nnz_ih))
    keep = [(n + ".hT", u)] + ([(n + ".cT", u)] if c else []) + ([(n + ".a", r.A * u)] if r.A else [])
    if r.narrow:  # the step before's c and activations, in the values' dtype, still bound to the
        # loop's variables while this step runs (the lists keep narrower copies)
        led.alloc(n + ".prev", "workspace", (c + r.A) * u)
    _forward_step(led, r, n + ".step", keep)
    if r.narrow:  # then this step's copied narrower beside it (_kept); its activations' own tensor
        # stays bound to the loop's variable until the forward returns
        led.free(n + ".prev")
        led.alloc(n + ".kept_last", "activations", (c + r.A) * r.us)
    led.free(n + ".h", n + ".g", n + ".prev_a")
    if r.k is None:
        led.free(n + ".bias", n + ".gx")  # they die with the forward when every step is kept


def _persistent_forward(led: Ledger, r: Run, out_name: str) -> None:
    """persistent.forward (after the input part): the sequence op's Y (``out_name``), LSTM's c's and
    the saved activations, T steps of each, kept; on the CPU each step's outputs and padded state
    beside them (rnn_sequence_cpu.cpp copies them in); h_T and c_T as copies."""
    n, T, u = r.name, r.T, r.u
    c = int(mode_of(r) == "LSTM")
    led.alloc(out_name, "activations", T * u)
    led.alloc(n + ".kept", "activations", (c + r.A) * T * u)
    if r.cpu:
        led.temp(n + ".step", "workspace", (1 + c + r.A) * u, r.pad(r.H, r.B))
    led.alloc(n + ".hT", "activations", u)
    led.alloc(n + ".cT", "activations", c * u)
    led.free(n + ".bias", n + ".gx")


def _persistent_backward(led: Ledger, r: Run, dy: str | None, dx_name: str) -> None:
    """persistent.backward, then Recurrence._stacked_grads: the sequence op's dG (and GRU's dgx) for
    all steps, on the CPU beside each step's outputs; the states W_hh multiplied as columns (a cat,
    then its (H, T*B) copy: a strided view at B = 1); then one product per weight over all T*B
    columns, as the stacked run's end."""
    n, T, B, u, e, G, I = r.name, r.T, r.B, r.u, r.e, r.G, r.I
    lstm, gru, view = mode_of(r) == "LSTM", mode_of(r) == "GRU", B == 1
    led.alloc(n + ".dh", "workspace", u)
    if lstm:
        led.alloc(n + ".dc", "workspace", u)
    if T > 1:
        led.alloc(n + ".w_hh_t", "workspace", r.nnz_hh * e)  # transposed(w_hh): values in column order
    led.alloc(n + ".dGs", "workspace", G * T * B * e + (3 * T * u if gru else 0))
    if r.cpu:  # a step: dh + dy[t], its dG (GRU's dgx), dh_prev, dc_prev and the fused op's transients
        first = u + transpose_buffer(True, r.H * r.B, e) if r.transposed_h0 and (lstm or gru) else 0
        led.temp(n + ".step", "workspace", u if dy else 0, G * B * e + (3 * u if gru else 0), u, u if lstm else 0,
                 u if gru else 0, r.source_pad(G, B, r.nnz_hh), first)
    led.free(n + ".w_hh_t")  # an argument of the op's call only
    # torch.cat(before), then its (H, T*B) copy beside it (B = 1: a view of the cat)
    led.alloc(n + ".hhcols", "workspace", T * u)
    led.temp(n + ".cat", "workspace", 0 if view else T * u)
    TB = T * B
    led.alloc(n + ".xcols_b", "workspace", I * TB * e if not view else 0)  # x_ih = _to_cols(x)
    if r.need_x:  # mm_t(W_ih, g_ih) (I x T*B), then its step-major copy: d_x
        extra = 0 if r.nnz_ih is None else _spmm_t_extra(r, G, I, TB)
        led.alloc(n + ".dxcols", "workspace", I * TB * e + extra)
        led.alloc(dx_name, "workspace", T * I * B * e)
        led.free(n + ".dxcols")
    for w, nnz, rows in (("ih", r.nnz_ih, I), ("hh", r.nnz_hh, r.H)):
        if nnz is None:
            led.alloc(f"{n}.dw_{w}", "gradients", G * rows * e)
        else:
            _sddmm(led, r, f"{n}.sddmm_{w}", nnz, G, rows, TB, x_strided=view, keep=f"{n}.dw_{w}")
    if r.bias:
        led.alloc(n + ".db_ih", "gradients", G * e)
        led.alloc(n + ".db_hh", "gradients", G * e)
    led.free(n + ".dGs", n + ".dh", n + ".dc", n + ".hhcols", n + ".xcols_b")
    led.free(n + ".kept", n + ".hT", n + ".cT", n + ".y")


def run_backward(led: Ledger, r: Run, dy: str | None, dx_name: str) -> None:
    """Recurrence.backward of one layer-direction, then the release of what it kept; its
    gradients land as ``gradients`` and its input's gradient as ``dx_name`` (when needed)."""
    if r.persistent:
        _persistent_backward(led, r, dy, dx_name)
        return
    n, T, B, U, u, e, G, I = r.name, r.T, r.B, r.U, r.u, r.e, r.G, r.I
    steps = T * U
    c = mode_of(r) == "LSTM"
    gru = mode_of(r) == "GRU"
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
        # the last segment's backward reads what the forward kept of it; then it goes, before the
        # others are made again (none larger: the generic segment below)
        led.free(n + ".last_segment", n + ".a")
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
    # (per step, the previous step's dG is dropped before the next is made)
    led.temp(n + ".dh_dy", "workspace", u if dy else 0)  # dh = dh + dy[t]
    # the step backward: dG (+ GRU's dgx), dh_prev, dc_prev; the fused op's padded dG that W^T dG
    # gathers from (as spmm_t's source: padded from kUnpaddedBelow entries per row of dG on) and
    # (CPU) GRU's / CT-RNN's ``direct``; a composed step's elementwise temporaries
    new = [G * B * e + dgx, u, u if c else 0]
    # the last step back (s = 0) reads the initial state, a transposed view of h_0 / c_0 (the
    # modules pass h0[k].t()): the fused LSTM and GRU steps copy it contiguous
    first = u + transpose_buffer(r.cpu, r.H * r.B, e) if r.transposed_h0 else 0
    # a fused step backward adds W_hh's gradient itself (no sddmm), reading h_s contiguous: at
    # s = 0 a copy of h_0's transposed view
    fused_wgrad = r.fused_bwd and not r.stacked and r.nnz_hh is not None
    if r.fused_bwd:
        extra = [u if (r.cpu and mode_of(r) in ("GRU", "CTRNN")) else 0, r.source_pad(G, B, r.nnz_hh),
                 first if mode_of(r) in ("LSTM", "GRU") else 0, first if fused_wgrad else 0]
    else:
        extra = [max(_BWD_STEP_TEMPS[mode_of(r)] * u, r.source_pad(G, B, r.nnz_hh))]
    # a narrower stored run's step reads its c's and activations back in the values' dtype: copies
    # (the first step's c_prev is c_0 itself)
    widened = ((r.A + 2 * c) * u if steps > 1 else (r.A + c) * u) if r.narrow else 0
    led.temp(n + ".step", "workspace", *new, *extra, widened)
    if not r.stacked:  # this step's part of each gradient (the new dG is now the bound one)
        if r.nnz_hh is not None and not fused_wgrad:  # sddmm(dG, h_s): a new nnz-long tensor added into d_w_hh
            _sddmm(led, r, n + ".sddmm_hh", r.nnz_hh, G, r.H, B, x_strided=r.transposed_h0)
        # (a fused step adds W_hh's gradient in place: the CPU in its W^T dG pass, CUDA by an
        # accumulating sddmm on the transposed index; no nnz-long temporaries)
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
    if fused_wgrad:  # values_t goes, then d_w_hh in the CSR's order: a copy beside the accumulator
        led.free(n + ".w_hh_t")
        # (written in chunks: torch's indexed write copies each chunk's int32 positions to int64)
        led.temp(n + ".untransposed", "gradients", r.nnz_hh * e, min(r.nnz_hh, UNTRANSPOSE_CHUNK) * 8)
    led.free(n + ".dG", n + ".dGs", n + ".dGs2", n + ".dh", n + ".dc", n + ".w_hh_t", n + ".w_ih_t",
             n + ".states", n + ".states0", n + ".gcols", n + ".xcols_b", n + ".hcols", n + ".hhcols")
    # the Function's saved tensors are released after its backward (Y: where it saved it)
    led.free(n + ".kept", n + ".kept_last", n + ".hT", n + ".cT", n + ".a", n + ".ckpt", n + ".gx", n + ".bias",
             *((n + ".y",) if r.k is None else ()))


def _stacked_products(led: Ledger, r: Run, dx_name: str) -> None:
    """The end of a stacked backward: torch.stack of the gate gradients and states, _to_cols'
    copies, then one product per weight over all T*B columns (recurrence.py, ``if stacked:``)."""
    n, T, B, U, u, e, G, I = r.name, r.T, r.B, r.U, r.u, r.e, r.G, r.I
    steps, TB, gru = T * U, T * B, mode_of(r) == "GRU"
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


def _spmm_t_extra(r: Run, rows: int, cols: int, B: int, strided: bool = False) -> int:
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


def transpose_buffer(cpu: bool, n: int, e: int) -> int:
    """The block buffer of torch's CPU copy_ of a transposed matrix of ``n`` elements (measured: 60 x 60)."""
    return 3600 * e if cpu and n >= 3600 else 0
