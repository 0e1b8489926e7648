"""Seeded random inputs: the awkward shapes every kernel must survive, SparseWeights of any row law,
scipy matrices, dense batches, non-contiguous layouts and hypothesis strategies."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..sparse import SparseWeight


# --------------------------------------------------------------------------- shapes
class Shape(NamedTuple):
    """A weight to build with ``random_weight(*shape, ...)``: ``empty_rows`` random rows hold
    nothing and ``full_rows`` random rows hold every column; the rest are Bernoulli(density)."""

    rows: int
    cols: int
    density: float
    empty_rows: int = 0
    full_rows: int = 0

    def __str__(self) -> str:  # a readable pytest id: ``parametrize(..., ids=str)``
        return f"{self.rows}x{self.cols}-d{self.density:g}-e{self.empty_rows}-f{self.full_rows}"


AWKWARD_SHAPES: tuple[Shape, ...] = (
    Shape(1, 1, 1.0),
    Shape(1, 1, 0.0),
    Shape(7, 1, 0.5, 2, 1),
    Shape(1, 9, 0.5, 0, 1),
    Shape(0, 5, 0.5),
    Shape(5, 0, 0.5),
    Shape(0, 0, 0.5),
    Shape(6, 8, 0.0),
    Shape(37, 53, 0.2, 5, 2),
    Shape(200, 150, 0.05, 20, 1),
    Shape(513, 1031, 0.01, 30, 3),
)
"""The shapes an operator on SparseWeight must handle. In order:

* ``1x1`` full: the smallest non-empty matrix (one stored entry);
* ``1x1`` with density 0: the smallest nnz-0 matrix;
* ``7x1``: one column (every stored entry in column 0), with empty and full rows;
* ``1x9``: one row, held full (every spmm_t output sums exactly one term);
* ``0x5``, ``5x0``, ``0x0``: empty matrices (no rows, no columns, neither);
* ``6x8`` with density 0: rows and columns but nnz 0 (every row empty);
* ``37x53``: sizes that are multiples of no vector or block width, with empty and full rows;
* ``200x150`` and ``513x1031``: many empty rows (20 and 30) among long ones, and enough
  work at a batch of 64 (nnz * 64 > ``constants.PARALLEL_WORK``) for the multi-threaded
  CPU kernels; the 3 full rows of ``513x1031`` are longer than 1024 entries, so the CUDA
  kernels give them a whole block at every batch width (``long_row_threshold`` in
  ``csrc/cuda/common.cuh``).

Build one with ``random_weight(*shape, seed=...)``; pair them with batch 1 (a single column
of X) and a few odd widths; ``parametrize("shape", AWKWARD_SHAPES, ids=str)`` names the cases.
"""


# ------------------------------------------------------------------------ generators
def _generator(seed, generator, numpy: bool = False):
    """The generator to draw from: ``generator`` itself, or a new one seeded with ``seed``."""
    kind, name = (np.random.Generator, "numpy.random.Generator") if numpy else (torch.Generator, "torch.Generator")
    if (seed is None) == (generator is None):
        raise TypeError(f"give exactly one of seed= (an int) and generator= (a {name})")
    if generator is None:
        return np.random.default_rng(int(seed)) if numpy else torch.Generator().manual_seed(int(seed))
    if not isinstance(generator, kind):
        raise TypeError(f"generator must be a {name}, got {type(generator).__name__}")
    return generator


# ----------------------------------------------------------------------- factories
def random_weight(rows: int, cols: int, density: float, empty_rows: int = 0, full_rows: int = 0, *,
                  dtype: torch.dtype = torch.float64, seed: int | None = None,
                  generator: torch.Generator | None = None, device=None) -> SparseWeight:
    """A ``rows x cols`` SparseWeight: each entry present with probability ``density``, then
    ``empty_rows`` random rows emptied and ``full_rows`` other random rows filled; values
    standard normal. ``random_weight(*shape, seed=...)`` builds a :class:`Shape`. Draws a dense
    mask: small sizes only."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if empty_rows < 0 or full_rows < 0 or empty_rows + full_rows > rows:
        raise ValueError(f"need 0 <= empty_rows + full_rows <= rows={rows}, got {empty_rows} and {full_rows}")
    g = _generator(seed, generator)
    mask = torch.rand(rows, cols, generator=g) < density
    if empty_rows or full_rows:
        perm = torch.randperm(rows, generator=g)
        mask[perm[:empty_rows]] = False
        mask[perm[empty_rows:empty_rows + full_rows]] = True
    W = SparseWeight.from_dense(torch.randn(rows, cols, generator=g, dtype=dtype), mask)
    return W if device is None else W.to(device)


def weight_with_row_lengths(lengths, cols: int, *, dtype: torch.dtype = torch.float64, seed: int | None = None,
                            generator: torch.Generator | None = None, device=None) -> SparseWeight:
    """A ``len(lengths) x cols`` SparseWeight whose row ``r`` holds ``lengths[r]`` distinct random
    columns; values standard normal. O(nnz + rows) memory: for skewed or long rows at any size."""
    g = _generator(seed, generator)
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64).reshape(-1)
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > cols):
        raise ValueError(f"row lengths must be in [0, cols={cols}], got [{int(lengths.min())}, {int(lengths.max())}]")
    row_ptr = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=row_ptr[1:])
    parts = [torch.randperm(cols, generator=g)[:n].sort().values for n in lengths.tolist() if n]
    col_idx = torch.cat(parts).to(torch.int32) if parts else torch.zeros(0, dtype=torch.int32)
    values = torch.randn(col_idx.numel(), generator=g, dtype=dtype)
    W = SparseWeight(row_ptr, col_idx, values, (lengths.numel(), cols), validate=False)
    return W if device is None else W.to(device)


