"""The Python half of ``torch.ops.sparse_engine``, in one place: every fake (meta) kernel, the
autocast rules and the registration of the kernels written in Python. (The autograd formulas of
spmm, spmm_t and sddmm are C++: ``csrc/autograd.cpp``.)

``csrc/ops.cpp`` holds the schemas (read an op's arguments there); the compiled kernels and the
autograd formulas register themselves per dispatch key when the extension loads.
:mod:`sparse_engine.kernels` imports this module right after loading the compiled library, so
importing any part of the package makes every operator complete (eager, autograd, autocast,
``torch.compile``). The sections below follow the op families of ``csrc/ops.cpp``;
``docs/architecture.md`` says where each family's kernels are. The CUDA topology kernels (and
scatter_csr/gather_csr's) are the Python functions ``<op>_torch`` of
:mod:`sparse_engine.kernels.topology_torch` (and ``densify_torch``), registered here by
``_python_kernels`` for CUDA and as the fallback of every other device without its own.
The table says what each op has beside its compiled kernels: "fake", "autocast" and "CUDA
kernel" are registered by this module (fake: the output shapes, for FakeTensor /
``torch.compile``; ops without one have data-dependent output sizes and run outside compiled
graphs), "autograd" by ``csrc/autograd.cpp``. ``tests/ops/test_registry.py`` checks this table
against the schemas and the registrations.

op                       has
-----------------------  ------------------------
[spmm] CPU csrc/cpu/spmm_cpu.cpp, CUDA csrc/cuda/spmm_cuda.cu
spmm                     fake, autograd, autocast
spmm_t                   fake, autograd, autocast
[sddmm] CPU csrc/cpu/sddmm_cpu.cpp, CUDA csrc/cuda/sddmm_cuda.cu
sddmm                    fake, autograd, autocast
[transpose] CPU csrc/cpu/transpose_cpu.cpp, CUDA csrc/cuda/transpose_cuda.cu
transpose_index          fake
[rnn_step] CPU csrc/cpu/rnn_step_cpu.cpp, CUDA csrc/cuda/rnn_step_cuda.cu
lstm_step                fake
lstm_step_backward       fake
gru_step                 fake
gru_step_backward        fake
rnn_step                 fake
rnn_step_backward        fake
ctrnn_step               fake
ctrnn_step_backward      fake
[rnn_sequence] CPU csrc/cpu/rnn_sequence_cpu.cpp, CUDA csrc/cuda/rnn_sequence_cuda.cu
rnn_sequence             fake
rnn_sequence_backward    fake
[topology] CPU csrc/cpu/topology_cpu.cpp, CUDA sparse_engine/kernels/topology_torch.py
select_smallest          fake, CUDA kernel
set_prune                fake, CUDA kernel
compact                  CUDA kernel
random_empty             CUDA kernel
merge                    CUDA kernel
remap_index              CUDA kernel
gather_or_zero           fake, CUDA kernel
coo_dot                  fake, CUDA kernel
grad_topk                CUDA kernel
rewire                   CUDA kernel
[densify] CPU csrc/cpu/densify_cpu.cpp, CUDA sparse_engine/kernels/densify_torch.py for scatter_csr/gather_csr
pattern_bits             fake
expand_bits              fake
compress_bits            fake
same_bytes               none (returns a bool)
scatter_csr              fake, CUDA kernel
gather_csr               fake, CUDA kernel
[dense_rnn] CPU csrc/cpu/dense_rnn_cpu.cpp, no CUDA kernels (the dense path runs torch's GRU there)
gru_sequence             fake
gru_sequence_backward    fake
[analysis] CPU csrc/cpu/analysis_cpu.cpp, no CUDA kernels
signed_triad_census      fake
transitive_semicycles    fake
degree_preserving_swaps  fake
[mlp] CPU csrc/cpu/mlp_cpu.cpp, no CUDA kernels (CUDA runs torch's ops instead)
relu_dropout             fake
sgd_step                 fake

Autograd: spmm, spmm_t and sddmm each have a formula written with the other two, registered in
C++ (``csrc/autograd.cpp``: about 20 us a call less than Python's register_autograd; double
backward works too; spmm_t's optional ``values_t``, the values in column order, gets no gradient:
it is ``values`` read in another order, whose gradient goes to ``values``); the recurrent steps
are differentiated by their ``*_backward`` ops inside ``sparse_engine.nn``'s autograd.Function;
gru_sequence by gru_sequence_backward inside ``sparse_engine.recurrent.dense_gru``'s; the topology,
densify, analysis and mlp ops are not differentiable (the dense-compute path's autograd.Function
in ``sparse_engine.recurrent.compute_paths`` pairs scatter_csr/expand_bits with gather_csr/compress_bits).
The mlp ops work in place (SparseMLP's ReLU + dropout, SETSGD's step) and are called only
where their callers check that they apply (CPU, contiguous); they return nothing.
Autocast (CPU and CUDA): spmm, spmm_t and sddmm are lower-precision ops like ``torch.mm``
(see :mod:`sparse_engine.ops`).
"""
from __future__ import annotations

