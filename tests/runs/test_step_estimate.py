"""train's estimated step time (sparse_engine/runs/step_estimate.py): how the timed parts add up
(exact arithmetic on given times), and what is timed for a module (every layer-direction, the
rest of the recurrence at two sizes above 16,384 units). Whether it comes close to a measured step
is a benchmark's question (benchmarks/bench_caps.py), not a unit test's."""
import math

import pytest
import torch

from sparse_engine.memory import RecurrentSizes
from sparse_engine.runs import step_estimate
from sparse_engine.runs.step_estimate import ProductTimes, StepEstimate, estimate_step


def test_the_parts_add_up_per_time_step_and_recomputation_runs_the_forward_again():
    est = StepEstimate(recurrent=(ProductTimes(1.0, 2.0), ProductTimes(10.0, 20.0)),
                       inputs=(ProductTimes(100.0, 200.0),), cells=ProductTimes(1000.0, 2000.0), optimizer=5.0)
    stored = 7 * (3 + 30) + 300 + 3000 + 5
    assert est.seconds(7, None) == stored
    assert est.parts(7, None) == {"recurrent": 7 * 33, "inputs": 300, "cells": 3000, "optimizer": 5}
    # recomputing every 4 of 7 steps: the 4 steps before the last segment again (4/7 of the forward)
    assert est.seconds(7, 4) == pytest.approx(stored + 4 / 7 * (7 * (1 + 10) + 100 + 1000))
    assert est.seconds(7, 7) == stored  # one segment: nothing is run again


@pytest.mark.parametrize("sparse,bidirectional", [("recurrent", False), ("both", True)])
def test_every_layer_direction_is_timed(sparse, bidirectional):
    sizes = RecurrentSizes.build("gru", 5, 40, layers=2, row_nnz=4, sparse=sparse, bidirectional=bidirectional)
    est = estimate_step(sizes, 3, 2)
    assert len(est.recurrent) == len(est.inputs) == 2 * (2 if bidirectional else 1)
    parts = [*est.recurrent, *est.inputs, est.cells]
    assert all(math.isfinite(x) and x >= 0 for p in parts for x in (p.forward, p.backward))
    assert est.optimizer > 0 and est.seconds(3, None) > 0


@pytest.mark.parametrize("device, h1, h2", [("cpu", 4096, 16384), ("cuda", 65536, 262144)])
def test_a_large_module_is_timed_at_two_sizes_and_on_the_line_through_them(device, h1, h2, monkeypatch):
    """A CPU times the cells at 4,096 and 16,384 units; a GPU, where those steps are bound by their
    launches, at 65,536 and 262,144 (no GPU needed: the timing is replaced)."""
    timed = []

    def cells_at(sizes, h, steps, batch, device):
        timed.append(h)
        return {h1: (1.0, 2.0), h2: (4.0, 5.0)}[h]
    monkeypatch.setattr(step_estimate, "_cells_at", cells_at)
    hidden = 10 * h1
    sizes = RecurrentSizes.build("lstm", 28, hidden, row_nnz=8, sparse="recurrent")
    cells = step_estimate._cells(sizes, 2, 2, torch.device(device))
    assert timed == [h1, h2]
    per_unit = 3.0 / (h2 - h1)  # both lines rise by 3 s between the two sizes
    assert cells.forward == pytest.approx(1.0 + per_unit * (hidden - h1))
    assert cells.backward == pytest.approx(2.0 + per_unit * (hidden - h1))


