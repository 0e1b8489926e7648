"""``train``'s estimated step time, printed in its plan line before it builds anything (issue 46):
the run's products timed on this device at its sizes, then scaled to its rows.

Each matrix of the recurrence (per layer-direction: W_ih, W_hh) has its products timed on blocks
of it with its real nonzeros per row and per column (2^18 nonzeros on a CPU, 2^22 on a GPU, where
a smaller product is bound by its launch): W_hh's of B columns (per time step: forward, and in the
backward its transposed product and its weight gradient: spmm, spmm_t, sddmm; a dense matrix the
three matmuls), W_ih's over all T*B columns at once (timed on as many as keep the operands under
256 MiB, scaled to T*B). W X and the weight gradient run on blocks of rows with all the columns,
W^T G (given the values in column order, as the recurrence gives them) on blocks of columns with
all the rows, so that each product's output and the operand it gathers from are as in the run; a
sparse product is timed at two block sizes (one and four times the nonzeros) and taken to the
whole matrix on the line through the two (a cost per call, and one per row or column), a dense
block scaled by its share of the rows. Until 2026-11-27 all three ran on one block of rows, scaled
by rows / block: W^T G then wrote every column's output once per block, an estimate growing with
the square of the units (1.7-5.0x the measured step on an H200, benchmarks/results/caps_cuda.md).

The rest of the recurrence (the gates' elementwise work, the state's copies) is what training steps
of the same module at two sizes take beyond their products, on the line through the two (a fixed
cost per step, one per unit) taken to the run's units (a smaller module: timed at its size): 4,096
and 16,384 units on a CPU; 65,536 and 262,144 on a GPU, where a step of 16,384 units is bound by
its launches: the difference of two such steps is mostly noise, multiplied by a hundred on the way
to millions of units. The small module runs as many time steps as keep its stored activations
under 512 MiB, scaled to the run's. A recomputed run (``recompute_every``) runs the steps before its
last segment once more; the optimizer's update is timed on up to 2^22 values and scaled to the
parameters. Not counted: the head and loss, the data. It is an estimate, and says so: timed once,
on a machine whose load varies (benchmarks/bench_caps.py sets it beside the measured step).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .. import ops
from ..memory import RecurrentSizes, sizes_of
from ..nn.weights import _SPARSE_CHOICES
from ..recurrent.recompute import last_start
from ..sparse import SparseWeight

#: nonzeros of a timed block: enough that the product is bound by memory, not its launch
_BLOCK_NNZ = {"cpu": 2 ** 18, "cuda": 2 ** 22}
_OPERAND_BYTES = 2 ** 28  # a wide product's operands, at most (the recurrent products keep their B)
_OPTIMIZER_VALUES = 2 ** 22


@dataclass(frozen=True)
class ProductTimes:
    """Seconds of one matrix's products at the run's size (already scaled to all its rows):
    ``forward`` (W X), ``backward`` (W^T G and the weight gradient), for the given columns."""
    forward: float
    backward: float


@dataclass(frozen=True)
class StepEstimate:
    """The timed parts of a training step: each layer-direction's W_hh products at B columns (per
    time step) and W_ih's over all T*B columns, the rest of the recurrence (``cells``: forward and
    backward, over all steps) and the optimizer's update."""
    recurrent: tuple[ProductTimes, ...]
    inputs: tuple[ProductTimes, ...]
    cells: ProductTimes
    optimizer: float

    def seconds(self, steps: int, recompute_every: int | None) -> float:
        """The step: every time step's recurrent products, the input products once, the cells, the
        optimizer; with recomputation the forward of the steps before the last segment once more
        (the last segment's backward reads what the forward kept)."""
        return sum(self.parts(steps, recompute_every).values())

    def parts(self, steps: int, recompute_every: int | None) -> dict[str, float]:
        """:meth:`seconds` by part: "recurrent" (every W_hh's products over all steps), "inputs",
        "cells", "optimizer" (where an estimate's error comes from)."""
        again = 1 + (last_start(steps, recompute_every) / steps if recompute_every and steps else 0)

        def total(products, per_step=1):
            return sum(per_step * (again * p.forward + p.backward) for p in products)
        return {"recurrent": total(self.recurrent, steps), "inputs": total(self.inputs),
                "cells": total([self.cells]), "optimizer": self.optimizer}