import torch

from .constants import GATES, SAVED_ACTS
from . import densify_torch, has_kernel, topology_torch

_ops = torch.ops.sparse_engine

#: Registrations made through a Library object (autocast, Python kernels) last as long as it.
_LIB = torch.library.Library("sparse_engine", "IMPL")

_fake = torch.library.register_fake


# ------------------------------------------------------------------- shared pieces
def _autocast(opname: str) -> None:
    """Under autocast on the CPU or CUDA, ``opname`` casts its float32/float64 operands to the
    autocast dtype of the moment (float16 or bfloat16), like the matmul family. (torch's
    ``register_autocast`` takes one fixed dtype; this follows ``torch.get_autocast_dtype``.)"""
    op = getattr(_ops, opname).default
    for device_type, key in (("cpu", "AutocastCPU"), ("cuda", "AutocastCUDA")):
        _LIB.impl(opname, _autocast_kernel(op, device_type, key), key, with_keyset=True)


def _autocast_kernel(op, device_type: str, key: str):
    keyset = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def kernel(_keyset, *args):
        dtype = torch.get_autocast_dtype(device_type)
        cast = [a.to(dtype) if isinstance(a, torch.Tensor) and a.dtype in (torch.float32, torch.float64) else a
                for a in args]
        with torch._C._ExcludeDispatchKeyGuard(keyset):
            return op(*cast)

    return kernel


def _like(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(t.shape)


def _blocks(t: torch.Tensor, k: int) -> torch.Tensor:
    """A (k * rows x cols) tensor like the (rows x cols) ``t``: k stacked blocks (gates)."""
    return t.new_empty((k * t.shape[0], t.shape[1]))


# ------------------------------------------------------------------------------ spmm
@_fake("sparse_engine::spmm")
def _spmm_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, X):
    return X.new_empty((row_ptr.shape[0] - 1, X.shape[1]))


@_fake("sparse_engine::spmm_t")
def _spmm_t_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, G, values_t=None):
    return G.new_empty((csc_ptr.shape[0] - 1, G.shape[1]))


# Autograd of spmm, spmm_t and sddmm: in C++ (csrc/autograd.cpp), each formula written with the
# other two ops; Python's register_autograd cost about 20 us a call.
_autocast("spmm")
_autocast("spmm_t")


# ----------------------------------------------------------------------------- sddmm
@_fake("sparse_engine::sddmm")
def _sddmm_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, G, X):
    return G.new_empty((col_idx.shape[0],))


_autocast("sddmm")


# ------------------------------------------------------------------------- transpose
@_fake("sparse_engine::transpose_index")
def _transpose_index_fake(row_ptr, col_idx, n_cols):
    nnz = col_idx.shape[0]
    return row_ptr.new_empty((n_cols + 1,)), col_idx.new_empty((nnz,)), col_idx.new_empty((nnz,))  # perm: int32


