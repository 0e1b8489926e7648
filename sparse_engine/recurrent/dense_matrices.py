"""The dense path's matrices: each SparseWeight's values written into a dense matrix for one
forward (:func:`materialize_all`), differentiable with respect to the values only (the gradient of
the dense matrix is read back at the stored positions), with the buffers kept per weight and thread
between forwards. :mod:`.compute_paths` chooses the dense path and runs torch's recurrence on
these matrices."""
from __future__ import annotations

import threading
import weakref

import torch

from ..kernels.densify_torch import flat_positions
from ..sparse import SparseWeight
from ..sparse.weight import outside_inference_mode

_ops = torch.ops.sparse_engine

__all__ = ["materialize", "materialize_all"]

def materialize(w) -> torch.Tensor:
    """The dense matrix of a SparseWeight, differentiable with respect to its values only (the
    gradient of the dense matrix is read at the stored positions); a dense weight as it is.
    :func:`materialize_all` does a module's matrices in one go, and says how. The matrix is a
    buffer of this module's: read it, do not write it."""
    return materialize_all([w])[0]


def materialize_all(weights, into=None) -> list:
    """:func:`materialize` of each weight (SparseWeights and dense tensors) in one call; the
    matrices that need a gradient share one autograd node (one Python call forward and one
    backward per module, not per matrix). A dense weight is returned as it is.

    ``into``: zero-filled tensors, one per weight and of its shape (:func:`.cudnn_flat.views`: views
    of the one buffer cuDNN reads without a copy); each weight, dense ones too, is then written
    into its own and returned as an alias of it, differentiable as above (a dense weight's
    gradient passes unchanged).

    Each matrix is a buffer kept per weight and thread while its pattern stays (not allocated and
    faulted in again at each forward: a fresh zero-filled matrix per forward cost, at hidden 200,
    about as much again in page faults and in cache misses of torch's recurrence as the writing
    itself). It is reused only when nothing else holds it (the graph of an earlier forward that
    has not run its backward keeps its own, and a new buffer is made): each call lends it out
    through an alias whose storage says when the last holder let go (``_Entry.lend``). On the CPU the values are
    written with the pattern's bits (the op ``expand_bits``: whole rows, zeros included, 16
    columns at a time), elsewhere at the stored positions (``index_put_`` into zeros, at the
    positions checked once per pattern: no host synchronisation).

    A call without a gradient (inference, evaluation) skips the write when the buffer still holds
    what the last such call wrote and the values are, byte for byte, those it wrote then (the op
    ``same_bytes`` against a copy kept of them): a full comparison, so an update of any kind (in
    place, through ``.data``, which leaves the version counter as it is, a new ``.data``) is
    seen. What the buffer holds is known: only these ops write it, a call with a gradient or a
    new buffer forgets the kept copy, and a write through an alias of the buffer (what this
    function returns) moves the buffer's version counter, which is recorded after each write and
    compared too.
    """
    out = list(weights)
    entries = _entries()
    grad = torch.is_grad_enabled()
    positions, index, values_with_graph = [], [], []  # the matrices with a graph
    for i, w in enumerate(weights):
        if not isinstance(w, SparseWeight):
            if into is not None:  # a dense weight copied into its place
                into[i].copy_(w.detach())
                if grad and w.requires_grad:
                    positions.append(i)
                    index.append((None, None, None, into[i]))
                    values_with_graph.append(w)
                else:
                    out[i] = into[i]
            continue
        values, row_ptr, col_idx = w.parts()
        entry = entries.get(w)
        if entry is None or not entry.matches(row_ptr, col_idx):
            with outside_inference_mode():
                entry = entries[w] = _Entry(row_ptr, col_idx, w.shape[1])
        buf = entry.free_buffer(values, w.shape) if into is None else into[i]
        with_graph = grad and values.requires_grad
        entry.write(values.detach(), buf, keep=not with_graph and into is None)
        lent = entry.lend(buf) if into is None else buf
        if with_graph:
            positions.append(i)
            index.append((row_ptr, col_idx, entry.positions(buf), lent))
            values_with_graph.append(values)
        else:
            out[i] = lent
    if positions:
        dense = _ToDense.apply(tuple(index), *values_with_graph)
        for i, d in zip(positions, dense if len(positions) > 1 else (dense,)):
            out[i] = d
    return out


