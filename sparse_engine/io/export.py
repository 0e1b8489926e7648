"""Ways out of PyTorch: ONNX export of our operators, and a clear refusal of TorchScript.

ONNX (``torch.onnx.export(..., dynamo=True)``, the default exporter since PyTorch 2.9): the
exporter traces the model with ``torch.export`` and translates each operator; ours are
translated by :func:`onnx_translation_table`::

    torch.onnx.export(model.eval(), (x,), "model.onnx", dynamo=True,
                      custom_translation_table=sparse_engine.io.export.onnx_translation_table())

The graph stays sparse: ``spmm`` becomes a gather of the input rows at the stored columns, a
product with the values and a scatter-add into the output rows (``ScatterND`` with
``reduction="add"``, opset >= 16), so an exported layer costs O(nnz) memory in ONNX Runtime as
it does here; the CSR index travels as initializers. ``onnx_translation_table(dense=True)``
trades that for speed: each matrix is scattered into a dense one and multiplied with
``MatMul`` (see there for when and why). The fused recurrent steps (``lstm_step``,
``gru_step``, ``rnn_step``, ``ctrnn_step``) become that product plus the gate math of
:mod:`sparse_engine.recurrent.cell_steps`'s composed steps. Only the forward ops are translated (export
is for inference). As with any ``torch.export`` graph, the recurrence is unrolled over the
example input's number of steps: the exported model takes sequences of exactly that length
(torch's own ``nn.LSTM`` exports to ONNX's ``LSTM`` op, which takes any length; ours has no
such ONNX op, sparse weights being outside the ONNX standard). The batch size may be dynamic
(``dynamic_shapes={...: torch.export.Dim("batch")}``). Needs the ``onnx`` extra
(``onnx``, ``onnxscript``; ``onnxruntime`` to run the result).

The legacy TorchScript exporter (``dynamo=False``) and TorchScript itself
(``torch.jit.script``/``torch.jit.trace``) cannot run our modules: the recurrence is a
``torch.autograd.Function`` with Python control flow around custom operators, and a SparseWeight
keeps extra state in its ``state_dict``. They fail with one message saying what to use instead
(:data:`NO_TORCHSCRIPT`), raised by ``SparseWeight`` (script, legacy export) and by the
recurrence (trace). A plain ``SparseLinear`` does trace (one custom op), and is left alone.
"""
from __future__ import annotations

import torch

__all__ = ["onnx_translation_table", "NO_TORCHSCRIPT", "check_not_torchscript", "check_not_legacy_onnx_export"]

# The refusals live beside SparseWeight, which raises them with the recurrence (both below io/); their
# names stay importable from here, where users meet them with the export.
from ..sparse.no_torchscript import (NO_LEGACY_ONNX, NO_TORCHSCRIPT, check_not_legacy_onnx_export,  # noqa: E402,F401
                                     check_not_torchscript)

