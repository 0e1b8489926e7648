"""In-place topology updates of a SparseWeight: which entries to prune, where to grow, and
the bookkeeping (sorted CSR, optimizer state, the caller's per-entry state) after the change.

An update is a ``keep`` mask (:func:`set_keep`, :func:`magnitude_keep`, ...) and one call of
:func:`rewire`, which runs the operator ``torch.ops.sparse_engine.rewire`` once: compaction ->
growth at empty positions of the compacted pattern (so an entry pruned in this update may be
regrown, as in SET, RigL and sparselearning; it then starts afresh, or with ``keep_regrown`` keeps
its value and state, as RigL's and Selfish-RNN's code do) -> merge -> remap of every
per-entry tensor (gradient, optimizer state, the controller's state) -> ``SparseWeight.set_pattern``.
Growth is :class:`RandomGrowth`, :class:`GradientGrowth` (both run inside that call) or any
callable ``grow(row_ptr, col_idx) -> (rows, cols)`` on the compacted pattern (then the compaction
runs once more before it). All steps are O(nnz) (gradient growth: see :func:`gradient_growth`).

Every operator is called as ``torch.ops.sparse_engine.<op>`` and the dispatcher picks the kernel:
the C++ kernels of ``csrc/cpu/topology_cpu.cpp`` for CPU tensors, the kernels written with torch
primitives in :mod:`sparse_engine.kernels.topology_torch` on CUDA (cub sorts and scans: a CUDA
weight is updated where it lives and no nnz-long array goes through the host) and, as the
documented fallback (:mod:`sparse_engine.kernels.library`), on any other device. Random initial
values of new weights are drawn by the caller's generator (a CPU one in the controllers, so CPU
and CUDA runs draw the same numbers) after the call and copied to the device once (n numbers;
"zero", the default, needs nothing).

Tie rule: among equal scores the lower CSR position (or lower linear position row*cols+col)
goes first, so every selection is deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .. import kernels  # noqa: F401  (loads the compiled operators)
from ..sparse import SparseWeight

_ops = torch.ops.sparse_engine

__all__ = [
    "Remap", "magnitude_keep", "global_magnitude_keep", "set_keep", "threshold_keep",
    "random_empty", "gradient_growth", "sharded_gradient_growth", "RandomGrowth", "GradientGrowth", "new_values",
    "rewire",
    "remap_optimizer_state", "INIT_CHOICES",
]

#: Initial values of new connections (``init=`` of :func:`new_values` and the controllers).
#: "zero" (Keras SET, Selfish-RNN, RigL, sparselearning), "normal" (randn * init_scale;
#: init_scale=0.1 is the scipy SET code), "he_uniform" (U(+-sqrt(6 / fan_in))),
#: "xavier_uniform" (U(+-sqrt(6 / (fan_in + fan_out)))); fan_in / fan_out are the layer's mean
#: nonzeros per row / column. A callable ``f(n, weight, generator) -> tensor[n]`` is also accepted.
INIT_CHOICES = ("zero", "normal", "he_uniform", "xavier_uniform")


@dataclass
class Remap:
    """How entries moved in one update: old entry ``src[j]`` is now at ``dst[j]``; new entries
    sit at ``new`` (state zero), new entry ``new[j]`` at (``new_row[j]``, ``new_col[j]``);
    ``carried``: the tensors given to :func:`rewire` as ``carry``, in the new order."""

    src: torch.Tensor
    dst: torch.Tensor
    new: torch.Tensor
    old_nnz: int
    new_nnz: int
    new_row: torch.Tensor | None = None
    new_col: torch.Tensor | None = None
    carried: list = field(default_factory=list)

    @property
    def n_removed(self) -> int:
        return self.old_nnz - self.src.numel()

    @property
    def n_grown(self) -> int:
        return self.new.numel()

    def origin(self) -> torch.Tensor:
        """origin[p]: old position of the entry now at p, -1 for a new entry (computed once)."""
        if getattr(self, "_origin", None) is None:
            self._origin = _ops.remap_index(self.src, self.dst, self.new_nnz)
        return self._origin

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (first dimension old_nnz, any dtype) in the new order; zero for new entries."""
        if t.dim() < 1 or t.shape[0] != self.old_nnz:
            raise ValueError(f"tensor must have first dimension old_nnz={self.old_nnz}, got {tuple(t.shape)}")
        return _ops.gather_or_zero(t, self.origin().to(t.device))


