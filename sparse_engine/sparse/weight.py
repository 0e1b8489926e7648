"""SparseWeight: a weight matrix stored as CSR, costing O(nnz) memory.

Rows are outputs and columns are inputs, as in ``nn.Linear.weight``. Storage:

* ``row_ptr`` int64 [rows+1], ``col_idx`` int32 [nnz] (sorted, unique within a row)
* ``values`` float32/float64, or float16/bfloat16 [nnz] (2-byte storage; the kernels
  accumulate in float32), an ``nn.Parameter``: any optimizer, DDP and ``state_dict`` handle
  it unchanged. ``.to(torch.bfloat16)`` / ``.half()`` convert the values; indices stay.
* the transposed index ``csc_ptr`` int64 [cols+1], ``csc_row`` int32 [nnz] and
  ``csc_perm`` int32 [nnz] (CSR positions in column order; nnz < 2^31), so W^T G runs without atomics.
  It is derived, so it is not saved. It is built at its first use (``index``, the attributes
  ``csc_*``) and dropped whenever the pattern changes: only W^T G needs it, and a layer whose
  input needs no gradient (the first layer of an MLP) never computes W^T G, so it holds 8 bytes
  per connection less. :func:`sparse_engine.ops.spmm` passes :attr:`csr_index` when it can.

It is an ``nn.Module`` so that modules hold it as a child (``layer.weight``), ``.to()``
moves it, and topology controllers find every sparse weight with ``model.modules()``.
A ``state_dict`` may hold a different nnz than the module it is loaded into (topologies
change during training): loading resizes the tensors.
"""
from __future__ import annotations

import contextlib
import operator

import numpy as np
import torch
from torch import nn

from . import no_torchscript as _refuse
from .. import kernels  # noqa: F401  (loads the compiled operators)
from ..kernels.checks import check_csr
from .patterns import default_values, erdos_renyi_density, random_pattern