# -------------------------------------------------------------------------- rnn_step
# Shapes (H hidden units, B batch): states H x B; gx and the gate gradient dG G*H x B (GATES);
# the saved activations SAVED_ACTS*H x B. Each backward takes W_hh's values in column order
# (values_t = values[csc_perm]) optionally, then h_in and dw_t (added to in place: nothing to fake).
@_fake("sparse_engine::lstm_step")
def _lstm_step_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx, h, c):
    return _like(h), _like(h), _blocks(h, SAVED_ACTS["LSTM"])


@_fake("sparse_engine::lstm_step_backward")
def _lstm_step_backward_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, acts, c_prev, c, dh, dc,
                             values_t=None, h_in=None, dw_t=None):
    return _blocks(dh, GATES["LSTM"]), _like(dh), _like(dh)


@_fake("sparse_engine::gru_step")
def _gru_step_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx, h, b_hh):
    return _like(h), _blocks(h, SAVED_ACTS["GRU"])


@_fake("sparse_engine::gru_step_backward")
def _gru_step_backward_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, acts, h_prev, dh, values_t=None,
                            h_in=None, dw_t=None):
    return _blocks(dh, GATES["GRU"]), _blocks(dh, GATES["GRU"]), _like(dh)


@_fake("sparse_engine::rnn_step")
def _rnn_step_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx, h, relu):
    return _like(h)


@_fake("sparse_engine::rnn_step_backward")
def _rnn_step_backward_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, h_new, dh, relu, values_t=None,
                            h_in=None, dw_t=None):
    return _blocks(dh, GATES["RNN_TANH"]), _like(dh)


@_fake("sparse_engine::ctrnn_step")
def _ctrnn_step_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx, h, dt, tau):
    return _like(h), _blocks(h, SAVED_ACTS["CTRNN"])


@_fake("sparse_engine::ctrnn_step_backward")
def _ctrnn_step_backward_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, acts, dh, dt, tau,
                              values_t=None, h_in=None, dw_t=None):
    return _blocks(dh, GATES["CTRNN"]), _like(dh)


# ---------------------------------------------------------------------- rnn_sequence
# Shapes (T steps): gx and dG (G*H, T, B), y and LSTM's cs (T, H, B), the saved activations
# (T, SAVED_ACTS*H, B); an output the mode does not make is an empty (0,) tensor.
def _empty(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty((0,))


@_fake("sparse_engine::rnn_sequence")
def _rnn_sequence_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, mode, gx, h0, c0, b_hh, reverse):
    T, (H, B) = gx.shape[1], h0.shape
    y = h0.new_empty((T, H, B))
    cs = h0.new_empty((T, H, B)) if mode == "LSTM" else _empty(h0)
    saved = SAVED_ACTS.get(mode, 0)
    return y, cs, h0.new_empty((T, saved * H, B)) if saved else _empty(h0)


@_fake("sparse_engine::rnn_sequence_backward")
def _rnn_sequence_backward_fake(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, mode, y, h0, c0, cs, acts, dy,
                                dh, dc, reverse, values_t=None):
    T, (H, B) = y.shape[0], dh.shape
    dG = dh.new_empty((GATES[mode] * H, T, B))
    dgx = dh.new_empty((3 * H, T, B)) if mode == "GRU" else _empty(dh)
    return dG, dgx, _like(dh), _like(dh) if mode == "LSTM" else _empty(dh)


# -------------------------------------------------------------------------- topology
# compact, random_empty, merge, remap_index, grad_topk and rewire have data-dependent sizes (no fake).
@_fake("sparse_engine::select_smallest")
def _select_smallest_fake(scores, k):
    return scores.new_empty(scores.shape, dtype=torch.bool)


@_fake("sparse_engine::set_prune")
def _set_prune_fake(values, zeta):
    return values.new_empty(values.shape, dtype=torch.bool)