def test_a_small_module_runs_fewer_time_steps_when_they_would_not_fit_and_is_scaled(monkeypatch):
    """The cells' module keeps its stored activations under _CELL_BYTES: fewer time steps, each
    one's time counted as many times as the run has steps."""
    seen = []

    def seconds(fn, device, repeats=3):  # each timed call: 1 s (forward; and forward + backward)
        return 1.0

    def products(sizes, steps, batch, device):  # (no time in the products)
        seen.append(steps)
        return (ProductTimes(0.0, 0.0),), (ProductTimes(0.0, 0.0),)
    monkeypatch.setattr(step_estimate, "_CELL_BYTES", 7 * 40 * 2 * 4 * 3)  # three steps of LSTM(40) at B=2
    monkeypatch.setattr(step_estimate, "_products", products)
    sizes = RecurrentSizes.build("lstm", 5, 40, row_nnz=4, sparse="recurrent")
    monkeypatch.setattr(step_estimate, "_seconds", seconds)
    fwd, bwd = step_estimate._cells_at(sizes, 40, 12, 2, torch.device("cpu"))
    assert seen == [3]
    assert (fwd, bwd) == (4.0, 0.0)  # the three timed steps' 1 s (forward; the backward 1 - 1) times 12 / 3


def test_the_estimate_leaves_the_runs_random_draws_as_they_were():
    """train estimates before it builds its model: the model's initial values must not move."""
    sizes = RecurrentSizes.build("lstm", 4, 30, row_nnz=3)
    torch.manual_seed(3)
    want = torch.rand(4)
    torch.manual_seed(3)
    estimate_step(sizes, 2, 2)
    assert torch.equal(torch.rand(4), want)


def test_a_cost_per_call_in_the_columns_is_counted_once_and_the_rest_scaled_to_the_matrix(monkeypatch):
    """Products whose time is a cost per call, one per nonzero and one per output row (W X) or output
    column (W^T G): the blocks' times taken to the whole matrix must give its time exactly. Timing W^T G
    on one block of rows with every column and scaling by rows / block counted its per-column cost once
    per block (5x the measured step at 8.6 million units on an H200)."""
    calls = []

    def spmm(W, X):
        return 1e-6 + 1e-9 * W.nnz + 1e-8 * W.shape[0]

    def spmm_t(W, G, values_t=None):
        calls.append((tuple(W.shape), values_t is not None))
        return 1e-6 + 3e-9 * W.nnz + 5e-8 * W.shape[1]

    def sddmm(W, G, X):
        return 1e-6 + 2e-9 * W.nnz

    for name, fake in {"spmm": spmm, "spmm_t": spmm_t, "sddmm": sddmm}.items():
        monkeypatch.setattr(step_estimate.ops, name, fake)
    monkeypatch.setattr(step_estimate, "_seconds", lambda fn, device, repeats=3: fn())
    monkeypatch.setattr(step_estimate, "_BLOCK_NNZ", {"cpu": 2 ** 10})
    H = 4096
    rows, cols, nnz = 4 * H, H, 32 * 4 * H
    got = step_estimate._product_times(rows, cols, nnz, 20, 20, torch.float32, torch.device("cpu"),
                                       torch.Generator().manual_seed(0))
    assert got.forward == pytest.approx(1e-6 + 1e-9 * nnz + 1e-8 * rows)
    assert got.backward == pytest.approx(1e-6 + 2e-9 * nnz + 1e-6 + 3e-9 * nnz + 5e-8 * cols)
    # W^T G ran on blocks of columns with every row, given the values in column order
    assert calls and all(shape[0] == rows and shape[1] < cols and given for shape, given in calls)


def test_a_product_smaller_than_its_block_is_timed_whole():
    assert step_estimate._blocks(100, 512.0) == (100,)
    assert step_estimate._blocks(1000, 100.0) == (100, 400)
    assert step_estimate._blocks(300, 100.0) == (300,)  # four blocks would reach it: the whole, timed once
    assert step_estimate._blocks(401, 100.0) == (100, 400)
    assert step_estimate._to_size((100,), [2.0], 100) == 2.0
    assert step_estimate._to_size((100, 400), [1.0, 2.5], 1000) == pytest.approx(1.0 + 1.5 / 300 * 900)
    assert step_estimate._to_size((100, 400), [2.0, 2.0], 1000) == pytest.approx(2.0 * 1000 / 400)  # no rise