def _read(grad, row_ptr, col_idx, where) -> torch.Tensor:
    """The dense ``grad`` at the stored positions; ``where``: the pattern's bits (CPU), its flat
    positions (other devices: no check, no host synchronisation) or None (checked ``gather_csr``)."""
    if where is None:
        return _ops.gather_csr(row_ptr, col_idx, grad)
    if where.dtype == torch.int64:
        return torch.take(grad, where)
    return _ops.compress_bits(row_ptr, where, grad)


class _ToDense(torch.autograd.Function):
    """(index, *values) -> the buffers, each as a new alias (one tensor for one value tensor, else
    a tuple), where index holds per value tensor its (row_ptr, col_idx, where, buffer) (``where``:
    see :func:`_read`) and each buffer holds the matrix of its values when this is called (written by
    :func:`materialize_all`, or into zeros by ``scatter_csr``); differentiable with respect to
    the values. Its backward reads each gradient at the stored positions (:func:`_read`;
    :class:`_AtPattern` when the backward itself is differentiated, whose backward writes into
    zeros again, so double backward works); an output without a gradient gives its values none.
    An entry (None, None, None, buffer) is a dense weight copied into the buffer: its gradient
    passes as it is.

    The index travels as one non-tensor argument and the Function is of the ``forward(ctx, ...)``
    kind: ``Function.apply`` binds the arguments of a ``setup_context`` Function to
    ``forward``'s signature (``inspect.signature``) at every call and looks at every tensor
    argument, which cost more than the rest of the dense path's Python together."""

    @staticmethod
    def forward(ctx, index, *values):
        # index tensors: not part of any graph, kept as they are; the buffers are not kept (the
        # backward does not read them, and what holds a buffer decides when it is written again)
        ctx.index = tuple(item[:3] for item in index)
        ctx.set_materialize_grads(False)
        outs = tuple(buf.detach() for _, _, _, buf in index)
        return outs[0] if len(outs) == 1 else outs

    @staticmethod
    def backward(ctx, *grads):
        double = torch.is_grad_enabled()  # create_graph: the gradient is differentiated again
        out = [None]
        for (row_ptr, col_idx, where), grad in zip(ctx.index, grads):
            if grad is None or row_ptr is None:  # row_ptr None: a dense weight (materialize_all's ``into``)
                out.append(grad)
            elif double:
                out.append(_AtPattern.apply(grad, row_ptr, col_idx))
            else:
                out.append(_read(grad, row_ptr, col_idx, where))
        return tuple(out)


def _scattered(values, row_ptr, col_idx, shape) -> torch.Tensor:
    """The matrix of ``values`` in fresh zeros (``scatter_csr``), differentiable."""
    buf = values.new_zeros(shape)
    _ops.scatter_csr(row_ptr, col_idx, values.detach(), buf)
    return _ToDense.apply(((row_ptr, col_idx, None, buf),), values)


class _AtPattern(torch.autograd.Function):
    """(dense, row_ptr, col_idx) -> dense at the pattern's positions (the op ``gather_csr``)."""

    @staticmethod
    def forward(ctx, dense, row_ptr, col_idx):
        ctx.index, ctx.shape = (row_ptr, col_idx), dense.shape
        return _ops.gather_csr(row_ptr, col_idx, dense)

    @staticmethod
    def backward(ctx, grad):
        row_ptr, col_idx = ctx.index
        return _scattered(grad, row_ptr, col_idx, ctx.shape), None, None