def estimate_step(sizes: RecurrentSizes, steps: int, batch: int, optimizer: str = "adam",
                  device: torch.device | str = "cpu") -> StepEstimate:
    """Times the products of ``sizes`` (module docstring) on ``device``; ``optimizer`` "adam" or
    "adam-bf16" (CompactAdam's moments in bfloat16)."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the run's own draws (its model's initial values) stay as they were
        products = _products(sizes, steps, batch, device)
        cells = _cells(sizes, steps, batch, device)
    params = sum(n if n is not None else sizes.gates * sizes.hidden * cols
                 for n, cols in zip(sizes.nnz_ih + sizes.nnz_hh, _input_cols(sizes) + _recurrent_cols(sizes)))
    return StepEstimate(*products, cells, _optimizer_seconds(params, optimizer, device))


def _input_cols(sizes: RecurrentSizes) -> list[int]:
    D = sizes.directions
    return [sizes.input_size if i < D else D * sizes.hidden for i in range(len(sizes.nnz_ih))]


def _recurrent_cols(sizes: RecurrentSizes) -> list[int]:
    return [sizes.hidden] * len(sizes.nnz_hh)


def _products(sizes: RecurrentSizes, steps: int, batch: int, device) -> tuple[tuple, tuple]:
    """(each W_hh's product times per time step, each W_ih's over all steps)."""
    gen = torch.Generator().manual_seed(0)
    rows, recurrent, inputs = sizes.gates * sizes.hidden, [], []
    for nnz_ih, nnz_hh, cols_ih in zip(sizes.nnz_ih, sizes.nnz_hh, _input_cols(sizes)):
        recurrent.append(_product_times(rows, sizes.hidden, nnz_hh, batch, batch, sizes.dtype, device, gen))
        inputs.append(_product_times(rows, cols_ih, nnz_ih, batch, steps * batch, sizes.dtype, device, gen))
    return tuple(recurrent), tuple(inputs)


#: units of the modules whose steps, beyond their products, give the cells' time (module docstring)
_SMALL = {"cpu": (4096, 16384), "cuda": (65536, 262144)}
_CELL_BYTES = 2 ** 29  # a small module's stored activations, at most (its time steps are cut to fit)


def _cells(sizes: RecurrentSizes, steps: int, batch: int, device) -> ProductTimes:
    """The recurrence beyond its products, forward and backward, for all ``steps``: a training step
    of the same module at the device's two :data:`_SMALL` sizes less their products, the line
    through the two (a fixed cost per step, and one per unit) taken to the run's units; a module
    no larger than the second size is timed at its own size."""
    h1, h2 = _SMALL.get(device.type, _SMALL["cuda"])
    if sizes.mode == "CTRNN":  # (not estimated)
        return ProductTimes(0.0, 0.0)
    if sizes.hidden <= h2:
        return ProductTimes(*_cells_at(sizes, sizes.hidden, steps, batch, device))
    (f1, b1), (f2, b2) = (_cells_at(sizes, h, steps, batch, device) for h in (h1, h2))

    def at_run(c1, c2):
        per_unit = (c2 - c1) / (h2 - h1)
        return c1 + per_unit * (sizes.hidden - h1) if per_unit > 0 else c2 * sizes.hidden / h2
    return ProductTimes(at_run(f1, f2), at_run(b1, b2))


def _cells_at(sizes: RecurrentSizes, h: int, steps: int, batch: int, device) -> tuple[float, float]:
    """(forward, backward) seconds of a training step of ``sizes``' module with ``h`` units and the
    same nonzeros per row, less its products, over ``steps`` time steps: timed on as many of them
    as keep its stored activations under :data:`_CELL_BYTES`, and scaled (a step's work does not
    depend on which step it is)."""
    from ..nn import SparseGRU, SparseLSTM, SparseRNN

    per_step = (sizes.gates + 3) * h * batch * sizes.dtype.itemsize
    timed = max(1, min(steps, _CELL_BYTES // per_step))

    cls = {"LSTM": SparseLSTM, "GRU": SparseGRU, "RNN_TANH": SparseRNN, "RNN_RELU": SparseRNN}[sizes.mode]
    n_in = h if sizes.input_size == sizes.hidden else sizes.input_size
    per_row = next((n / (sizes.gates * sizes.hidden) for n in sizes.nnz_hh if n is not None), h)
    kw = {"nonlinearity": "relu"} if sizes.mode == "RNN_RELU" else {}
    torch.manual_seed(0)
    module = cls(n_in, h, num_layers=sizes.layers, bidirectional=sizes.bidirectional, bias=sizes.bias,
                 density=min(per_row, h) / h, sparse=_sparse_flag(sizes), dtype=sizes.dtype, **kw).to(device)
    small = sizes_of(module)
    x = torch.randn(timed, batch, n_in, dtype=sizes.dtype, device=device)
    state = {}

    def forward():
        state["out"] = module(x)[0].sum()

    fwd = _seconds(forward, device, repeats=2)
    bwd = _seconds(lambda: (forward(), state["out"].backward()), device, repeats=2) - fwd
    recurrent, inputs = _products(small, timed, batch, device)
    product_fwd = sum(timed * p.forward for p in recurrent) + sum(p.forward for p in inputs)
    product_bwd = sum(timed * p.backward for p in recurrent) + sum(p.backward for p in inputs)
    return steps / timed * max(0.0, fwd - product_fwd), steps / timed * max(0.0, bwd - product_bwd)


def _sparse_flag(sizes: RecurrentSizes) -> str:
    """The ``sparse=`` setting of ``sizes``' module."""
    flags = (sizes.nnz_ih[0] is not None, sizes.nnz_hh[0] is not None)
    return next(name for name, f in _SPARSE_CHOICES.items() if f == flags)


