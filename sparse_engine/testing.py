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
"""
from __future__ import annotations

import contextlib
import decimal
import math
from typing import NamedTuple

import numpy as np
import torch

from .sparse import SparseWeight

__all__ = [
    "Shape", "AWKWARD_SHAPES", "LAYOUTS",
    "random_weight", "weight_with_row_lengths", "power_law_weight", "random_scipy", "randn",
    "copy_weight", "with_layout",
    "dense", "spmm_reference", "spmm_t_reference", "sddmm_reference", "Reference", "references",
    "smallest_reference", "set_keep_reference", "entry_keys", "value_by_key",
    "check_invariants", "assert_bit_equal", "num_threads", "TensorMemoryTrace",
]


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
  kernels give them a whole block (``kMinLongRow`` in ``csrc/cuda/common.cuh``).

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


# ----------------------------------------------------------------------- references
def dense(W: SparseWeight) -> torch.Tensor:
    """``W`` as a float64 dense tensor on the CPU (O(rows * cols) memory)."""
    row, col, v = W.coo()
    D = torch.zeros(W.shape, dtype=torch.float64)
    D[row.cpu(), col.cpu()] = v.detach().cpu().double()
    return D


def _f64(t: torch.Tensor, absolute: bool) -> torch.Tensor:
    t = t.detach().cpu().double()
    return t.abs() if absolute else t


def spmm_reference(W: SparseWeight, X: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """float64 ``W @ X`` (``absolute=True``: ``|W| @ |X|``, the sum of |terms| that rounding
    error bounds scale with)."""
    D = dense(W)
    return (D.abs() if absolute else D) @ _f64(X, absolute)


def spmm_t_reference(W: SparseWeight, G: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """float64 ``W.T @ G`` (``absolute=True``: ``|W|.T @ |G|``)."""
    D = dense(W)
    return (D.abs() if absolute else D).T @ _f64(G, absolute)


def sddmm_reference(W: SparseWeight, G: torch.Tensor, X: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """float64 ``(G @ X.T)[row_k, col_k]`` at each stored entry k of ``W``, in CSR order
    (``absolute=True``: of ``|G|`` and ``|X|``). Takes O(min(rows * cols, nnz * batch)) memory."""
    row, col, _ = W.coo()
    row, col = row.cpu(), col.cpu()
    Gd, Xd = _f64(G, absolute), _f64(X, absolute)
    rows, cols = W.shape
    if rows * cols <= W.nnz * Xd.shape[1]:
        return (Gd @ Xd.T)[row, col]
    return (Gd[row] * Xd[col]).sum(1)


class Reference(NamedTuple):
    """An op's float64 result, the same sum over |terms| (what a rounding bound scales with),
    and how many terms each output sums at most."""

    value: torch.Tensor
    abs_value: torch.Tensor
    terms: int


def references(W: SparseWeight, X: torch.Tensor | None = None, G: torch.Tensor | None = None) -> dict[str, Reference]:
    """:class:`Reference` of ``"spmm"`` (``W @ X``, needs ``X``), ``"spmm_t"`` (``W.T @ G``,
    needs ``G``) and ``"sddmm"`` (needs both), for the ops whose inputs are given."""
    rows, cols = W.shape
    out = {}
    if X is not None:
        out["spmm"] = Reference(spmm_reference(W, X), spmm_reference(W, X, absolute=True), cols)
    if G is not None:
        out["spmm_t"] = Reference(spmm_t_reference(W, G), spmm_t_reference(W, G, absolute=True), rows)
    if X is not None and G is not None:
        out["sddmm"] = Reference(sddmm_reference(W, G, X), sddmm_reference(W, G, X, absolute=True), X.shape[1])
    return out


def smallest_reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of the ``k`` smallest ``scores``, ties to the lower index (-0.0 equals 0.0): a
    stable sort. The contract of ``ops.select_smallest`` and of ``training.magnitude_keep``
    (which drops the smallest ``|values|``)."""
    out = np.zeros(scores.size, bool)
    out[np.argsort(scores + 0.0, kind="stable")[:k]] = True
    return out


def _llround(x: float) -> int:
    """C's llround: the nearest integer, halves away from zero, of the exact binary value."""
    return int(decimal.Decimal(x).to_integral_value(rounding=decimal.ROUND_HALF_UP))


def set_keep_reference(v: np.ndarray, zeta: float) -> np.ndarray:
    """SET's keep mask (``training.set_keep``): drop round(zeta P) of the P positive values nearest
    zero and round(zeta N) of the N negative ones (ties: the lower index), and every zero."""
    keep = np.zeros(v.size, bool)
    for sign in (v > 0, v < 0):
        idx = np.flatnonzero(sign)
        order = idx[np.argsort(np.abs(v[idx]), kind="stable")]
        keep[order[_llround(zeta * float(idx.size)):]] = True
    return keep


# -------------------------------------------------------------------------- checks
def entry_keys(W: SparseWeight) -> np.ndarray:
    """Each stored entry's position ``row * cols + col``, in CSR order: compare the patterns of
    two weights, or find where an update pruned and regrew."""
    row, col, _ = W.coo()
    return (row.cpu() * W.shape[1] + col.cpu()).numpy()


def value_by_key(W: SparseWeight) -> dict:
    """``{entry_keys(W)[k]: value k}``: what a topology update must keep at the surviving positions."""
    return dict(zip(entry_keys(W).tolist(), W.values.detach().cpu().tolist()))


