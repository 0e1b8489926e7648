"""Property-based tests (hypothesis) of SparseWeight: its invariants (a valid CSR with a consistent
transposed index, checked with numpy: sparse_engine.testing.check_structure) under any sequence of
prunes, regrowths, pattern loads and dtype changes, holding what a {position: value} model says; the
conversions (dense, torch CSR, scipy) round trip; random patterns hold exactly nnz entries. Shapes
hypothesis draws: 0 rows or columns, one column, empty and full rows, densities 0..1.

The example budget comes from the hypothesis profile loaded in ``tests/conftest.py``
(``HYPOTHESIS_PROFILE=dev|ci|thorough``); a test's share of it is set by :func:`budget`. Random
numbers are drawn from generators seeded by integers hypothesis draws (so a failure prints
everything needed to replay it); hypothesis itself picks its seed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sparse_engine import SparseWeight
from sparse_engine.testing import check_structure, entry_keys, random_weight
from sparse_engine.testing import weight_strategy as weights
from sparse_engine.training import topology

F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
EXAMPLES = settings().max_examples  # of the profile conftest.py loaded
seeds = st.integers(0, 2**32 - 1)
# mostly small sizes, sometimes enough work to cross constants.PARALLEL_WORK on two threads
dims = st.one_of(st.integers(0, 24), st.integers(100, 220))
densities = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)


def stored(W: SparseWeight):
    """(row, col, value as float64) of every stored entry, in CSR order, as numpy arrays."""
    row, col, v = W.coo()
    return row.numpy(), col.numpy(), v.detach().double().numpy()


# ------------------------------------------------------------------- conversions, random patterns
@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")  # torch's beta notice for sparse CSR tensors
@budget(0.5)
@given(W=weights(dtypes=st.sampled_from([F32, F64, F16, BF16])))
def test_sparse_weight_conversions_round_trip(W):
    check_structure(W)
    rows, cols = W.shape
    dense = W.to_dense()
    mask = torch.zeros(W.shape, dtype=torch.bool)
    mask[W.coo()[0], W.coo()[1]] = True
    back = SparseWeight.from_dense(dense, mask)  # keeps stored zeros too
    csr = W.to_torch_sparse_csr()
    assert torch.equal(csr.crow_indices(), W.row_ptr) and torch.equal(csr.col_indices(), W.col_idx.long())
    from_csr = SparseWeight.from_csr(W.row_ptr, W.col_idx, W.values.detach(), W.shape)
    sc = SparseWeight.from_scipy(W.to_scipy(), dtype=W.values.dtype)
    for V in (back, from_csr, sc):
        assert V.shape == W.shape and V.values.dtype == W.values.dtype
        for a, b in zip(V.index, W.index):
            assert torch.equal(a, b)
        assert torch.equal(V.values.detach(), W.values.detach())


@budget(0.5)
@given(rows=dims, cols=dims, share=st.floats(0.0, 1.0), seed=seeds)
def test_random_pattern_has_exactly_nnz_entries(rows, cols, share, seed):
    nnz = int(share * rows * cols)
    W = SparseWeight.random(rows, cols, nnz=nnz, generator=torch.Generator().manual_seed(seed), dtype=F64)
    assert W.nnz == nnz
    W.validate()
    check_structure(W)


# ------------------------------------------------------ SparseWeight invariants under any updates
class SparseWeightUpdates(RuleBasedStateMachine):
    """Any sequence of prunes, regrowths, pattern loads and dtype changes keeps a SparseWeight a
    valid CSR with a consistent transposed index, holding what a {position: value} model says."""

    @initialize(W=weights(rows=st.integers(0, 16), cols=st.integers(0, 16)))
    def start(self, W):
        self.W = W
        self.model = self.as_dict(W)

    @staticmethod
    def as_dict(W):
        return dict(zip(entry_keys(W).tolist(), stored(W)[2].tolist()))

    def rewired(self, keep, new_keys=(), new_values=None):
        """Applies rewire and the same change to the model."""
        W, cols = self.W, self.W.shape[1]
        new_keys = np.asarray(new_keys, np.int64)
        kept = entry_keys(W)[keep.numpy()]
        model = {k: self.model[k] for k in kept.tolist()}
        grow = None
        if new_keys.size:
            def grow(rp, ci):
                return torch.from_numpy(new_keys // cols).long(), torch.from_numpy(new_keys % cols).int()
        topology.rewire(W, keep, grow, values=new_values)
        if new_values is not None:  # the values as stored in the weight's dtype
            model.update(zip(new_keys.tolist(), new_values.to(W.values.dtype).double().tolist()))
        self.model = model

    @rule(share=st.floats(0.0, 1.0))
    def prune_smallest(self, share):
        self.rewired(topology.magnitude_keep(self.W.values, int(share * self.W.nnz)))

    @rule(zeta=st.floats(0.0, 1.0))
    def prune_set(self, zeta):
        self.rewired(topology.set_keep(self.W.values, zeta))

    @rule(share=st.floats(0.0, 1.0), seed=seeds)
    def regrow_random(self, share, seed):
        W = self.W
        rows, cols = W.shape
        n = int(share * (rows * cols - W.nnz))
        r, c = topology.random_empty(W.row_ptr, W.col_idx, cols, n, seed)
        vals = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
        self.rewired(torch.ones(W.nnz, dtype=torch.bool), (r * cols + c).numpy(), vals)

    @rule(p_keep=densities, share=st.floats(0.0, 1.0), seed=seeds)
    def prune_and_regrow(self, p_keep, share, seed):
        W = self.W
        rows, cols = W.shape
        g = torch.Generator().manual_seed(seed)
        keep = torch.rand(W.nnz, generator=g) < p_keep
        free = np.setdiff1d(np.arange(rows * cols), entry_keys(W)[keep.numpy()])
        new = np.sort(np.random.default_rng(seed).choice(free, int(share * free.size), replace=False))
        self.rewired(keep, new, torch.randn(new.size, generator=g, dtype=F64))

    @rule(density=densities, dtype=st.sampled_from([F32, F64, BF16]), seed=seeds)
    def load_state_dict(self, density, dtype, seed):
        """A state_dict of the same shape and another pattern (another nnz), maybe saved in
        another dtype: loaded in place, the values converted to this weight's dtype."""
        other = random_weight(*self.W.shape, density, dtype=dtype, seed=seed)
        param, mine = self.W.values, self.W.values.dtype
        self.W.load_state_dict(other.state_dict())
        assert self.W.values is param and param.dtype == mine  # optimizers keep working
        self.model = {k: float(torch.tensor(v, dtype=F64).to(mine).double()) for k, v in self.as_dict(other).items()}

    @rule(dtype=st.sampled_from([F32, F64, BF16]))
    def convert(self, dtype):
        self.W.to(dtype)
        self.model = {k: float(torch.tensor(v, dtype=F64).to(dtype).double()) for k, v in self.model.items()}

    @invariant()
    def structure_and_values(self):
        W = getattr(self, "W", None)
        if W is None:
            return
        W.validate()
        check_structure(W)
        assert self.as_dict(W) == self.model


TestSparseWeightUpdates = SparseWeightUpdates.TestCase
TestSparseWeightUpdates.settings = budget(0.5, stateful_step_count=12)
