"""Malformed input never reaches a kernel: every operator of ``torch.ops.sparse_engine`` called
with one property of a valid call broken at a time.

The answer is one ValueError (TypeError for a wrong dtype) whose message names the argument, or,
where the broken input still describes a result, that result:

* the products and the ops that copy entries one by one (spmm, spmm_t, sddmm, the fused steps,
  transpose_index, compact, gather_csr) take a pattern's entries in any order and sum repeated
  ones, like torch's uncoalesced COO tensors: checked against a float64 dense reference (or the
  same op on the coalesced pattern);
* the ops whose result depends on sorted, unique columns in each row (random_empty, merge,
  grad_topk, rewire, pattern_bits, scatter_csr, the analysis) refuse anything else.

What every op refuses: a wrong dtype or dimension, row_ptr not starting at 0, not ending at nnz or
decreasing anywhere, a column (or row of the transposed index, or csc_perm entry) out of range,
values of another length, sizes past what the op can hold. The Python kernels registered for
CUDA and as the fallback of other devices (kernels/topology_torch.py, densify_torch.py) answer the
same cases on CPU tensors alike. A read out of bounds that does not crash is seen by `make asan`,
which runs this file under AddressSanitizer + UndefinedBehaviorSanitizer. Where each check lives
and what it costs: docs/architecture.md ("Malformed input").
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

import pytest
import torch

import sparse_engine  # noqa: F401  (loads the operators)
from sparse_engine.kernels import densify_torch, topology_torch
from sparse_engine.kernels.constants import GATES, SAVED_ACTS
from sparse_engine.testing import randn, weight_with_row_lengths

OPS = torch.ops.sparse_engine
B = 3
I32_MAX = 2**31 - 1


# ------------------------------------------------------------------------ patterns
class Index(NamedTuple):
    """A sparse operand as the ops take it: CSR, transposed index, values, and the column count."""
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    csc_ptr: torch.Tensor
    csc_row: torch.Tensor
    csc_perm: torch.Tensor
    values: torch.Tensor
    n_cols: int

    @property
    def rows(self) -> int:
        return self.row_ptr.numel() - 1

    @property
    def five(self):
        return self.row_ptr, self.col_idx, self.csc_ptr, self.csc_row, self.csc_perm


def entry_rows(ptr: torch.Tensor, nnz: int) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr.diff(), output_size=nnz)


def transposed(row_ptr, col_idx, n_cols):
    """The transposed index written here (a stable sort by column), for any order of the columns."""
    perm = torch.argsort(col_idx.long(), stable=True)
    csc_ptr = torch.zeros(n_cols + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(col_idx.long(), minlength=n_cols), 0, out=csc_ptr[1:])
    return csc_ptr, entry_rows(row_ptr, col_idx.numel())[perm].int(), perm.int()


def make_index(row_ptr, col_idx, values, n_cols) -> Index:
    return Index(row_ptr, col_idx, *transposed(row_ptr, col_idx, n_cols), values, n_cols)


def pattern(rows: int, cols: int, seed: int = 0, dtype=torch.float64) -> Index:
    """rows x cols with row lengths 2, 0, 3, 1, 4, 2, ... (capped at cols): row 0 holds two entries,
    row 1 none, so the mutations below always find what they change."""
    lengths = [min(cols, (2, 0, 3, 1, 4, 2)[i % 6]) for i in range(rows)]
    W = weight_with_row_lengths(lengths, cols, dtype=dtype, seed=seed)
    return make_index(W.row_ptr.clone(), W.col_idx.clone(), W.values.detach().clone(), cols)


def coo(ix: Index, side: str):
    """(rows, cols, values) of the entries the index `side` ("csr" or "csc") describes."""
    if side == "csr":
        return entry_rows(ix.row_ptr, ix.col_idx.numel()), ix.col_idx.long(), ix.values
    cols = entry_rows(ix.csc_ptr, ix.csc_row.numel())
    return ix.csc_row.long(), cols, ix.values[ix.csc_perm.long()]


def dense_of(ix: Index, side: str = "csr") -> torch.Tensor:
    r, c, v = coo(ix, side)
    return torch.zeros(ix.rows, ix.n_cols, dtype=torch.float64).index_put_((r, c), v.double(), accumulate=True)


def coalesced(ix: Index, side: str = "csr") -> Index:
    """The valid index (sorted, unique columns) of the matrix `ix` describes, repeated entries summed."""
    r, c, v = coo(ix, side)
    key, inverse = torch.unique(r * ix.n_cols + c, return_inverse=True)
    vals = torch.zeros(key.numel(), dtype=v.dtype).index_add_(0, inverse, v)
    row_ptr = torch.zeros(ix.rows + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(key // ix.n_cols, minlength=ix.rows), 0, out=row_ptr[1:])
    return make_index(row_ptr, (key % ix.n_cols).int(), vals, ix.n_cols)


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same entries in a non-contiguous view."""
    return torch.stack([t, t], 1)[:, 0] if t.dim() == 1 else t.t().contiguous().t()