def _check(ok: bool, message) -> None:
    if not ok:
        raise AssertionError(message)


def check_invariants(W: SparseWeight, nnz: int | None = None) -> None:
    """``W.validate()`` (sorted, unique, in-range columns), ``nnz`` stored entries if given, and a
    transposed index equal to scipy's CSC of the same matrix: what every topology update must
    leave behind."""
    W.validate()
    if nnz is not None:
        _check(W.nnz == nnz, f"nnz is {W.nnz}, expected {nnz}")
    csc = W.to_scipy().tocsc()
    csc.sort_indices()
    _check(np.array_equal(W.csc_ptr.cpu().numpy(), csc.indptr), "csc_ptr differs from scipy's CSC")
    _check(np.array_equal(W.csc_row.cpu().numpy(), csc.indices), "csc_row differs from scipy's CSC")
    values = W.values.detach().cpu()
    values = values.float() if values.element_size() == 2 else values  # as to_scipy() converts them
    _check(np.array_equal(values.numpy()[W.csc_perm.cpu().numpy()], csc.data),
           "csc_perm does not put the values in scipy's CSC order")


def assert_bit_equal(a, b, where: str = "state") -> None:
    """Nested dicts, lists and tuples of tensors and numbers exactly equal: the same types, keys
    in the same order, tensors of the same dtype, shape and device whose elements compare equal
    (``torch.equal``), numbers equal (a float NaN equals a float NaN). The message names the first
    difference by its path from ``where``, e.g. ``state['opt'][0]``. For a resumed run against
    the run made in one go (model, optimizer and controller state dicts)."""
    if isinstance(a, torch.Tensor):
        _check(isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape,
               f"{where}: {_describe(a)} vs {_describe(b)}")
        _check(a.device == b.device and torch.equal(a, b), f"{where}: tensors differ")
    elif isinstance(a, dict):
        _check(isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {_describe(b)}")
        for k in a:
            assert_bit_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        _check(type(a) is type(b) and len(a) == len(b), f"{where}: {_describe(a)} vs {_describe(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        _check(isinstance(b, float) and math.isnan(b), f"{where}: nan vs {b!r}")
    else:
        _check(type(a) is type(b) and a == b, f"{where}: {a!r} vs {b!r}")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor {x.dtype} {tuple(x.shape)} on {x.device}"
    if isinstance(x, dict):
        return f"keys {list(x)}"
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__} of {len(x)}"
    return repr(x)


# ---------------------------------------------------------------------------- threads
@contextlib.contextmanager
def num_threads(n: int):
    """torch's intra-op threads (the kernels' OpenMP team) set to ``n`` for the block, restored
    after: for tests that compare results on 1 and 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- memory
class TensorMemoryTrace:
    """The CPU tensor memory of a block of code, byte for byte, from torch's own allocator: the
    allocations and frees that ``torch.profiler`` records with ``profile_memory=True`` (every
    tensor of the CPU allocator, the kernels' temporaries included), summed in time order. It does
    not depend on glibc's malloc (which keeps freed blocks and maps large ones afresh, so the
    resident size says as much about malloc as about the tensors). Only tensors made inside the
    trace count (a free is matched to its allocation by address), so build what you measure
    inside it::

        with TensorMemoryTrace() as trace:
            model, opt = build()
            step()                          # warm-up: transposed index, optimizer state
            with trace.phase("forward"):
                ...
        trace.peak("forward")               # bytes live at the phase's high-water mark

    (:mod:`sparse_engine.memory` is checked against it: tests/test_memory_model.py)."""

    def __init__(self):
        self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        self._timeline: list[tuple[int, int]] = []   # (ns, live bytes after the event)
        self._phases: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> "TensorMemoryTrace":
        self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._prof.__exit__(*exc)
        allocs, todo = [], list(self._prof.profiler.kineto_results.experimental_event_tree())
        allocation = torch._C._profiler._EventType.Allocation
        while todo:
            e = todo.pop()
            todo.extend(e.children)
            if e.tag == allocation:
                f = e.extra_fields
                if f.device.type == "cpu":
                    allocs.append((e.start_time_ns, f.ptr, f.alloc_size))
            elif e.name.startswith("trace:"):
                self._phases[e.name[len("trace:"):]] = (e.start_time_ns, e.end_time_ns)
        live, sizes, timeline = 0, {}, []
        for t, ptr, nbytes in sorted(allocs):
            if nbytes > 0:
                sizes[ptr] = nbytes
            elif sizes.pop(ptr, None) is None:
                continue  # made before the trace
            live += nbytes
            timeline.append((t, live))
        self._timeline = timeline

    def phase(self, name: str):
        """A block whose peak :meth:`peak` reports under ``name``."""
        return torch.profiler.record_function("trace:" + name)

    def peak(self, name: str | None = None) -> int:
        """Bytes live at the high-water mark of phase ``name`` (None: of the whole trace), counted
        from the trace's start."""
        if name is None:
            return max((live for _, live in self._timeline), default=0)
        if name not in self._phases:
            raise KeyError(f"no phase {name!r} was traced; phases: {sorted(self._phases)}")
        start, end = self._phases[name]
        before = [live for t, live in self._timeline if t < start]
        inside = [live for t, live in self._timeline if start <= t <= end]
        return max(before[-1:] + inside, default=0)
