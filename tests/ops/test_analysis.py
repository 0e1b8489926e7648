"""The analysis ops (csrc/cpu/analysis_cpu.cpp) called as ops: their schemas and fake kernels
(opcheck). What they compute, through sparse_engine.analysis (signed triad census, FFLs, balance,
null models): tests/analysis/; their malformed input: test_malformed_input.py."""
import numpy as np
import torch

import sparse_engine  # noqa: F401
from sparse_engine.testing import random_scipy


def test_fake_kernels_opcheck(np_rng):
    rng = np_rng
    A = random_scipy(30, 30, 0.2, generator=rng, diagonal=False)
    rp, ci = torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int32))
    v = torch.from_numpy(A.data)
    torch.library.opcheck(torch.ops.sparse_engine.signed_triad_census.default, (rp, ci, v),
                          test_utils=("test_schema", "test_faketensor"))
    src = torch.tensor([0, 1, 2], dtype=torch.int32)
    dst = torch.tensor([1, 2, 0], dtype=torch.int32)
    torch.library.opcheck(torch.ops.sparse_engine.degree_preserving_swaps.default,
                          (src, dst, 3, 10, torch.tensor([1, 2])), test_utils=("test_schema", "test_faketensor"))