# ----------------------------------------------------------------------- pruning
_HALF = (torch.float16, torch.bfloat16)


def _widened(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, float16/bfloat16 widened to float32 (exact): the topology kernels take
    float32/float64, and a 2-byte weight rounds back to itself after the update."""
    t = t.detach()
    return t.float() if t.dtype in _HALF else t


def _check_values(values: torch.Tensor, name: str = "values") -> torch.Tensor:
    if not isinstance(values, torch.Tensor) or values.dim() != 1 or not values.is_floating_point():
        raise TypeError(f"{name} must be a 1-D floating-point tensor")
    return _widened(values)


def magnitude_keep(values: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep mask that drops the ``n_prune`` entries of smallest |w| (ties: lower position)."""
    v = _check_values(values)
    if not 0 <= n_prune <= v.numel():
        raise ValueError(f"n_prune must be in [0, nnz={v.numel()}], got {n_prune}")
    return ~_ops.select_smallest(v.abs(), int(n_prune))


def global_magnitude_keep(values: Sequence[torch.Tensor], n_prune: int) -> list[torch.Tensor]:
    """Keep masks for several layers that together drop the ``n_prune`` smallest |w| of all of
    them (one selection over the concatenated magnitudes; ties: earlier layer, lower position)."""
    vs = [_check_values(v, f"values[{i}]") for i, v in enumerate(values)]
    dev = vs[0].device if vs else torch.device("cpu")
    mags = torch.cat([v.abs().double().to(dev) for v in vs]) if vs else torch.empty(0, dtype=torch.float64)
    if not 0 <= n_prune <= mags.numel():
        raise ValueError(f"n_prune must be in [0, total nnz={mags.numel()}], got {n_prune}")
    keep = ~_ops.select_smallest(mags, int(n_prune))
    return [k.to(v.device) for k, v in zip(torch.split(keep, [v.numel() for v in vs]), vs)]


def set_keep(values: torch.Tensor, zeta: float) -> torch.Tensor:
    """SET (Mocanu et al. 2018) keep mask: drops round(zeta * P) of the P positive weights
    nearest zero and, separately, round(zeta * N) of the N negative weights nearest zero (the
    largest negative ones, not the most negative). Exact zeros lie inside the pruned band of the
    reference implementation and are always dropped."""
    v = _check_values(values)
    if not 0.0 <= zeta <= 1.0:
        raise ValueError(f"zeta must be in [0, 1], got {zeta}")
    return _ops.set_prune(v, float(zeta))


def threshold_keep(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep mask of the entries with |w| >= threshold."""
    v = _check_values(values)
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return v.abs() >= threshold


# ----------------------------------------------------------------------- growth
def random_empty(row_ptr: torch.Tensor, col_idx: torch.Tensor, n_cols: int, n: int, seed: int):
    """Exactly ``n`` distinct positions drawn uniformly from the empty positions of the pattern,
    as (rows int64, cols int32) sorted by (row, col). On the CPU, while at least 4n positions are
    empty, each row draws a Poisson number of candidate columns (together uniformly random
    positions), keeps those not stored, and a uniformly random surplus is dropped; otherwise the
    empty positions are enumerated.
    On another device: uniform ranks among the empty positions from that device's generator
    seeded with ``seed`` (see :func:`sparse_engine.kernels.topology_torch.random_empty_torch`;
    other positions than the CPU for the same seed, same distribution)."""
    return _ops.random_empty(row_ptr, col_idx, int(n_cols), int(n), int(seed))


def gradient_growth(row_ptr: torch.Tensor, col_idx: torch.Tensor, G: torch.Tensor, X: torch.Tensor, k: int,
                    *, method: str = "auto", max_flops: float = 2.0 ** 34, sample_factor: int = 8,
                    seed: int = 0, tile_rows: int | None = None, tile_elems: int | None = None,
                    reduce_grads: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """The ``k`` empty positions with the largest |dL/dW| = |G X^T| (G: rows x M, X: cols x M,
    feature-major), as (rows, cols, grads) sorted by (row, col). The dense gradient never exists.

    method="exact": every tile of tile_rows x (tile_elems / tile_rows) is one GEMM (defaults: 256
    rows and 2^22 elements on the CPU; on a GPU 2^26 elements, as many rows as fill that when the
    columns are fewer, since a 2^22 tile there is too short to hide the per-tile work), and a running
    top-k over the empty positions of the tile is kept (cost rows*cols*M flops, memory
    O(tile + k)). method="sample": draws min(empty, sample_factor * k) uniformly random empty
    candidates, computes their gradients (one dot product each) and keeps the top k (an approximation; cost
    O(sample_factor * k * M)).
    method="auto" (default): exact while rows*cols*M <= max_flops (2^34, about a second on two
    cores), sample above it. ``reduce_grads`` (sample only): applied to the candidates' gradients
    before the selection (data-parallel training: their sum over the ranks)."""
    rows = row_ptr.numel() - 1
    G, X, tile_rows, tile_cols, sample_factor = _gradient_plan(rows, G, X, method, max_flops, sample_factor,
                                                               tile_rows, tile_elems, reduce_grads, row_ptr.device)
    cols = X.shape[0]
    empty = rows * cols - col_idx.numel()
    if not 0 <= k <= empty:
        raise ValueError(f"k must be in [0, {empty}] (the empty positions), got {k}")
    if not sample_factor:
        return _ops.grad_topk(row_ptr, col_idx, G, X, int(k), tile_rows, tile_cols)
    cr, cc = random_empty(row_ptr, col_idx, cols, int(min(empty, sample_factor * k)), seed)
    grads = _ops.coo_dot(cr, cc, G, X)
    if reduce_grads is not None:
        grads = reduce_grads(grads)
    pick = _ops.select_smallest(-grads.abs(), int(k))
    return cr[pick], cc[pick], grads[pick]


def sharded_gradient_growth(shard, row_ptr: torch.Tensor, col_idx: torch.Tensor, G: torch.Tensor, X: torch.Tensor,
                            k: int, *, method: str = "auto", max_flops: float = 2.0 ** 34, sample_factor: int = 8,
                            seed: int = 0, tile_rows: int | None = None, tile_elems: int | None = None,
                            reduce_grads: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """:func:`gradient_growth` of a weight split by rows across ranks
    (:func:`~sparse_engine.distributed.shard_rows`; ``shard`` its RowShard, (row_ptr, col_idx) and G
    this rank's rows, X the whole input): this rank's rows (local rows, cols, grads) of the whole
    matrix's ``k`` positions, as one process chooses them. "exact": each rank's best k of its own
    rows (its share of the whole top k is among them); "sample": the whole pattern's candidates
    (the same ``seed``), each rank computing those in its rows. Then the k of largest |gradient|
    over all ranks, ties to the lower position of the whole matrix (``RowShard.top_gradients``: a
    histogram selection, so no rank gathers the candidates). "auto" decides with the whole matrix's
    rows. A collective of the shard's group."""
    rows, cols = row_ptr.numel() - 1, X.shape[0]
    if method == "auto":
        method = "exact" if shard.n_rows * cols * max(G.shape[1], 1) <= max_flops else "sample"
    empty = shard.n_rows * cols - shard.total(col_idx.numel())
    if not 0 <= k <= empty:
        raise ValueError(f"k must be in [0, {empty}] (the empty positions), got {k}")
    if method == "exact":
        r, c, grads = gradient_growth(row_ptr, col_idx, G, X, min(k, rows * cols - col_idx.numel()), method="exact",
                                      tile_rows=tile_rows, tile_elems=tile_elems)
    else:
        G, X = _gradient_plan(rows, G, X, method, max_flops, sample_factor, None, None, None, row_ptr.device)[:2]
        r, c = shard.random_empty(row_ptr, col_idx, cols, min(empty, sample_factor * k), seed)
        grads = _ops.coo_dot(r, c, G, X)
        if reduce_grads is not None:
            grads = reduce_grads(grads)
    pick = shard.top_gradients(r, c, grads, k, cols)
    return r[pick], c[pick], grads[pick]


def _gradient_plan(rows: int, G, X, method: str, max_flops: float, sample_factor: int, tile_rows: int | None,
                   tile_elems: int | None, reduce_grads, device: torch.device):
    """Checks the options of gradient growth and decides how it runs: (G, X) widened and on
    ``device``, and the operator arguments (tile_rows, tile_cols, sample_factor), sample_factor 0
    for the exact tiled top-k."""
    if method not in ("auto", "exact", "sample"):
        raise ValueError(f"method must be 'auto', 'exact' or 'sample', got {method!r}")
    for name, t in (("G", G), ("X", X)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor (features x batch)")
    cols, M = X.shape[0], G.shape[1]
    if G.shape[0] != rows:
        raise ValueError(f"G must have rows={rows} rows, got shape {tuple(G.shape)}")
    if X.shape[1] != M:
        raise ValueError(f"G and X must have the same batch size M, got {M} and {X.shape[1]}")
    G = _widened(G).to(device)
    X = X.detach().to(device, G.dtype)
    if method == "auto":
        method = "exact" if rows * cols * max(M, 1) <= max_flops else "sample"
    if method == "exact":
        if reduce_grads is not None:
            raise ValueError("reduce_grads applies to method='sample' only (exact growth takes the gathered factors)")
        cpu = device.type == "cpu"
        if tile_elems is None:
            tile_elems = 2**22 if cpu else 2**26
        if tile_rows is None:
            tile_rows = 256 if cpu else max(256, tile_elems // max(cols, 1))
        return G, X, int(tile_rows), int(max(1, tile_elems // tile_rows)), 0
    if not (isinstance(sample_factor, int) and sample_factor >= 1):
        raise ValueError(f"sample_factor must be an int >= 1, got {sample_factor!r}")
    return G, X, 0, 0, sample_factor


@dataclass
class RandomGrowth:
    """Growth of :func:`rewire` at ``n`` uniformly random empty positions of the pruned pattern
    (:func:`random_empty` with ``seed``), inside its one operator call."""

    n: int
    seed: int


@dataclass
class GradientGrowth:
    """Growth of :func:`rewire` at the ``n`` empty positions of the pruned pattern with the largest
    |G X^T|: :func:`gradient_growth` with these options, inside its one operator call (with
    ``reduce_grads``, whose collective runs in Python, before it)."""

    G: torch.Tensor
    X: torch.Tensor
    n: int
    method: str = "auto"
    max_flops: float = 2.0 ** 34
    sample_factor: int = 8
    seed: int = 0
    tile_rows: int | None = None
    tile_elems: int | None = None
    reduce_grads: Callable[[torch.Tensor], torch.Tensor] | None = None


# ----------------------------------------------------------------------- values
def new_values(n: int, weight: SparseWeight, init="zero", *, init_scale: float = 0.1,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Initial values of ``n`` new connections of ``weight`` (see :data:`INIT_CHOICES`), on the
    weight's device; random ones are drawn on the generator's device (CPU by default)."""
    dtype, dev = weight.values.dtype, weight.values.device
    gdev = generator.device if generator is not None else torch.device("cpu")
    rows, cols = weight.shape
    if callable(init):
        out = torch.as_tensor(init(n, weight, generator), dtype=dtype).detach().to(dev)
        if out.shape != (n,):
            raise ValueError(f"init callable must return a tensor of shape ({n},), got {tuple(out.shape)}")
        return out
    if init == "zero":
        return torch.zeros(n, dtype=dtype, device=dev)
    if init == "normal":
        return (torch.randn(n, generator=generator, dtype=dtype, device=gdev) * init_scale).to(dev)
    fan_in = max(1.0, weight.nnz / max(rows, 1))
    fan_out = max(1.0, weight.nnz / max(cols, 1))
    if init == "he_uniform":
        bound = math.sqrt(6.0 / fan_in)
    elif init == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
    else:
        raise ValueError(f"init must be one of {INIT_CHOICES} or a callable, got {init!r}")
    return ((torch.rand(n, generator=generator, dtype=dtype, device=gdev) * 2 - 1) * bound).to(dev)


# ----------------------------------------------------------------------- update
GrowFn = Callable[[torch.Tensor, torch.Tensor], tuple]
#: What :func:`rewire` grows: see its docstring.
Growth = RandomGrowth | GradientGrowth | tuple | GrowFn


def rewire(weight: SparseWeight, keep: torch.Tensor, grow: Growth | None = None, *, init="zero",
           init_scale: float = 0.1, generator: torch.Generator | None = None,
           optimizer: torch.optim.Optimizer | None = None, values=None, keep_regrown: bool = False,
           carry: Sequence[torch.Tensor] = ()) -> Remap:
    """Prunes the entries where ``keep`` is False, then adds the positions ``grow`` gives on the
    pruned pattern: a :class:`RandomGrowth` or :class:`GradientGrowth`, the positions themselves
    (rows int64, cols int32), or a callable ``grow(row_ptr, col_idx)`` returning them from the
    pruned pattern; sorted by (row, col), at empty positions of the pruned pattern. New entries
    take ``values`` (one per new entry in (row, col) order, or a callable ``values(rows, cols)``
    of their positions) or ``init``. ``keep_regrown``: a position pruned now and grown again keeps
    its entry, value and state, instead of a new one (Selfish-RNN's masked-dense code: its mask
    goes 1 -> 0 -> 1).

    Remaps the optimizer state of ``weight.values`` (every tensor whose first dimension is the old
    nnz: SGD momentum_buffer, Adam exp_avg/exp_avg_sq, ...), its ``.grad`` and the tensors of
    ``carry`` (the caller's per-entry state, returned in the new order as ``Remap.carried``): kept
    entries keep their state, removed ones are dropped, new ones start at zero. One call of the
    operator ``rewire`` makes the new pattern and moves ``carry`` (two with a callable ``grow``,
    whose pattern is compacted first); the gradient and the optimizer state follow
    (:meth:`Remap.apply`), one tensor at a time once the old pattern is freed, each old tensor
    freed before the next is made, so their new arrays reuse memory just freed (at 128M entries
    Adam's state and the gradient are 1.5 GB, and memory not reused within seconds cost 1.2 s a
    GB to touch on the VMs here: docs/topology.md). The transposed index is dropped first and
    rebuilt at the weight's next use. Returns the :class:`Remap`."""
    if not isinstance(weight, SparseWeight):
        raise TypeError(f"weight must be a SparseWeight, got {type(weight).__name__}")
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.shape != (weight.nnz,):
        raise ValueError(f"keep must be a bool tensor of shape (nnz={weight.nnz},)")
    if values is None and not (callable(init) or init in INIT_CHOICES):
        raise ValueError(f"init must be one of {INIT_CHOICES} or a callable, got {init!r}")
    device = weight.values.device
    keep = keep.to(device)
    old_nnz = weight.nnz
    state = _per_entry_state(weight, optimizer)
    weight._drop_transpose()  # stale after the update: its memory is free for the update's arrays
    out = _ops.rewire(weight.row_ptr, weight.col_idx, _widened(weight.values), weight.shape[1], keep,
                      *_growth_args(grow, weight, keep), bool(keep_regrown), list(carry))
    rp, ci, v, src, dst, new, new_row, new_col, carried = out
    nv = None
    if values is not None:
        nv = values(new_row, new_col) if callable(values) else values
        nv = nv.detach().to(device, v.dtype)
        if nv.shape != new.shape:
            raise ValueError(f"values must have one entry per new position ({new.numel()}), got {tuple(nv.shape)}")
    elif init != "zero":  # "zero": the operator's new entries are zeros already
        probe = _Probe(weight.shape, v.numel(), weight.values.dtype, device)  # fan-in/out after the update
        nv = new_values(new.numel(), probe, init, init_scale=init_scale, generator=generator).to(v.dtype)
    if nv is not None and new.numel():
        v.index_copy_(0, new, nv)  # new positions are unique: a copy, half the time of v[new] = nv
    weight.set_pattern(rp, ci, v.to(weight.values.dtype), validate=False)
    del rp, ci, v, out  # (the weight holds them)
    remap = Remap(src=src, dst=dst, new=new, old_nnz=old_nnz, new_nnz=weight.nnz, new_row=new_row, new_col=new_col,
                  carried=list(carried))
    for holder, key in state:  # no other reference to the old tensor: freed as the new one replaces it
        holder[key] = remap.apply(holder[key])
    return remap


def _per_entry_state(weight: SparseWeight, optimizer) -> list[tuple]:
    """(holder, key) of the weight's gradient and of every optimizer state tensor with one row per
    entry (first dimension nnz): ``holder[key]`` is the tensor, ``holder[key] = t`` puts a remapped
    one back. No reference to the tensors themselves, so each is freed when it is replaced."""
    values, nnz = weight.values, weight.nnz
    out = [] if values.grad is None else [(_GradSlot(values), "grad")]
    state = optimizer.state.get(values) if optimizer is not None else None
    for key, t in (state or {}).items():
        if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == nnz:
            out.append((state, key))
    return out


class _GradSlot:
    """``slot["grad"]`` is the parameter's ``.grad`` and ``slot["grad"] = t`` sets it (a holder like
    the optimizer's state dict)."""

    def __init__(self, param: torch.Tensor):
        self.param = param

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.param.grad

    def __setitem__(self, key: str, t: torch.Tensor) -> None:
        self.param.grad = t


def _growth_args(grow, weight: SparseWeight, keep: torch.Tensor) -> tuple:
    """The growth arguments of the operator ``rewire`` (grow_row, grow_col, G, X, n_grow, seed,
    tile_rows, tile_cols, sample_factor) for :func:`rewire`'s ``grow``."""
    if grow is None:
        return None, None, None, None, 0, 0, 0, 0, 0
    if isinstance(grow, RandomGrowth):
        return None, None, None, None, int(grow.n), int(grow.seed), 0, 0, 0
    if isinstance(grow, tuple):  # the positions themselves
        return grow[0].to(keep.device), grow[1].to(keep.device), None, None, 0, 0, 0, 0, 0
    g = grow
    if isinstance(g, GradientGrowth) and g.reduce_grads is None:
        G, X, tile_rows, tile_cols, sample_factor = _gradient_plan(
            weight.shape[0], g.G, g.X, g.method, g.max_flops, g.sample_factor, g.tile_rows, g.tile_elems, None,
            weight.values.device)
        return None, None, G, X, int(g.n), int(g.seed), tile_rows, tile_cols, sample_factor
    rp, ci, _, _ = _ops.compact(weight.row_ptr, weight.col_idx, _widened(weight.values), keep)
    if isinstance(g, GradientGrowth):  # the candidates' gradients go through a collective in Python
        nr, nc = gradient_growth(rp, ci, g.G, g.X, g.n, method=g.method, max_flops=g.max_flops,
                                 sample_factor=g.sample_factor, seed=g.seed, tile_rows=g.tile_rows,
                                 tile_elems=g.tile_elems, reduce_grads=g.reduce_grads)[:2]
    else:
        nr, nc = grow(rp, ci)[:2]
    return nr.to(keep.device), nc.to(keep.device), None, None, 0, 0, 0, 0, 0


class _Probe:
    """Stand-in exposing the shape/nnz/dtype that :func:`new_values` reads."""

    def __init__(self, shape, nnz, dtype, device):
        self.shape, self.nnz = shape, nnz
        self.values = torch.empty(0, dtype=dtype, device=device)


def remap_optimizer_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, remap: Remap) -> None:
    """Moves every per-entry tensor of ``optimizer.state[param]`` (first dimension old_nnz) to the
    new order, zero for new entries; scalars such as Adam's ``step`` are left alone."""
    state = optimizer.state.get(param)
    if not state:
        return
    for key, t in list(state.items()):
        if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == remap.old_nnz:
            state[key] = remap.apply(t)