def power_law_weight(rows: int, cols: int, *, exponent: float = 1.5, empty_rows: int = 0,
                     dtype: torch.dtype = torch.float64, seed: int | None = None,
                     generator: torch.Generator | None = None, device=None) -> SparseWeight:
    """Skewed row lengths, as in trained networks: row length ``floor(u ** -exponent)`` (u
    uniform in (0, 1), capped at ``cols``), so most rows are short and a few hold most entries;
    then ``empty_rows`` random rows emptied. O(nnz + rows) memory."""
    if not 0 <= empty_rows <= rows:
        raise ValueError(f"empty_rows must be in [0, rows={rows}], got {empty_rows}")
    g = _generator(seed, generator)
    lengths = torch.clamp((torch.rand(rows, generator=g) ** -exponent).long(), max=cols)
    if empty_rows:
        lengths[torch.randperm(rows, generator=g)[:empty_rows]] = 0
    return weight_with_row_lengths(lengths, cols, dtype=dtype, generator=g, device=device)


def random_scipy(rows: int, cols: int, density: float, *, seed: int | None = None,
                 generator: np.random.Generator | None = None, explicit_zeros: float = 0.0,
                 diagonal: bool = True):
    """A ``scipy.sparse.csr_matrix`` with standard normal (so signed) values, for the analysis
    functions that take scipy matrices (a signed graph in the post-row convention: ``A[j, i]``
    is the edge i -> j). ``explicit_zeros``: the fraction of entries set to a stored 0.0 (not an
    edge); ``diagonal=False`` removes the diagonal (no self loops)."""
    import scipy.sparse as sp

    rng = _generator(seed, generator, numpy=True)
    A = sp.random(rows, cols, density=density, random_state=rng, format="csr")
    A.data = rng.standard_normal(A.nnz)
    if explicit_zeros and A.nnz:
        A.data[rng.random(A.nnz) < explicit_zeros] = 0.0
    if not diagonal:
        A = A.tolil()
        A.setdiag(0)
        A = A.tocsr()
    return A


def randn(*shape: int, dtype: torch.dtype = torch.float64, seed: int | None = None,
          generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``torch.randn(*shape)`` drawn on the CPU from the seed or generator, then moved to
    ``device``: the same numbers on every device."""
    t = torch.randn(*shape, generator=_generator(seed, generator), dtype=dtype)
    return t if device is None else t.to(device)


def copy_weight(W: SparseWeight, *, values: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                device=None) -> SparseWeight:
    """A new SparseWeight with the pattern of ``W`` and a copy of its values (or ``values``),
    converted to ``dtype`` and built on ``device`` (its transposed index then comes from that
    device's kernel). ``W.to(...)`` would move ``W`` itself instead."""
    device = W.row_ptr.device if device is None else torch.device(device)
    v = W.values.detach().clone() if values is None else values.detach()
    v = v.to(device=device, dtype=dtype or v.dtype)
    return SparseWeight(W.row_ptr.to(device), W.col_idx.to(device), v, W.shape)


#: The memory layouts :func:`with_layout` gives.
LAYOUTS = ("transposed", "strided", "misaligned")


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A tensor holding the values of ``t`` (same shape, dtype and device) in another layout:

    * ``"transposed"`` (2-D only): column-major, the transpose of a contiguous tensor;
    * ``"strided"``: every other element of a buffer twice as long in the last dimension
      (the gaps hold NaN, so a kernel that reads them shows it);
    * ``"misaligned"``: contiguous, one element past the start of its buffer, so not 16-byte
      aligned (the element before holds NaN).

    ``transposed`` and ``strided`` are not contiguous unless a dimension of size 1 makes them so."""
    t = t.detach()
    fill = float("nan") if t.is_floating_point() else 0
    if layout == "transposed":
        if t.dim() != 2:
            raise ValueError(f"transposed needs a 2-D tensor, got {t.dim()}-D")
        return t.t().contiguous().t()
    if layout == "strided":
        if t.dim() == 0:
            raise ValueError("strided needs a tensor of at least 1 dimension")
        out = t.new_full((*t.shape[:-1], 2 * t.shape[-1]), fill)[..., ::2]
    elif layout == "misaligned":
        buf = t.new_full((t.numel() + 1,), fill)
        out = buf[1:].view(t.shape)
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    out.copy_(t)
    return out


def weight_strategy(dtypes=None, rows=None, cols=None):
    """A hypothesis strategy (hypothesis must be installed) of :func:`random_weight` SparseWeights:
    ``rows`` x ``cols`` (strategies of ints; by default mostly 0..24, sometimes 100..220: enough work
    for the multi-threaded kernels), a density of 0, 1 or in between, some rows emptied and some
    filled, values of a dtype ``dtypes`` draws (default float32 or float64), from a drawn seed."""
    from hypothesis import note
    from hypothesis import strategies as st

    dims = st.one_of(st.integers(0, 24), st.integers(100, 220))

    @st.composite
    def weights(draw):
        r, c = draw(dims if rows is None else rows), draw(dims if cols is None else cols)
        empty = draw(st.integers(0, r))
        full = draw(st.integers(0, r - empty))
        W = random_weight(r, c, draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))), empty, full,
                          dtype=draw(st.sampled_from([torch.float32, torch.float64]) if dtypes is None else dtypes),
                          seed=draw(st.integers(0, 2**32 - 1)))
        note(f"W: {r} x {c}, nnz {W.nnz}, {empty} empty and {full} full rows, {W.values.dtype}")
        return W
    return weights()