class _Entry:
    """What :func:`materialize_all` keeps per weight and thread: the pattern it was made for (its
    index tensors and their versions; ``set_pattern`` and ``load_state_dict`` give a weight new
    ones), the pattern's bits (CPU) or its flat positions in the matrix (other devices: checked once
    here, so that a forward and its backward synchronise with the host nowhere), the dense buffer,
    a weak reference to the token of its last loan (:meth:`lend`: dead once nothing holds what was
    lent), and for the skip of an unchanged write the values last written without a gradient
    (``last``) and the buffer's version after that write (``written``; None: nothing to skip
    against)."""
    __slots__ = ("row_ptr", "col_idx", "versions", "bits", "flat", "buffer", "array", "lent", "last", "written")

    def __init__(self, row_ptr: torch.Tensor, col_idx: torch.Tensor, cols: int):
        self.row_ptr, self.col_idx = row_ptr, col_idx
        self.versions = (row_ptr._version, col_idx._version)
        self.bits = _ops.pattern_bits(row_ptr, col_idx, cols) if row_ptr.device.type == "cpu" else None
        self.flat = self.buffer = self.array = self.lent = self.last = self.written = None

    def matches(self, row_ptr: torch.Tensor, col_idx: torch.Tensor) -> bool:
        return (self.row_ptr is row_ptr and self.col_idx is col_idx
                and self.versions == (row_ptr._version, col_idx._version))

    def free_buffer(self, values: torch.Tensor, shape) -> torch.Tensor:
        """The buffer, or a new zero-filled one where it has another dtype or device, is off the
        CPU, or is still held through its last loan (an alias in a graph whose backward has not
        run, a matrix :func:`materialize` returned that the caller keeps, or any view, detached
        copy or storage of one)."""
        buf = self.buffer
        if (buf is None or buf.dtype != values.dtype or buf.device != values.device or buf.device.type != "cpu"
                or (self.lent is not None and self.lent() is not None)):
            with outside_inference_mode():
                buf = self.buffer = values.new_zeros(shape)
            self.array = buf.view(torch.uint8).numpy() if buf.device.type == "cpu" else None  # its bytes
            self.written = None
        self.lent = None
        return buf

    def positions(self, buf: torch.Tensor) -> torch.Tensor:
        """Where the pattern lies in ``buf``: its bits on the CPU, else its flat positions
        (``flat_positions``, made and checked at the first call)."""
        if self.bits is not None:
            return self.bits
        if self.flat is None:
            with outside_inference_mode():
                self.flat = flat_positions(self.row_ptr, self.col_idx, buf)
        return self.flat

    def lend(self, buf: torch.Tensor) -> torch.Tensor:
        """``buf`` for a caller: an alias that shares its memory and version counter (a write
        through it is seen by the skip of :meth:`write`) but holds a storage of its own, made by
        ``torch.from_numpy`` over a new NumPy array object of the buffer's bytes, the loan's token.
        That storage keeps the token alive for as long as anything holds the alias or anything
        made from it (views, ``detach``, its storage, the graph's saved tensors), and only that
        long: :meth:`free_buffer` reuses the buffer once its weak reference to the token is dead.
        With public APIs only; torch has none that counts a storage's users. Off the CPU (no
        NumPy view of the memory) every forward writes a new buffer instead."""
        if buf.device.type != "cpu":
            return buf.detach()
        token = self.array.view()  # a new array object over the buffer's bytes
        alias = buf.detach()  # never requires a gradient: set_ needs no no_grad
        alias.set_(torch.from_numpy(token).untyped_storage(), buf.storage_offset(), buf.shape, buf.stride())
        self.lent = weakref.ref(token)
        if self.written is not None:
            self.written = buf._version  # set_ moved the shared version counter, not the values
        return alias

    def write(self, values: torch.Tensor, buf: torch.Tensor, keep: bool) -> None:
        """buf <- the matrix of ``values`` (see :func:`materialize_all`); ``keep`` (a call without
        a gradient): skipped when buf holds the matrix of the same bytes, else a copy of the
        values kept for the next call (CPU only, where the comparison costs a few microseconds)."""
        if self.bits is None:  # a fresh zero-filled buffer (free_buffer)
            buf.view(-1).index_put_((self.positions(buf),), values)
            return
        if keep and self.written == buf._version and _ops.same_bytes(values, self.last):
            return
        self.written = None
        _ops.expand_bits(self.row_ptr, self.bits, values, buf)
        if keep:
            last = self.last
            if last is None or last.shape != values.shape or last.dtype != values.dtype:
                with outside_inference_mode():
                    last = self.last = torch.empty_like(values, memory_format=torch.contiguous_format)
            last.copy_(values)
            self.written = buf._version


#: per thread, weight -> its _Entry: kept outside the module (not pickled, not copied), dropped
#: with the weight. Per thread, so two threads running one module (a shared model served from a
#: thread pool, ``torch.func.functional_call`` with other values in each) never write one buffer.
_LOCAL = threading.local()


def _entries() -> weakref.WeakKeyDictionary:
    """This thread's weight -> _Entry (made again by :func:`materialize_all` when the weight's
    pattern changed)."""
    entries = _LOCAL.__dict__.get("entries")
    if entries is None:
        entries = _LOCAL.entries = weakref.WeakKeyDictionary()
    return entries