# ------------------------------------------------------------------------ mutations
# One property of a compressed index (ptr, idx: row_ptr/col_idx, or csc_ptr/csc_row) or of the
# values broken. Each returns the new index and what it breaks: "order" (entries out of order or
# repeated: a result for the order-free ops), "same" (a result equal to the valid call's), or the
# (exception, regex) to expect, the regex naming the argument ({ptr}/{idx} filled in).
class Mutation(NamedTuple):
    name: str
    change: Callable
    expect: object


def _set(t, pos, value):
    t = t.clone()
    t[pos] = value
    return t


def _ptr(ptr, idx, n_src, f):
    return f(ptr.clone()), idx


def _swap01(idx):
    idx = idx.clone()
    idx[[0, 1]] = idx[[1, 0]]
    return idx


RANGE = (ValueError, r"{idx} entry -?\d+ \(position \d+\) out of range \[0, \d+\)")
ENDS = (ValueError, r"{ptr} must start at 0 and end at nnz")
DROP = (ValueError, r"{ptr} must (be non-decreasing|start at 0)")

INDEX_MUTATIONS = [
    Mutation("unsorted", lambda p, i, n: (p, _swap01(i)), "order"),
    Mutation("duplicate", lambda p, i, n: (p, _set(i, 1, int(i[0]))), "order"),
    Mutation("negative entry", lambda p, i, n: (p, _set(i, -1, -1)), RANGE),
    Mutation("entry = n", lambda p, i, n: (p, _set(i, -1, n)), RANGE),
    Mutation("entry 2^31-1", lambda p, i, n: (p, _set(i, 0, I32_MAX)), RANGE),
    Mutation("ptr[0] = 1", lambda p, i, n: (_set(p, 0, 1), i), ENDS),
    Mutation("ptr[-1] = nnz+1", lambda p, i, n: (_set(p, -1, i.numel() + 1), i), ENDS),
    Mutation("ptr past nnz", lambda p, i, n: (_set(p, 1, i.numel() + 1000), i), DROP),
    Mutation("negative ptr", lambda p, i, n: (_set(p, 1, -5), i), DROP),
    Mutation("decreasing ptr", lambda p, i, n: (_set(p, 1, int(p[2]) + 1), i), DROP),
    Mutation("idx one short", lambda p, i, n: (p, i[:-1]), (ValueError, r"{ptr}|{idx}|nnz")),
    Mutation("ptr int32", lambda p, i, n: (p.int(), i), (TypeError, r"{ptr} must be int64")),
    Mutation("idx int64", lambda p, i, n: (p, i.long()), (TypeError, r"{idx} must be int32")),
    Mutation("idx float", lambda p, i, n: (p, i.float()), (TypeError, r"{idx} must be int32")),
    Mutation("ptr 2-D", lambda p, i, n: (p.view(1, -1), i), (ValueError, r"{ptr} must be 1-D")),
    Mutation("no ptr entries", lambda p, i, n: (p[:0], i), (ValueError, r"{ptr} must be 1-D with")),
    Mutation("non-contiguous", lambda p, i, n: (strided(p), strided(i)), "same"),
]
VALUE_MUTATIONS = [
    Mutation("values one short", lambda v: v[:-1], (ValueError, r"values must be 1-D with nnz=")),
    Mutation("values int64", lambda v: v.long(), (TypeError, r"values must")),
    Mutation("values 2-D", lambda v: v.view(1, -1), (ValueError, r"values must be 1-D")),
    Mutation("non-contiguous values", strided, "same"),
]


# ------------------------------------------------------------------------ the ops
class Op(NamedTuple):
    """An op with a sparse operand: its pattern's shape, which index it reads ("csr", or "csc" for
    the transposed one), whether it takes values, how to call it on an Index, and for an order-free
    op the check of its result on an index in any order (None: the op refuses such an index)."""
    name: str
    shape: tuple
    reads: str
    call: Callable
    check: Callable | None
    takes_values: bool = True


def close(a, b, what=""):
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-9, atol=1e-9, msg=what)


def _X(rows, seed=1):
    return randn(rows, B, seed=seed)


def _unread(ix: Index) -> Index:
    """The transposed index replaced by one of the right sizes that the op does not read (its CSR
    may be broken, so no transpose of it exists)."""
    nnz = ix.col_idx.numel()
    ptr = torch.zeros(ix.n_cols + 1, dtype=torch.int64)
    ptr[-1] = nnz
    return ix._replace(csc_ptr=ptr, csc_row=torch.zeros(nnz, dtype=torch.int32),
                       csc_perm=torch.arange(nnz, dtype=torch.int32))