@_fake("sparse_engine::gather_or_zero")
def _gather_or_zero_fake(t, origin):
    return t.new_empty((origin.shape[0], *t.shape[1:]))


@_fake("sparse_engine::coo_dot")
def _coo_dot_fake(rows, cols, G, X):
    return G.new_empty((rows.shape[0],))


def _python_kernels(ops: dict) -> None:
    """Registers the kernels written with torch primitives (``ops``: name -> function) as the
    operators' CUDA kernels (on any torch build, so a CUDA torch picks them up; a compiled CUDA
    kernel would be kept) and, under CompositeExplicitAutograd, as the one fallback for every
    other device without a kernel of its own (XPU, MPS, ...; the CPU keeps its C++ kernels). So
    ``torch.ops.sparse_engine.<op>`` runs on any device and no caller picks an implementation."""
    for name, kernel in ops.items():
        if not has_kernel(name, "cuda"):
            _LIB.impl(name, kernel, "CUDA")
        _LIB.impl(name, kernel, "CompositeExplicitAutograd")


_python_kernels(topology_torch.OPS)


# --------------------------------------------------------------------------- densify
@_fake("sparse_engine::pattern_bits")
def _pattern_bits_fake(row_ptr, col_idx, n_cols):
    return row_ptr.new_empty((row_ptr.shape[0] - 1, (n_cols + 15) // 16), dtype=torch.int16)


@_fake("sparse_engine::expand_bits")
def _expand_bits_fake(row_ptr, bits, values, dense):
    return None


@_fake("sparse_engine::compress_bits")
def _compress_bits_fake(row_ptr, bits, dense):
    return dense.new_empty((torch.library.get_ctx().new_dynamic_size(),))


@_fake("sparse_engine::scatter_csr")
def _scatter_csr_fake(row_ptr, col_idx, values, dense):
    return None


@_fake("sparse_engine::gather_csr")
def _gather_csr_fake(row_ptr, col_idx, dense):
    return dense.new_empty((col_idx.shape[0],))


_python_kernels(densify_torch.OPS)  # scatter_csr, gather_csr: the dense path on every device but the CPU


# ------------------------------------------------------------------------- dense_rnn
@_fake("sparse_engine::gru_sequence")
def _gru_sequence_fake(gx, h0, w_hh, b_hh, reverse):
    T, B, G = gx.shape
    return gx.new_empty((T, B, G // 3)), gx.new_empty((T, B, 4 * (G // 3)))


@_fake("sparse_engine::gru_sequence_backward")
def _gru_sequence_backward_fake(dy, acts, y, h0, w_hh, reverse, has_bias):
    T, B, H = y.shape
    return (y.new_empty((T, B, 3 * H)), y.new_empty((B, H)), y.new_empty((3 * H, H)),
            y.new_empty((3 * H,)) if has_bias else None)


# -------------------------------------------------------------------------- analysis
@_fake("sparse_engine::signed_triad_census")
def _signed_triad_census_fake(row_ptr, col_idx, values):
    return row_ptr.new_empty((16,)), row_ptr.new_empty((4, 5))


@_fake("sparse_engine::transitive_semicycles")
def _transitive_semicycles_fake(row_ptr, col_idx, values, type_mask):
    s = torch.library.get_ctx().new_dynamic_size()
    return row_ptr.new_empty((s, 3)), row_ptr.new_empty((s, 3)), row_ptr.new_empty((s,), dtype=torch.int8)


@_fake("sparse_engine::degree_preserving_swaps")
def _degree_preserving_swaps_fake(src, dst, n, n_swaps, seeds):
    return dst.new_empty((seeds.shape[0], dst.shape[0]))


# ------------------------------------------------------------------------------- mlp
@_fake("sparse_engine::relu_dropout")
def _relu_dropout_fake(z, p, seed, scale=None):
    return None


@_fake("sparse_engine::sgd_step")
def _sgd_step_fake(param, buf, grad, lr, momentum, decay):
    return None