_INDEX_NAMES = ("row_ptr", "col_idx", "csc_ptr", "csc_row", "csc_perm")
_CSC_NAMES = _INDEX_NAMES[2:]
#: dtypes the values may have (spmm, spmm_t, sddmm; the fused RNN steps take float32/float64 only)
VALUE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _as_tensor(x, name: str, dtype) -> torch.Tensor:
    """``x`` as a 1-D tensor of ``dtype`` (None: its own). A numpy array is copied: a later write
    to it would change the index behind the kernels' check of it (csrc/index_check.h)."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.array(x, copy=True, order="C"))
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        t = _narrowed(t, name, dtype)
    return t


def _narrowed(t: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    """Integer ``t`` as ``dtype``; ValueError where an entry does not fit (a cast would wrap an
    int64 column of 2^32 + 5 to 5)."""
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
    info = torch.iinfo(dtype)
    if t.numel() and torch.iinfo(t.dtype).bits > info.bits:
        low, high = int(t.min()), int(t.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise ValueError(f"{name} holds {bad}, outside {dtype}'s range [{info.min}, {info.max}]")
    return t.to(dtype)


def _check_shape(shape) -> tuple[int, int]:
    """(rows, cols) of ``shape``: two non-negative ints, cols below 2^31 (the int32 column index)."""
    try:  # operator.index: ints, numpy's and 0-d integer tensors, never a float (a bool by hand)
        rows, cols = shape
        if isinstance(rows, bool) or isinstance(cols, bool):
            raise TypeError
        rows, cols = operator.index(rows), operator.index(cols)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be two non-negative ints (rows, cols), got {shape!r}") from None
    if rows < 0 or cols < 0:
        raise ValueError(f"shape must be non-negative, got {(rows, cols)}")
    if cols > torch.iinfo(torch.int32).max:
        raise ValueError(f"shape {(rows, cols)}: at most 2^31 - 1 columns (the column index is int32)")
    return rows, cols


class _ParametrizationDict(nn.ModuleDict):
    """The ``parametrizations`` container of a parametrized SparseWeight: a ModuleDict that takes
    the key ``"values"``, which torch's ModuleDict refuses because it is the name of its method
    ``ModuleDict.values()``. Reach a parametrization by item, ``w.parametrizations["values"]``
    (``w.parametrizations.values`` is the method); state_dict keys are torch's
    (``parametrizations.values.original``)."""

    def __setitem__(self, key: str, module: nn.Module) -> None:
        if not isinstance(key, str) or not isinstance(module, nn.Module):
            raise TypeError("a parametrization entry needs a str key and an nn.Module")
        self._modules[key] = module


class SparseWeight(nn.Module):
    """A (rows x cols) sparse matrix in CSR whose values are a trainable Parameter.

    ``torch.nn.utils.parametrize.register_parametrization(w, "values", P)`` works: ``w.values``
    is then ``P(original)`` at each access (what the products use) and the stored Parameter is
    ``w.parametrizations["values"].original`` (see :class:`_ParametrizationDict`; ready ones are in
    :mod:`sparse_engine.nn.parametrizations`). :meth:`set_pattern` refuses a parametrized weight:
    topology updates run inside ``sparse_engine.nn.unparametrized(model)``.
    """

    def __init__(self, row_ptr, col_idx, values, shape, *, validate: bool = True, requires_grad: bool = True):
        super().__init__()
        rows, cols = _check_shape(shape)
        row_ptr = _as_tensor(row_ptr, "row_ptr", torch.int64)
        col_idx = _as_tensor(col_idx, "col_idx", torch.int32)
        values = _as_tensor(values, "values", None)
        if values.dtype not in VALUE_DTYPES:
            raise TypeError(f"values must be float32 or float64 (or float16/bfloat16), got {values.dtype}")
        self._shape = (rows, cols)
        self.register_buffer("row_ptr", row_ptr)
        self.register_buffer("col_idx", col_idx)
        self.values = nn.Parameter(values, requires_grad=requires_grad)
        if validate:
            self.validate()
        self._drop_transpose()

    def __setattr__(self, name, value):
        if name == "parametrizations" and type(value) is nn.ModuleDict:  # torch's register_parametrization
            value = _ParametrizationDict(value)
        if name in _INDEX_NAMES:
            self._forget_index()
        super().__setattr__(name, value)
        if name in ("row_ptr", "col_idx") and self.__dict__.get("_buffers", {}).get("csc_ptr") is not None:
            self._drop_transpose()  # a new CSR buffer: the transposed index is of the old one

    def _forget_index(self) -> None:
        """Drops the kept :attr:`index` and :attr:`csr_index` tuples, so that they hold no replaced
        buffer alive."""
        self.__dict__.pop("_index_kept", None)
        self.__dict__.pop("_csr_kept", None)

    def _apply(self, fn, recurse=True):
        self._forget_index()  # the buffers are about to be replaced (.to(), .cuda(), .double(), ...)
        return super()._apply(fn, recurse)

    @property
    def _stored_values(self) -> nn.Parameter:
        """The Parameter holding the values: ``values`` itself, or the original under a
        parametrization with one original."""
        plist = self.__dict__.get("_modules", {}).get("parametrizations")
        if plist is not None and "values" in plist:
            return plist["values"].original
        return self.values

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def nnz(self) -> int:
        return self.col_idx.numel()

    @property
    def density(self) -> float:
        rows, cols = self._shape
        return self.nnz / (rows * cols) if rows * cols else 0.0

    @property
    def index(self) -> tuple[torch.Tensor, ...]:
        """(row_ptr, col_idx, csc_ptr, csc_row, csc_perm), as the raw operators take them; builds
        the transposed index if it is not there. The tuple is kept and handed out again while
        those five buffers are the same objects (a new pattern, a load or a move to another
        device replaces them): assembling it through nn.Module's attribute lookup took 2 us, as
        long as a whole product at small sizes."""
        kept, b = self.__dict__.get("_index_kept"), self._buffers
        if (kept is not None and kept[0] is b["row_ptr"] and kept[1] is b["col_idx"] and kept[2] is b["csc_ptr"]
                and kept[3] is b["csc_row"] and kept[4] is b["csc_perm"]):
            return kept
        index = (self.row_ptr, self.col_idx, *self._transpose())
        if not torch.compiler.is_compiling() and all(t is b.get(n) for t, n in zip(index, _INDEX_NAMES)):
            self.__dict__["_index_kept"] = index
        return index

    def parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, row_ptr, col_idx) as the products read them. A plain SparseWeight's are taken
        from its dicts, without nn.Module's ``__getattr__`` (about 0.5 us a lookup, a tenth of a
        whole product at small sizes); a parametrized one is of a subclass, and its values go
        through the parametrization."""
        if type(self) is SparseWeight:
            return self._parameters["values"], self._buffers["row_ptr"], self._buffers["col_idx"]
        return self.values, self.row_ptr, self.col_idx

    @property
    def has_transpose(self) -> bool:
        """Whether the transposed index is built (it is built at its first use)."""
        return self._buffers.get("csc_ptr") is not None

    @property
    def csr_index(self) -> tuple[torch.Tensor, ...]:
        """The index for the ops that read only the CSR (spmm, sddmm): :attr:`index` when the
        transposed index is built, else the CSR with an absent transposed index (``csc_ptr`` a
        zero-stride tensor of cols+1 entries, which only gives the column count; ``csc_row``
        and ``csc_perm`` empty), so it is not built for them. spmm_t and the recurrent steps
        refuse it. Kept like :attr:`index` while the CSR buffers are the same objects (assembling
        it took 2.6 us, a third of a whole spmm at small sizes)."""
        if self.has_transpose:
            return self.index
        kept, b = self.__dict__.get("_csr_kept"), self._buffers
        if (kept is not None and kept[0] is b["row_ptr"] and kept[1] is b["col_idx"]
                and kept[2].numel() == self._shape[1] + 1):
            return kept
        index = (self.row_ptr, self.col_idx, *self._absent_transpose())
        if not torch.compiler.is_compiling() and index[0] is b["row_ptr"] and index[1] is b["col_idx"]:
            self.__dict__["_csr_kept"] = index
        return index

    def _absent_transpose(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stand-in for a transposed index that is not built (see :attr:`csr_index`); two
        small tensors, kept once made (eagerly) for this device and shape."""
        dev, cols = self.row_ptr.device, self._shape[1]
        absent = self.__dict__.get("_absent_csc")
        if absent is None or absent[0].device != dev or absent[0].numel() != cols + 1:
            with outside_inference_mode():
                none = torch.empty(0, dtype=torch.int32, device=dev)
                absent = (torch.zeros((), dtype=torch.int64, device=dev).expand(cols + 1), none, none)
            if not torch.compiler.is_compiling():  # a tracer's tensors must not outlive its trace
                self.__dict__["_absent_csc"] = absent
        return absent

    def extra_repr(self) -> str:
        rows, cols = self._shape
        return f"shape=({rows}, {cols}), nnz={self.nnz}, density={self.density:.4g}, dtype={self.values.dtype}"

    # ---------------------------------------------------------------- structure
    def validate(self) -> None:
        """Raises ValueError naming the first structural problem found. O(nnz)."""
        check_csr(self.row_ptr, self.col_idx, self._shape, self.values.numel())

    def _drop_transpose(self) -> None:
        """Forgets the transposed index (the pattern changed); the next use builds it."""
        self._forget_index()
        for name in _CSC_NAMES:  # register_buffer would look the name up, and so build it
            self._buffers[name] = None
            self._non_persistent_buffers_set.add(name)

    def _transpose(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(csc_ptr, csc_row, csc_perm), built now if it is not there. Under ``torch.export``
        (and so ONNX export) it is not built: the exported graph is for inference and never
        reads W^T (the ONNX translations read only the CSR), and a buffer made while the
        exporter traces would keep its tracing tensor."""
        if not self.has_transpose:
            if torch.compiler.is_exporting():
                return self._absent_transpose()
            with outside_inference_mode():
                csc = torch.ops.sparse_engine.transpose_index(self.row_ptr, self.col_idx, self._shape[1])
            self._buffers.update(zip(_CSC_NAMES, csc))  # registered (non-persistent) by _drop_transpose
        return tuple(self._buffers[n] for n in _CSC_NAMES)

    def set_pattern(self, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                    *, validate: bool = True) -> None:
        """Replaces the topology in place (same shape), keeping the Parameter object so an
        optimizer that holds it keeps working. The caller resets optimizer state."""
        if "parametrizations" in self._modules and "values" in self._modules["parametrizations"]:
            raise ValueError("cannot change the topology of a SparseWeight whose values are parametrized (weight "
                             "drop, weight norm, ...): the magnitudes and optimizer state belong to the stored "
                             "values; run the update inside `with sparse_engine.nn.unparametrized(model):`")
        self.row_ptr = _narrowed(row_ptr, "row_ptr", torch.int64)
        self.col_idx = _narrowed(col_idx, "col_idx", torch.int32)
        self._assign_values(values.to(self.values.dtype))
        if validate:
            self.validate()
        self._drop_transpose()

    def _assign_values(self, data: torch.Tensor) -> None:
        """Gives ``values`` new data (maybe another nnz), keeping the Parameter object.
        Autograd caches a gradient accumulator per parameter that remembers its shape; while
        an old graph is still referenced (the previous batch's ``loss``) it would be reused and
        the next backward would fail with "invalid gradient ... expected shape [old nnz]".
        Assigning data of another dtype first makes autograd drop that cached accumulator.
        With the shape unchanged the accumulator is kept: DistributedDataParallel registers its
        gradient hooks on it, and dropping it would silently stop the averaging of this
        parameter's gradients (a new size needs a new DDP anyway, see sparse_engine.distributed)."""
        v = self._stored_values
        if data.shape != v.shape or data.dtype != v.dtype or data.device != v.device:
            other = torch.float32 if data.dtype == torch.float64 else torch.float64
            v.data = torch.empty(0, dtype=other, device=data.device)
        v.data = data

    # ------------------------------------------------------------- state_dict
    def get_extra_state(self):
        _refuse.check_not_legacy_onnx_export()  # it would fail on this dict with an AttributeError
        return {"shape": self._shape}

    def set_extra_state(self, state) -> None:
        shape = tuple(int(s) for s in state["shape"])
        if shape != self._shape:  # as torch's "size mismatch" for a dense weight
            raise ValueError(f"size mismatch: the state holds a {shape[0]} x {shape[1]} SparseWeight, this one is "
                             f"{self._shape[0]} x {self._shape[1]} (a SparseWeight keeps its shape; its pattern and "
                             "nnz may change)")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Another shape is refused before anything is loaded (set_extra_state says why).
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and "shape" in extra:
            self.set_extra_state(extra)
        # A checkpoint may hold another nnz: resize first, keeping the Parameter object.
        # (Under a parametrization of one original the values are parametrizations.values.original.)
        for name in ("row_ptr", "col_idx", "values"):
            key = name if name != "values" or "parametrizations" not in self._modules else \
                "parametrizations.values.original"
            src = state_dict.get(prefix + key)
            cur = self._stored_values if name == "values" else getattr(self, name)
            if isinstance(src, torch.Tensor) and src.shape != cur.shape:
                fresh = torch.empty(src.shape, dtype=cur.dtype, device=cur.device)
                if name == "values":
                    self._assign_values(fresh)
                else:
                    setattr(self, name, fresh)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self.validate()
        self._drop_transpose()

    def __getattr__(self, name: str):
        """nn.Module's lookup; a Tensor method asked of a SparseWeight (``nn.init.orthogonal_(
        lstm.weight_hh_l0)`` calls ``.ndimension()``) fails with a message saying what to use.
        The transposed index (``csc_ptr``, ``csc_row``, ``csc_perm``) is built at its first access."""
        if name in _CSC_NAMES and name in self.__dict__.get("_buffers", ()):
            return self._transpose()[_CSC_NAMES.index(name)]
        try:
            return super().__getattr__(name)
        except AttributeError:
            if hasattr(torch.Tensor, name):
                raise AttributeError(
                    f"SparseWeight is a module holding a CSR matrix, not a tensor: it has no Tensor attribute "
                    f"{name!r}. Initialise it with sparse_engine.init (the torch.nn.init functions for "
                    "SparseWeights, e.g. sparse_engine.init.orthogonal_(weight)); its trainable values are "
                    "weight.values, a dense copy weight.to_dense()") from None
            raise

    def __prepare_scriptable__(self):
        """Called by ``torch.jit.script`` on every submodule: one clear refusal (see
        :mod:`sparse_engine.io.export`) instead of a TorchScript compile error."""
        raise RuntimeError(_refuse.NO_TORCHSCRIPT)

    # -------------------------------------------------------------- conversions
    def coo(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """COO view: (row int64 [nnz], col int64 [nnz], values [nnz]) in CSR order."""
        counts = self.row_ptr.diff()
        row = torch.repeat_interleave(torch.arange(self._shape[0], device=counts.device), counts)
        return row, self.col_idx.long(), self.values

    def to_dense(self) -> torch.Tensor:
        """Dense copy, for tests and small matrices only (O(rows*cols) memory)."""
        row, col, v = self.coo()
        dense = torch.zeros(self._shape, dtype=v.dtype, device=v.device)
        dense[row, col] = v.detach()
        return dense

    def to_scipy(self):
        import scipy.sparse as sp

        values = self.values.detach().cpu()
        if values.element_size() == 2:  # scipy.sparse takes neither float16 nor bfloat16 (exact in float32)
            values = values.float()
        return sp.csr_matrix(
            (values.numpy(), self.col_idx.cpu().numpy(), self.row_ptr.cpu().numpy()),
            shape=self._shape,
        )

    def to_torch_sparse_csr(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.row_ptr, self.col_idx.long(), self.values.detach(), size=self._shape)

    def to_torch_sparse(self):
        """As a ``torch_sparse.SparseTensor`` (PyG); needs the optional torch-sparse package."""
        from torch_sparse import SparseTensor

        return SparseTensor(rowptr=self.row_ptr, col=self.col_idx.long(), value=self.values.detach(),
                            sparse_sizes=self._shape, is_sorted=True)

    # ------------------------------------------------------------- constructors
    @classmethod
    def from_csr(cls, row_ptr, col_idx, values, shape, **kwargs) -> "SparseWeight":
        return cls(row_ptr, col_idx, values, shape, **kwargs)

    @classmethod
    def from_dense(cls, dense: torch.Tensor, mask: torch.Tensor | None = None) -> "SparseWeight":
        """Keeps the nonzeros of ``dense`` (or the True entries of ``mask``). For tests and
        small matrices: the input is dense by definition."""
        if not isinstance(dense, torch.Tensor) or dense.dim() != 2:
            raise ValueError("dense must be a 2-D torch.Tensor")
        dense = dense.detach()
        if mask is None:
            mask = dense != 0
        elif mask.shape != dense.shape:
            raise ValueError(f"mask must have the shape of dense {tuple(dense.shape)}, got {tuple(mask.shape)}")
        mask = mask.to(torch.bool)
        row, col = mask.nonzero(as_tuple=True)
        counts = torch.bincount(row, minlength=dense.shape[0])
        row_ptr = torch.zeros(dense.shape[0] + 1, dtype=torch.int64, device=dense.device)
        torch.cumsum(counts, 0, out=row_ptr[1:])
        values = dense[row, col]
        if not values.is_floating_point():
            values = values.float()
        return cls(row_ptr, col.to(torch.int32), values.clone(), dense.shape)

    @classmethod
    def from_scipy(cls, matrix, dtype: torch.dtype | None = None) -> "SparseWeight":
        """From any scipy.sparse matrix/array. Duplicates are summed and rows sorted (scipy's
        canonical form); explicitly stored zeros stay as structural entries."""
        import scipy.sparse as sp

        if not sp.issparse(matrix):
            raise TypeError(f"matrix must be a scipy.sparse matrix, got {type(matrix).__name__}")
        if np.issubdtype(matrix.dtype, np.complexfloating):
            raise TypeError(f"matrix must hold real values, got {matrix.dtype}")
        m = sp.csr_matrix(matrix, copy=True)
        m.sum_duplicates()
        m.sort_indices()
        values = torch.from_numpy(np.ascontiguousarray(m.data))
        if dtype is not None:
            values = values.to(dtype)
        elif values.dtype not in VALUE_DTYPES:
            values = values.to(torch.float32)
        return cls(m.indptr, m.indices, values, m.shape)

    @classmethod
    def from_torch_sparse(cls, tensor) -> "SparseWeight":
        """From a ``torch_sparse.SparseTensor`` (PyG)."""
        row_ptr, col, value = tensor.csr()
        if value is None:
            value = torch.ones(col.numel())
        return cls(row_ptr, col.to(torch.int32), value.detach().clone(), tensor.sparse_sizes())

    @classmethod
    def random(cls, rows: int, cols: int, density: float | None = None, *, nnz: int | None = None,
               generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> "SparseWeight":
        """Uniformly random pattern with exactly ``nnz`` (or round(density*rows*cols)) entries,
        values from :func:`sparse_engine.init.default_values`. O(nnz) time and memory."""
        if (density is None) == (nnz is None):
            raise ValueError("give exactly one of density= and nnz=")
        rows, cols = _check_shape((rows, cols))
        if dtype not in VALUE_DTYPES:
            raise TypeError(f"dtype must be one of {', '.join(map(str, VALUE_DTYPES))}, got {dtype}")
        if density is not None:
            if not 0.0 <= density <= 1.0:
                raise ValueError(f"density must be in [0, 1], got {density}")
            nnz = int(round(density * rows * cols))
        row_ptr, col_idx = random_pattern(rows, cols, nnz, generator)
        values = default_values(nnz, rows, dtype, generator)
        return cls(row_ptr, col_idx, values, (rows, cols), validate=False)

    @classmethod
    def erdos_renyi(cls, rows: int, cols: int, epsilon: float = 20.0, *, generator=None,
                    dtype: torch.dtype = torch.float32) -> "SparseWeight":
        """Erdos-Renyi topology (SET): density epsilon*(rows+cols)/(rows*cols), capped at 1."""
        density = erdos_renyi_density(rows, cols, epsilon)
        return cls.random(rows, cols, density, generator=generator, dtype=dtype)


def sparse_weights(module: nn.Module) -> dict[str, SparseWeight]:
    """Every SparseWeight of ``module`` by qualified name, in ``named_modules`` order."""
    return {name: m for name, m in module.named_modules() if isinstance(m, SparseWeight)}


def outside_inference_mode():
    """Where a tensor kept between calls is made (the transposed index, the dense path's buffers): outside
    ``torch.inference_mode``, whose tensors a later call outside it could neither write nor save for a
    backward. (A compiled graph asks nothing: dynamo would break the graph at the question.)"""
    if torch.compiler.is_compiling() or not torch.is_inference_mode_enabled():
        return contextlib.nullcontext()
    return torch.inference_mode(False)