def _step_args(mode: str, H: int, backward: bool):
    """The dense operands of a step op after W_hh (any numbers: the kernels only read them)."""
    if not backward:
        return {"LSTM": (_X(4 * H, 2), _X(H, 3), _X(H, 4)), "GRU": (_X(3 * H, 2), _X(H, 3), _X(3 * H, 4)[:, 0].clone()),
                "RNN_TANH": (_X(H, 2), _X(H, 3), False), "CTRNN": (_X(H, 2), _X(H, 3), 0.1, 1.0)}[mode]
    acts = _X(SAVED_ACTS[mode] * H, 5).tanh() if SAVED_ACTS[mode] else None
    return {"LSTM": (acts, _X(H, 3), _X(H, 4), _X(H, 6), _X(H, 7)), "GRU": (acts, _X(H, 3), _X(H, 6)),
            "RNN_TANH": (_X(H, 3).tanh(), _X(H, 6), False), "CTRNN": (acts, _X(H, 6), 0.1, 1.0)}[mode]


def _w_hh_op(name: str, mode: str, backward: bool, args: tuple) -> Op:
    """An op whose sparse operand is W_hh of ``mode`` at hidden 3 (the step and sequence ops): the
    forward reads its CSR, the backward its transposed index; order-free (checked against the same op
    on the coalesced matrix)."""
    op = getattr(OPS, name)

    def call(ix):
        if not backward:
            ix = _unread(ix)
        return op(*ix.five, ix.values, *args)

    def check(out, ix):
        ref = coalesced(ix, "csc" if backward else "csr")
        for a, b in zip(out, op(*ref.five, ref.values, *args)):
            if isinstance(a, torch.Tensor) and a.numel():
                close(a, b, f"{name} {mode}")

    return Op(name, (GATES[mode] * 3, 3), "csc" if backward else "csr", call, check)


def _step_op(name: str, mode: str, backward: bool) -> Op:
    return _w_hh_op(name, mode, backward, _step_args(mode, 3, backward))


def _seq_op(mode: str, backward: bool) -> Op:
    """rnn_sequence(_backward) of ``mode`` over 2 steps; W_hh is read like the step ops read it."""
    H, T = 3, 2
    lstm, saved = mode == "LSTM", SAVED_ACTS[mode] > 0

    def steps(rows, seed):
        return _X(rows * T, seed).view(rows, T, B)

    if not backward:
        args = (mode, steps(GATES[mode] * H, 2), _X(H, 3), _X(H, 4) if lstm else None,
                _X(3 * H, 5)[:, 0].clone() if mode == "GRU" else None, True)
    else:
        sequence = lambda rows, seed: steps(rows, seed).permute(1, 0, 2).contiguous().tanh()  # noqa: E731
        args = (mode, sequence(H, 2), _X(H, 3), _X(H, 4) if lstm else None, sequence(H, 5) if lstm else None,
                sequence(SAVED_ACTS[mode] * H, 6).sigmoid() if saved else None, sequence(H, 7), _X(H, 8),
                _X(H, 9) if lstm else None, True)
    return _w_hh_op("rnn_sequence_backward" if backward else "rnn_sequence", mode, backward, args)


def _compact_check(out, ix):
    keep = _keep(ix)
    r, c, v = coo(ix, "csr")
    kept = torch.nonzero(keep).squeeze(1)
    row_ptr = torch.zeros(ix.rows + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(r[kept], minlength=ix.rows), 0, out=row_ptr[1:])
    for a, b in zip(out, (row_ptr, c[kept].int(), v[kept], kept)):
        assert torch.equal(a, b)


def _keep(ix):
    return torch.arange(ix.col_idx.numel()) % 3 != 1


def _new_entry(ix):
    """One position of the empty row 1, as merge takes new entries."""
    return torch.tensor([1]), torch.tensor([0], dtype=torch.int32), torch.zeros(1, dtype=ix.values.dtype)


def _rewire_args(ix):
    """After (row_ptr, col_idx, values): n_cols, keep, no given positions, no G/X (random growth of 2),
    seed, tiles, sample_factor, keep_regrown, and one per-entry tensor to carry."""
    return (ix.n_cols, _keep(ix), None, None, None, None, 2, 5, 2, 2, 0, False, [torch.arange(ix.col_idx.numel())])


def _triad_census(ix):
    return OPS.signed_triad_census(ix.row_ptr, ix.col_idx, ix.values)


def _scatter(kernel):
    def call(ix):
        dense = torch.zeros(max(ix.rows, 0), ix.n_cols, dtype=torch.float64)
        kernel(ix.row_ptr, ix.col_idx, ix.values, dense)
        return dense
    return call


def _dense(ix):
    return _X(max(ix.rows, 0), 8)[:, :1] + torch.arange(ix.n_cols)  # rows x n_cols, float64


def _gather(kernel):
    return lambda ix: kernel(ix.row_ptr, ix.col_idx, _dense(ix))


def _gather_check(out, ix):
    r, c, _ = coo(ix, "csr")
    close(out, _dense(ix)[r, c])


R, C = 6, 5
TOPO, DENS = topology_torch.OPS, densify_torch.OPS