# ------------------------------------------------------------------ ONNX translation
def onnx_translation_table(dense: bool = False) -> dict:
    """``{torch op overload: ONNX translation}`` for ``torch.onnx.export``'s
    ``custom_translation_table``: spmm and the four fused step ops (see the module doc).

    ``dense=True`` writes each product as a dense ``MatMul`` with the matrix scattered from its
    CSR (the exporter folds the scatter, so the file holds dense matrices): O(rows*cols) memory,
    as ``to_dense()``, but ONNX Runtime runs it far faster than the sparse graph at small
    and medium sizes, its gather/scatter being unvectorised (a 200-unit LSTM at density 0.33,
    35 steps, batch 10, one thread: 5 ms dense, 160 ms sparse, against 18 ms in PyTorch). The
    default is the sparse graph, because nothing of sparse-engine builds a dense weight unless
    asked, and large sparse models would not fit densely."""
    try:
        from onnxscript import opset18 as op
        from onnxscript import ir
    except ImportError as e:  # pragma: no cover - the onnx extra is missing
        raise ImportError("ONNX export needs onnxscript: pip install 'sparse-engine[onnx]'") from e

    def entry_rows(row_ptr, col_idx):
        """The row of each stored entry (CSR order): the number of rows that end at or before it,
        as a running sum of ones scattered at the row ends (an empty row adds its one at the same
        place). Reads only the CSR: the transposed index may be absent (a layer that never
        needed W^T, see SparseWeight.csr_index)."""
        ends = op.Slice(row_ptr, op.Constant(value_ints=[1]), op.Constant(value_ints=[-1]))
        marks = op.ConstantOfShape(op.Add(op.Shape(col_idx), op.Constant(value_ints=[1])),
                                   value=ir.tensor([0], dtype=ir.DataType.INT64))
        ones = op.Expand(op.Constant(value_ints=[1]), op.Shape(ends))
        marks = op.ScatterElements(marks, ends, ones, axis=0, reduction="add")
        return op.Slice(op.CumSum(marks, op.Constant(value_int=0)), op.Constant(value_ints=[0]), op.Shape(col_idx))

    def dims(ptr):
        """[len(ptr) - 1]: the rows of a CSR row_ptr, the columns of a csc_ptr."""
        return op.Sub(op.Shape(ptr), op.Constant(value_ints=[1]))

    def spmm_sparse(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, X):
        """W X as gather, multiply and scatter-add over the stored entries (O(nnz * B))."""
        rows = entry_rows(row_ptr, col_idx)
        terms = op.Mul(op.Gather(X, op.Cast(col_idx, to=ir.DataType.INT64), axis=0),
                       op.Unsqueeze(values, op.Constant(value_ints=[1])))
        out_shape = op.Concat(dims(row_ptr), op.Shape(X, start=1), axis=0)
        zeros = op.Expand(op.CastLike(op.Constant(value_float=0.0), X), out_shape)
        return op.ScatterND(zeros, op.Unsqueeze(rows, op.Constant(value_ints=[1])), terms, reduction="add")

    def spmm_dense(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, X):
        """W X with W scattered into a dense matrix (entries are unique: no reduction)."""
        at = op.Concat(op.Unsqueeze(entry_rows(row_ptr, col_idx), op.Constant(value_ints=[1])),
                       op.Unsqueeze(op.Cast(col_idx, to=ir.DataType.INT64), op.Constant(value_ints=[1])), axis=1)
        w_shape = op.Concat(dims(row_ptr), dims(csc_ptr), axis=0)
        zeros = op.Expand(op.CastLike(op.Constant(value_float=0.0), values), w_shape)
        return op.MatMul(op.ScatterND(zeros, at, values), X)

    spmm = spmm_dense if dense else spmm_sparse

    def lstm_step(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx, h, c):
        g = op.Add(gx, spmm(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, h))
        i, f, gg, o = op.Split(g, axis=0, num_outputs=4)
        i, f, gg, o = op.Sigmoid(i), op.Sigmoid(f), op.Tanh(gg), op.Sigmoid(o)
        c2 = op.Add(op.Mul(f, c), op.Mul(i, gg))
        return op.Mul(o, op.Tanh(c2)), c2, op.Concat(i, f, gg, o, axis=0)

    def gru_step(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx, h, b_hh=None):
        gh = spmm(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, h)
        if b_hh is not None:
            gh = op.Add(gh, op.Unsqueeze(b_hh, op.Constant(value_ints=[1])))
        xr, xz, xn = op.Split(gx, axis=0, num_outputs=3)
        hr, hz, hn = op.Split(gh, axis=0, num_outputs=3)
        r, z = op.Sigmoid(op.Add(xr, hr)), op.Sigmoid(op.Add(xz, hz))
        n = op.Tanh(op.Add(xn, op.Mul(r, hn)))
        return op.Add(n, op.Mul(z, op.Sub(h, n))), op.Concat(r, z, n, hn, axis=0)

    def rnn_step(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx, h, relu: bool):
        pre = op.Add(gx, spmm(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, h))
        return op.Relu(pre) if relu else op.Tanh(pre)

    def ctrnn_step(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx, h, dt: float, tau: float):
        a = op.Tanh(op.Add(gx, spmm(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, h)))
        keep = op.CastLike(op.Constant(value_float=1.0 - dt / tau), h)
        return op.Add(op.Mul(h, keep), op.Mul(op.CastLike(op.Constant(value_float=dt), h), a)), a

    ops = torch.ops.sparse_engine
    return {ops.spmm.default: spmm, ops.lstm_step.default: lstm_step, ops.gru_step.default: gru_step,
            ops.rnn_step.default: rnn_step, ops.ctrnn_step.default: ctrnn_step}