def _product_times(rows: int, cols: int, nnz: int | None, batch: int, width: int, dtype, device,
                   gen) -> ProductTimes:
    """The products of a rows x cols matrix (nnz None: dense) with ``width`` columns, timed on
    blocks of it (module docstring) at ``width`` columns, or at as many (no fewer than ``batch``)
    as keep the operands under :data:`_OPERAND_BYTES`, and scaled."""
    target = _BLOCK_NNZ.get(device.type, 2 ** 22)
    per_row = cols if nnz is None else max(nnz / max(rows, 1), 1e-9)
    block = max(1, min(rows, int(target / per_row)))
    # a sparse product's W^T G reads all the rows' G (below), a dense one's only its block's
    timed = max(batch, min(width, _OPERAND_BYTES // (dtype.itemsize * max(cols, block if nnz is None else rows))))
    scale = width / timed
    X = torch.randn(cols, timed, generator=gen, dtype=dtype).to(device)
    if nnz is None:
        W = torch.randn(block, cols, generator=gen, dtype=dtype).to(device)
        G = torch.randn(block, timed, generator=gen, dtype=dtype).to(device)
        fwd = _seconds(lambda: W @ X, device)
        bwd = _seconds(lambda: (W.t() @ G, G @ X.t()), device)
        return ProductTimes(fwd * scale * rows / block, bwd * scale * rows / block)
    forward, grad = [], []
    row_blocks = _blocks(rows, block)
    for b in row_blocks:  # W X and the weight gradient: blocks of rows, all the columns
        W = SparseWeight.random(b, cols, nnz=max(1, round(per_row * b)), generator=gen, dtype=dtype).to(device)
        G = torch.randn(b, timed, generator=gen, dtype=dtype).to(device)
        with torch.no_grad():
            forward.append(_seconds(lambda: ops.spmm(W, X), device))
            grad.append(_seconds(lambda: ops.sddmm(W, G, X), device))
    per_col = nnz / max(cols, 1)
    transposed, col_blocks = [], _blocks(cols, target / max(per_col, 1e-9))
    G = torch.randn(rows, timed, generator=gen, dtype=dtype).to(device)
    for c in col_blocks:  # W^T G: blocks of columns, all the rows
        W = SparseWeight.random(rows, c, nnz=max(1, round(per_col * c)), generator=gen, dtype=dtype).to(device)
        with torch.no_grad():  # with the values in column order, as the recurrence's backward gives them
            values_t = ops.transposed_values(W)
            transposed.append(_seconds(lambda: ops.spmm_t(W, G, values_t), device))
    return ProductTimes(scale * _to_size(row_blocks, forward, rows),
                        scale * (_to_size(row_blocks, grad, rows) + _to_size(col_blocks, transposed, cols)))


def _blocks(size: int, block: float) -> tuple[int, ...]:
    """The sizes a product is timed at: ``block`` (at least 1) and four times it, or ``size``
    itself where four times the block would reach it (the whole, timed as it is)."""
    b = max(1, int(block))
    return (size,) if 4 * b >= size else (b, 4 * b)


def _to_size(blocks: tuple[int, ...], seconds: list[float], size: int) -> float:
    """Seconds at ``size`` rows (or columns) from the times of :func:`_blocks`: the whole timed
    as it is, else the line through the two (a cost per call and one per row), or the larger
    scaled by its share where the line does not rise."""
    if blocks == (size,):
        return seconds[0]
    (b1, b2), (t1, t2) = blocks, seconds
    slope = (t2 - t1) / (b2 - b1)
    return t1 + slope * (size - b1) if slope > 0 else t2 * size / b2


def _optimizer_seconds(params: int, optimizer: str, device) -> float:
    from ..training.compact_adam import CompactAdam

    n = max(1, min(params, _OPTIMIZER_VALUES))
    p = torch.nn.Parameter(torch.zeros(n, device=device))
    p.grad = torch.ones_like(p)
    opt = CompactAdam([p]) if optimizer == "adam-bf16" else torch.optim.Adam([p])
    return _seconds(opt.step, device) * params / n


def _seconds(fn, device, repeats: int = 3) -> float:
    """The fastest of ``repeats`` timed calls after one warm-up (which builds what is built once,
    such as the transposed index)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best