SPARSE_OPS = [
    Op("spmm", (R, C), "csr", lambda ix: OPS.spmm(*_unread(ix).five, ix.values, _X(C)),
       lambda out, ix: close(out, dense_of(ix) @ _X(C))),
    Op("spmm_t", (R, C), "csc", lambda ix: OPS.spmm_t(*ix.five, ix.values, _X(R)),
       lambda out, ix: close(out, dense_of(ix, "csc").t() @ _X(R))),
    Op("sddmm", (R, C), "csr", lambda ix: OPS.sddmm(*_unread(ix).five, _X(R), _X(C)),
       lambda out, ix: close(out, (_X(R) @ _X(C).t())[coo(ix, "csr")[:2]]), takes_values=False),
    Op("transpose_index", (R, C), "csr", lambda ix: OPS.transpose_index(ix.row_ptr, ix.col_idx, ix.n_cols),
       lambda out, ix: [close(a, b) for a, b in zip(out, transposed(ix.row_ptr, ix.col_idx, ix.n_cols))],
       takes_values=False),
    *[_step_op(f"{p}_step{'_backward' if bw else ''}", mode, bw)
      for p, mode in (("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "RNN_TANH"), ("ctrnn", "CTRNN"))
      for bw in (False, True)],
    *[_seq_op(mode, bw) for mode in ("LSTM", "GRU", "RNN_RELU") for bw in (False, True)],
    Op("compact", (R, C), "csr", lambda ix: OPS.compact(ix.row_ptr, ix.col_idx, ix.values, _keep(ix)),
       _compact_check),
    Op("random_empty", (R, C), "csr", lambda ix: OPS.random_empty(ix.row_ptr, ix.col_idx, ix.n_cols, 4, 7), None,
       takes_values=False),
    Op("merge", (R, C), "csr", lambda ix: OPS.merge(ix.row_ptr, ix.col_idx, ix.values, ix.n_cols, *_new_entry(ix)),
       None),
    Op("grad_topk", (R, C), "csr", lambda ix: OPS.grad_topk(ix.row_ptr, ix.col_idx, _X(R), _X(C), 3, 2, 2), None,
       takes_values=False),
    Op("rewire", (R, C), "csr", lambda ix: OPS.rewire(ix.row_ptr, ix.col_idx, ix.values, *_rewire_args(ix)), None),
    Op("pattern_bits", (R, C), "csr", lambda ix: OPS.pattern_bits(ix.row_ptr, ix.col_idx, ix.n_cols), None,
       takes_values=False),
    Op("scatter_csr", (R, C), "csr", _scatter(OPS.scatter_csr), None),
    Op("gather_csr", (R, C), "csr", _gather(OPS.gather_csr), _gather_check, takes_values=False),
    Op("signed_triad_census", (R, R), "csr", _triad_census, None),
    Op("transitive_semicycles", (R, R), "csr", lambda ix: OPS.transitive_semicycles(ix.row_ptr, ix.col_idx,
                                                                                     ix.values, 15), None),
    # the Python kernels (CUDA and every other device), on CPU tensors
    Op("py:compact", (R, C), "csr", lambda ix: TOPO["compact"](ix.row_ptr, ix.col_idx, ix.values, _keep(ix)),
       _compact_check),
    Op("py:random_empty", (R, C), "csr", lambda ix: TOPO["random_empty"](ix.row_ptr, ix.col_idx, ix.n_cols, 4, 7),
       None, takes_values=False),
    Op("py:merge", (R, C), "csr", lambda ix: TOPO["merge"](ix.row_ptr, ix.col_idx, ix.values, ix.n_cols,
                                                           *_new_entry(ix)), None),
    Op("py:grad_topk", (R, C), "csr", lambda ix: TOPO["grad_topk"](ix.row_ptr, ix.col_idx, _X(R), _X(C), 3, 2, 2),
       None, takes_values=False),
    Op("py:rewire", (R, C), "csr", lambda ix: TOPO["rewire"](ix.row_ptr, ix.col_idx, ix.values, *_rewire_args(ix)),
       None),
    Op("py:scatter_csr", (R, C), "csr", _scatter(DENS["scatter_csr"]), None),
    Op("py:gather_csr", (R, C), "csr", _gather(DENS["gather_csr"]), _gather_check, takes_values=False),
]


def assert_same(a, b):
    """Equal outputs (tensors bit for bit, sequences element by element)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def perturbed(out):
    """out with its first tensor's first entry changed."""
    if isinstance(out, torch.Tensor):
        out = out.clone()
        out.view(-1)[0] += 1
        return out
    first = next(i for i, t in enumerate(out) if isinstance(t, torch.Tensor) and t.numel())
    return [perturbed(t) if i == first else t for i, t in enumerate(out)]


def mutated(op: Op, m: Mutation) -> Index:
    ix = pattern(*op.shape)
    if m.name in {v.name for v in VALUE_MUTATIONS}:
        return ix._replace(values=m.change(ix.values))
    if op.reads == "csr":
        row_ptr, col_idx = m.change(ix.row_ptr, ix.col_idx, ix.n_cols)
        return ix._replace(row_ptr=row_ptr, col_idx=col_idx)
    csc_ptr, csc_row = m.change(ix.csc_ptr, ix.csc_row, ix.rows)
    return ix._replace(csc_ptr=csc_ptr, csc_row=csc_row)


def expectation(op: Op, m: Mutation):
    ptr, idx = ("row_ptr", "col_idx") if op.reads == "csr" else ("csc_ptr", "csc_row")
    if m.expect == "order":
        if op.check is not None:
            return "order"
        return ValueError, r"col_idx must be sorted and unique within each row: (unsorted|duplicate) column"
    if op.name.endswith("compact") and m.expect is RANGE and m.name != "negative entry":
        return "order"  # compact knows no column count: it copies the columns as they are
    if m.expect == "same":
        return "same"
    exc, regex = m.expect
    if op.reads == "csc" and m.name == "idx one short":
        regex = r"csc_row and csc_perm must have nnz="
    return exc, regex.format(ptr=ptr, idx=idx)


CASES = [(op, m) for op in SPARSE_OPS for m in INDEX_MUTATIONS + (VALUE_MUTATIONS if op.takes_values else [])]


@pytest.mark.parametrize("op,m", CASES, ids=[f"{op.name}-{m.name}" for op, m in CASES])
def test_a_broken_sparse_operand_is_refused_or_answered_right(op, m):
    ix = mutated(op, m)
    expect = expectation(op, m)
    if expect == "order":
        op.check(op.call(ix), ix)
    elif expect == "same":
        assert_same(op.call(ix), op.call(pattern(*op.shape)))
    else:
        exc, regex = expect
        with pytest.raises(exc, match=regex) as info:
            op.call(ix)
        assert "\n" not in str(info.value).strip(), "one line"


@pytest.mark.parametrize("op", [op for op in SPARSE_OPS if op.check], ids=lambda op: op.name)
def test_the_references_agree_with_the_ops_on_valid_input(op):
    """The checks above would pass a wrong answer if they agreed with anything."""
    ix = pattern(*op.shape)
    out = op.call(ix)
    op.check(out, ix)
    with pytest.raises(AssertionError):
        op.check(perturbed(out), ix)


# ------------------------------------------------------------------------ every other argument
def _bits(rows=R, cols=C):
    ix = pattern(rows, cols)
    return ix, OPS.pattern_bits(ix.row_ptr, ix.col_idx, cols)


def _expand(row_ptr=None, bits=None, values=None, dense=None):
    ix, b = _bits()
    OPS.expand_bits(ix.row_ptr if row_ptr is None else row_ptr, b if bits is None else bits,
                    ix.values if values is None else values,
                    torch.zeros(R, C, dtype=torch.float64) if dense is None else dense)


def _bits_past_columns():
    _, b = _bits()
    b = b.clone()
    b[0, 0] |= 1 << 7  # column 7 of a 5-column pattern
    return b


def _gru(gx=None, h0=None, w=None, b=None):
    T, Bt, H = 2, 2, 3
    OPS.gru_sequence(randn(T, Bt, 3 * H, seed=1) if gx is None else gx, randn(Bt, H, seed=2) if h0 is None else h0,
                     randn(3 * H, H, seed=3) if w is None else w, b, False)


def _gru_bw(dy=None, acts=None, y=None):
    T, Bt, H = 2, 2, 3
    OPS.gru_sequence_backward(randn(T, Bt, H, seed=1) if dy is None else dy,
                              randn(T, Bt, 4 * H, seed=2) if acts is None else acts,
                              randn(T, Bt, H, seed=3) if y is None else y, randn(Bt, H, seed=4),
                              randn(3 * H, H, seed=5), False, False)


def _swaps(src=None, dst=None, n=4, seeds=None):
    OPS.degree_preserving_swaps(torch.tensor([0, 1, 2], dtype=torch.int32) if src is None else src,
                                torch.tensor([1, 2, 3], dtype=torch.int32) if dst is None else dst, n, 10,
                                torch.tensor([1, 2]) if seeds is None else seeds)


def _sgd(param=None, buf=None, grad=None):
    OPS.sgd_step(torch.zeros(4) if param is None else param, torch.zeros(4) if buf is None else buf,
                 torch.ones(4) if grad is None else grad, 0.1, 0.9, 0.0)


def _ix():
    return pattern(R, C)


def _big_tile(kernel):
    """A tile past any size (2^63 - 1): the same top-k as small tiles, no overflow. The gradients
    agree to rounding, not bit for bit: BLAS may sum a 2 x 2 tile's dot products in another order
    than a whole matrix's (seen on an Intel Xeon VM)."""
    ix = _ix()
    rows, cols, grads = kernel(ix.row_ptr, ix.col_idx, _X(R), _X(C), 3, 2**63 - 1, 2**63 - 1)
    rows2, cols2, grads2 = kernel(ix.row_ptr, ix.col_idx, _X(R), _X(C), 3, 2, 2)
    assert_same((rows, cols), (rows2, cols2))
    torch.testing.assert_close(grads, grads2, rtol=1e-12, atol=1e-12)


def _huge_sample_factor(kernel):
    """sample_factor * n_grow past int64: every empty position is a candidate (the exact growth)."""
    ix = _ix()
    args = list(_rewire_args(ix))
    args[4:6] = [_X(R), _X(C)]  # G, X
    args[10] = 2**62  # sample_factor
    got = kernel(ix.row_ptr, ix.col_idx, ix.values, *args)
    args[10] = 0
    assert_same(got, kernel(ix.row_ptr, ix.col_idx, ix.values, *args))


# (op, call, exception or None for "answers", regex naming the argument)
ARGUMENT_CASES = [
    ("select_smallest", lambda f: f(torch.arange(5), 2), TypeError, "scores must be float"),
    ("select_smallest", lambda f: f(torch.zeros(2, 2), 1), ValueError, "scores must be 1-D"),
    ("select_smallest", lambda f: f(torch.zeros(5), 2**62), ValueError, r"k must be in \[0, 5\]"),
    ("select_smallest", lambda f: f(torch.zeros(5), -1), ValueError, r"k must be in"),
    ("select_smallest", lambda f: f(torch.tensor([0.0, float("nan")]), 1), ValueError,
     "scores must not contain NaN"),
    ("set_prune", lambda f: f(torch.arange(4), 0.5), TypeError, "values must be float"),
    ("set_prune", lambda f: f(torch.ones(4), float("nan")), ValueError, r"zeta must be in \[0, 1\]"),
    ("set_prune", lambda f: f(torch.ones(4), 1.5), ValueError, r"zeta must be in \[0, 1\]"),
    ("remap_index", lambda f: f(torch.arange(3).int(), torch.arange(3), 4), TypeError, "kept_pos"),
    ("remap_index", lambda f: f(torch.arange(3), torch.arange(2), 4), ValueError, "same length"),
    ("remap_index", lambda f: f(torch.arange(3), torch.tensor([0, 1, 4]), 4), ValueError,
     r"old_pos entries must be in \[0, new_nnz=4\)"),
    ("remap_index", lambda f: f(torch.arange(3), torch.tensor([0, -1, 2]), 4), ValueError, "old_pos"),
    ("remap_index", lambda f: f(torch.arange(0), torch.arange(0), -1), ValueError, "new_nnz must be >= 0"),
    ("gather_or_zero", lambda f: f(torch.ones(3), torch.tensor([0, 1], dtype=torch.int32)),
     TypeError, "origin must be int64"),
    ("gather_or_zero", lambda f: f(torch.ones(3), torch.tensor([0, 3])), ValueError,
     r"origin entries must be < 3"),
    ("gather_or_zero", lambda f: f(torch.tensor(1.0), torch.tensor([0])), ValueError, "t must have"),
    ("coo_dot", lambda f: f(torch.tensor([0]).int(), torch.tensor([0]).int(), _X(2), _X(2)), TypeError,
     "rows must be int64"),
    ("coo_dot", lambda f: f(torch.tensor([0]), torch.tensor([0]), _X(2), _X(2)), TypeError,
     "cols must be int32"),
    ("coo_dot", lambda f: f(torch.tensor([2]), torch.tensor([0]).int(), _X(2), _X(2)), ValueError,
     "rows out of range"),
    ("coo_dot", lambda f: f(torch.tensor([0]), torch.tensor([-1]).int(), _X(2), _X(2)), ValueError,
     "cols out of range"),
    ("coo_dot", lambda f: f(torch.tensor([0]), torch.tensor([0]).int(), _X(2).long(), _X(2)), TypeError,
     "G must be float"),
    ("coo_dot", lambda f: f(torch.tensor([0]), torch.tensor([0]).int(), _X(2), _X(2).float()), TypeError,
     "X must have the dtype of G"),
    ("transpose_index", lambda f: f(_ix().row_ptr, _ix().col_idx, 2**40), ValueError,
     r"n_cols must be in \[0, 2\^31\)"),
    ("transpose_index", lambda f: f(_ix().row_ptr, _ix().col_idx, -1), ValueError, "n_cols must"),
    ("random_empty", lambda f: f(_ix().row_ptr, _ix().col_idx, 2**40, 1, 0), ValueError, "n_cols must"),
    ("random_empty", lambda f: f(_ix().row_ptr, _ix().col_idx, C, 2**62, 0), ValueError,
     "cannot grow"),
    ("random_empty", lambda f: f(_ix().row_ptr, _ix().col_idx, C, -1, 0), ValueError, "n must be >= 0"),
    ("merge", lambda f: f(_ix().row_ptr, _ix().col_idx, _ix().values, 2**40, *_new_entry(_ix())), ValueError,
     "n_cols must"),
    ("merge", lambda f: f(_ix().row_ptr, _ix().col_idx, _ix().values, C, torch.tensor([R]),
                                torch.tensor([0], dtype=torch.int32), torch.zeros(1, dtype=torch.float64)),
     ValueError, r"new entry 0 at \(6, 0\) is outside"),
    ("merge", lambda f: f(_ix().row_ptr, _ix().col_idx, _ix().values, C, *_new_entry(_ix())[:2],
                                torch.zeros(1)), TypeError, "new_values must have dtype"),
    ("grad_topk", lambda f: f(_ix().row_ptr, _ix().col_idx, _X(R), _X(C), 2**62, 2, 2), ValueError,
     r"k must be in \[0, "),
    ("grad_topk", lambda f: f(_ix().row_ptr, _ix().col_idx, _X(R), _X(C), 1, 0, 2), ValueError,
     "tile_rows and tile_cols must be > 0"),
    ("grad_topk", lambda f: f(_ix().row_ptr, _ix().col_idx, _X(R + 1), _X(C), 1, 2, 2), ValueError,
     "G must be 2-D with rows=6"),
    ("grad_topk", lambda f: _big_tile(f), None, None),
    ("rewire", lambda f: f(_ix().row_ptr, _ix().col_idx, _ix().values, *_rewire_args(_ix())[:1],
                                  torch.ones(3, dtype=torch.bool), *_rewire_args(_ix())[2:]), ValueError,
     "keep must be 1-D with nnz="),
    ("rewire", lambda f: f(_ix().row_ptr, _ix().col_idx, _ix().values, 2**40, *_rewire_args(_ix())[1:]),
     ValueError, "n_cols must"),
    ("rewire", lambda f: f(_ix().row_ptr, _ix().col_idx, _ix().values, *_rewire_args(_ix())[:-1],
                                  [torch.ones(3)]), ValueError, r"carry\[0\] must have first dimension nnz="),
    ("rewire", lambda f: _huge_sample_factor(f), None, None),
    ("pattern_bits", lambda f: f(_ix().row_ptr, _ix().col_idx, 2**40), ValueError, "n_cols must"),
    ("pattern_bits", lambda f: f(_ix().row_ptr, _ix().col_idx, -3), ValueError, "n_cols must"),
    ("expand_bits", lambda f: _expand(row_ptr=_ix().row_ptr.int()), TypeError, "row_ptr must be int64"),
    ("expand_bits", lambda f: _expand(row_ptr=_set(_ix().row_ptr, 1, 3)), ValueError,
     "bits must hold as many entries per row as row_ptr"),
    ("expand_bits", lambda f: _expand(row_ptr=_set(_ix().row_ptr, 0, 1)), ValueError, "row_ptr must start at 0"),
    ("expand_bits", lambda f: _expand(bits=_bits_past_columns()), ValueError, "bits must have no bit at a column >= 5"),
    ("expand_bits", lambda f: _expand(bits=_bits()[1][:, :0]), ValueError, "bits must be contiguous of shape"),
    ("expand_bits", lambda f: _expand(bits=_bits()[1].int()), TypeError, "bits must be int16"),
    ("expand_bits", lambda f: _expand(values=_ix().values[:-1]), ValueError, "values must be 1-D with nnz="),
    ("expand_bits", lambda f: _expand(values=_ix().values.float()), TypeError, "values must have dense's dtype"),
    ("expand_bits", lambda f: _expand(dense=torch.zeros(C, R, dtype=torch.float64).t()), ValueError,
     "dense must have unit column stride"),
    ("compress_bits", lambda f: f(_ix().row_ptr, _bits_past_columns(),
                                                torch.zeros(R, C, dtype=torch.float16)),
     ValueError, "bits must have no bit at a column >= 5"),
    ("compress_bits", lambda f: f(_set(_ix().row_ptr, 2, 7), _bits()[1], torch.zeros(R, C)),
     ValueError, "bits must hold as many entries per row as row_ptr"),
    ("same_bytes", lambda f: f(torch.zeros(2), torch.zeros(3)), None, None),
    ("scatter_csr", lambda f: f(_ix().row_ptr, _ix().col_idx, _ix().values, torch.zeros(R, C)),
     TypeError, "values must have dense's dtype"),
    ("scatter_csr", lambda f: f(_ix().row_ptr, _ix().col_idx, _ix().values,
                                            torch.zeros(R + 1, C, dtype=torch.float64)), ValueError,
     "dense must be 2-D with rows=6"),
    ("gather_csr", lambda f: f(_ix().row_ptr, _ix().col_idx, torch.zeros(R, C - 2)), ValueError,
     r"col_idx entry \d+ \(position \d+\) out of range \[0, 3\)"),
    ("gru_sequence", lambda f: _gru(gx=randn(2, 2, 9, seed=1).long()), TypeError, "gx must be float"),
    ("gru_sequence", lambda f: _gru(h0=randn(3, seed=2)), ValueError, "h0 must be 2-D"),
    ("gru_sequence", lambda f: _gru(w=randn(9, 4, seed=3)), ValueError, r"w_hh must have shape \(9, 3\)"),
    ("gru_sequence", lambda f: _gru(b=randn(8, seed=3)), ValueError, "b_hh must be 1-D with"),
    ("gru_sequence_backward", lambda f: _gru_bw(y=randn(2, 2, 3, seed=3).long()), TypeError, "y must be float"),
    ("gru_sequence_backward", lambda f: _gru_bw(dy=randn(2, 2, 4, seed=3)), ValueError, "dy must have y's shape"),
    ("gru_sequence_backward", lambda f: _gru_bw(acts=randn(2, 2, 11, seed=3)), ValueError, "acts must"),
    ("degree_preserving_swaps", lambda f: _swaps(src=torch.tensor([0, 1, 2])), TypeError, "src and dst must be int32"),
    ("degree_preserving_swaps", lambda f: _swaps(dst=torch.tensor([1, 2], dtype=torch.int32)), ValueError,
     "src and dst must be 1-D of equal length"),
    ("degree_preserving_swaps", lambda f: _swaps(src=torch.tensor([0, 1, 4], dtype=torch.int32)), ValueError,
     r"src entries must be in \[0, n=4\)"),
    ("degree_preserving_swaps", lambda f: _swaps(dst=torch.tensor([1, -2, 3], dtype=torch.int32)), ValueError,
     r"dst entries must be in \[0, n=4\)"),
    ("degree_preserving_swaps", lambda f: _swaps(n=2**62), ValueError, r"n must be in \[0, 2\^31\]"),
    ("degree_preserving_swaps", lambda f: _swaps(n=-1), ValueError, "n must be in"),
    ("degree_preserving_swaps", lambda f: _swaps(seeds=torch.tensor([1]).int()), TypeError, "seeds must be int64"),
    ("relu_dropout", lambda f: f(torch.zeros(4, 4).t(), 0.5, 1), ValueError, "z must be contiguous"),
    ("relu_dropout", lambda f: f(torch.zeros(4), 1.0, 1), ValueError, r"p must be in \[0, 1\)"),
    ("relu_dropout", lambda f: f(torch.zeros(4), float("nan"), 1), ValueError, r"p must be in"),
    ("relu_dropout", lambda f: f(torch.zeros(4), 0.5, 1, float("inf")), ValueError, "scale must be finite"),
    ("relu_dropout", lambda f: f(torch.zeros(4, dtype=torch.int64), 0.5, 1), TypeError,
     "z must be float32 or float64"),
    ("sgd_step", lambda f: _sgd(param=torch.zeros(4, 4).t()[0]), ValueError, "must be contiguous"),
    ("sgd_step", lambda f: _sgd(buf=torch.zeros(5)), ValueError, "must have one shape"),
    ("sgd_step", lambda f: _sgd(grad=torch.ones(4, dtype=torch.float64)), TypeError, "must have one dtype"),
    ("sgd_step", lambda f: _sgd(torch.zeros(4).long(), torch.zeros(4).long(), torch.ones(4).long()), TypeError,
     "param must be float32 or float64"),
]


PYTHON_KERNELS = {**topology_torch.OPS, **densify_torch.OPS}
KERNEL_CASES = [(name, kernel, *rest) for name, *rest in ARGUMENT_CASES
                for kernel in [getattr(OPS, name)] + ([PYTHON_KERNELS[name]] if name in PYTHON_KERNELS else [])]


@pytest.mark.parametrize("op,kernel,call,exc,regex", KERNEL_CASES,
                         ids=[f"{c[0]}{'' if isinstance(c[1], torch._ops.OpOverloadPacket) else '-py'}-{i}"
                              for i, c in enumerate(KERNEL_CASES)])
def test_every_other_bad_argument_is_refused_naming_it(op, kernel, call, exc, regex):
    """Each case through the C++ operator and, where it has one, the op's Python kernel."""
    if exc is None:
        call(kernel)  # answers (asserting its result itself)
        return
    with pytest.raises(exc, match=regex) as info:
        call(kernel)
    assert "\n" not in str(info.value).strip(), "one line"


def test_every_registered_operator_is_fuzzed():
    registered = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("sparse_engine::")}
    fuzzed = {op.name for op in SPARSE_OPS} | {case[0] for case in ARGUMENT_CASES}
    assert registered - fuzzed == set(), "add the new operator's cases to this file"
    assert {name.removeprefix("py:") for name in fuzzed if name.startswith("py:")} == \
        set(topology_torch.OPS) - {"select_smallest", "set_prune", "remap_index", "gather_or_zero", "coo_dot"} \
        | set(densify_torch.OPS)
