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


def test_a_large_module_is_timed_at_4096_and_16384_units_and_on_the_line_through_them(monkeypatch):
    timed = []

    def cells_at(sizes, h, steps, batch, device):
        timed.append(h)
        return {4096: (1.0, 2.0), 16384: (4.0, 5.0)}[h]
    monkeypatch.setattr(step_estimate, "_cells_at", cells_at)
    sizes = RecurrentSizes.build("lstm", 28, 40960, row_nnz=8, sparse="recurrent")
    cells = step_estimate._cells(sizes, 2, 2, torch.device("cpu"))
    assert timed == [4096, 16384]
    per_unit = 3.0 / 12288  # both lines rise by 3 s over 12,288 units
    assert cells.forward == pytest.approx(1.0 + per_unit * (40960 - 4096))
    assert cells.backward == pytest.approx(2.0 + per_unit * (40960 - 4096))


def test_the_estimate_leaves_the_runs_random_draws_as_they_were():
    """train estimates before it builds its model: the model's initial values must not move."""
    sizes = RecurrentSizes.build("lstm", 4, 30, row_nnz=3)
    torch.manual_seed(3)
    want = torch.rand(4)
    torch.manual_seed(3)
    estimate_step(sizes, 2, 2)
    assert torch.equal(torch.rand(4), want)
