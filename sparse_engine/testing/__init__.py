"""Helpers for tests of code built on sparse-engine: seeded random SparseWeights, the awkward
shapes every kernel must survive, float64 dense references of spmm, spmm_t and sddmm, numpy
references of the topology selections (the k smallest, SET's keep mask), and checks of a
weight's invariants and of a saved state bit for bit.

sparse-engine's own tests use these; they are public so that your tests can too::

    import torch
    from sparse_engine import ops
    from sparse_engine.testing import AWKWARD_SHAPES, randn, random_weight, references

    for shape in AWKWARD_SHAPES:
        W = random_weight(*shape, seed=0)                 # float64 values, CPU
        X = randn(W.shape[1], 3, seed=1)
        ref = references(W, X=X)["spmm"]                  # float64 W @ X, sum |W||X|, terms
        torch.testing.assert_close(ops.spmm(W, X), ref.value)

Conventions:

* every random helper takes ``seed=`` (an int) or ``generator=`` (a CPU ``torch.Generator``,
  or a ``numpy.random.Generator`` for :func:`random_scipy`), exactly one of the two, so a
  failure can be replayed;
* values are float64 unless ``dtype=`` says otherwise; ``device=`` moves the result (the
  random numbers are always drawn on the CPU, so a seed gives the same matrix on any device);
* :func:`random_weight` draws a dense ``rows x cols`` mask (small sizes only);
  :func:`weight_with_row_lengths` and :func:`power_law_weight` cost O(nnz + rows) memory, and
  ``SparseWeight.random`` is O(nnz) for huge sizes;
* the references are computed in float64 on the CPU from the values as stored (a float16
  weight's reference uses its float16 values exactly), for any device and dtype of the inputs;
* the checks raise ``AssertionError`` naming what differs (also under ``python -O``).

The package, by what each module holds: :mod:`.factories` (shapes, seeded weights and batches,
layouts, hypothesis strategies), :mod:`.references` (float64 references and rounding bounds),
:mod:`.checks` (invariants, bit-for-bit comparisons), :mod:`.modules` (a sparse recurrent module
against torch's) and :mod:`.process` (threads, memory probes); every name is importable from
``sparse_engine.testing`` itself.
"""
from .checks import (assert_bit_equal, assert_same_bits, check_invariants, check_structure, entry_keys,
                     value_by_key)
from .factories import (AWKWARD_SHAPES, LAYOUTS, Shape, copy_weight, power_law_weight, randn, random_scipy,
                        random_weight, weight_strategy, weight_with_row_lengths, with_layout)
from .modules import check_against_torch, param_grad_pairs, random_packed, random_states, sparse_and_dense_paths
from .process import TensorMemoryTrace, num_threads, peak_rss_growth
from .references import (Reference, assert_within_rounding, dense, references, rounding_bound, sddmm_reference,
                         set_keep_reference, smallest_reference, spmm_reference, spmm_t_reference)

__all__ = [
    "Shape", "AWKWARD_SHAPES", "LAYOUTS",
    "random_weight", "weight_with_row_lengths", "power_law_weight", "random_scipy", "randn",
    "copy_weight", "with_layout",
    "dense", "spmm_reference", "spmm_t_reference", "sddmm_reference", "Reference", "references",
    "smallest_reference", "set_keep_reference", "entry_keys", "value_by_key",
    "check_invariants", "assert_bit_equal", "num_threads", "TensorMemoryTrace",
    "rounding_bound", "assert_within_rounding", "assert_same_bits", "check_structure", "weight_strategy",
    "random_packed", "param_grad_pairs", "check_against_torch", "peak_rss_growth", "random_states",
    "sparse_and_dense_paths",
]
