"""The memory of one training step of a sparse recurrent network, predicted from its sizes alone.

Users train recurrent layers of up to a million units; before a run they need to know whether a
step fits. :func:`predict` answers for a :class:`~sparse_engine.nn.SparseRNN` / ``SparseLSTM`` /
``SparseGRU`` / ``SparseCTRNN``, the command line's ``SequenceModel`` (the recurrent layers plus
an optional embedding and a dense readout), or their :class:`RecurrentSizes`, without allocating
anything (a million-unit prediction takes milliseconds). :func:`recompute_for_budget` picks the
recompute interval (``recompute_every``) for a budget, :func:`largest_hidden` the widest layer
that fits one.

How: a replay of the step's allocations in the order the code makes and frees them, kept in a
ledger by kind (:data:`KINDS`), whose high-water mark is the prediction: :mod:`.memory_step` (the
stack, the head, the optimizer) and :mod:`.memory_recurrence` (one ``Recurrence`` call: what its
forward keeps, what its backward allocates, the kernels' copies). Every line of the replay names
what it stands for in the code.

The step is the steady state of a training loop: ``opt.zero_grad()`` (gradients freed),
forward, backward, ``opt.step()``, with the transposed index of every sparse weight built and the
optimizer state made (both by the first step). For a bare module the loss is ``out.sum()`` or any
loss whose gradient is one tensor of the output's size (its own temporaries are the caller's), and
the caller holds the input batch and the output through the step; a ``SequenceModel`` step is
the command line's (its readout, cross-entropy or MSE loss, the batch's targets). Growth by
gradient (RigL, Selfish-RNN) and PackedSequence inputs are not modelled, nor ``proj_size``; a
module on the dense compute path (small layers, :mod:`.compute`) is refused: its memory is
torch's recurrence's and at most a few hundred MB.

The optimizer: ``"adam"`` (two moments; on the CPU torch's per-tensor Adam takes two temporaries
of the largest parameter, on CUDA the foreach Adam one of all of them), ``"sgd"`` (no state) and
``"sgd-momentum"`` (one buffer). CUDA: allocations rounded up to the caching allocator's 512 bytes,
no padded copies; not checked on a GPU yet. Checked on the CPU against the allocation events of
torch's profiler (``tests/memory/test_memory_model.py``) and the process's resident memory at 10,000 and
100,000 units (``benchmarks/bench_memory_model.py``, docs/memory.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .recurrence_replay import KINDS, PHASES
from .step_replay import MODES, OPTIMIZERS, Head, RecurrentSizes, check_args, replay

__all__ = ["KINDS", "PHASES", "OPTIMIZERS", "RecurrentSizes", "Head", "MemoryBreakdown", "MemoryBudgetError",
           "sizes_of", "predict", "recompute_for_budget", "least_memory_interval", "ADAM_STATES", "SAVED_DTYPES",
           "MemoryPlan", "memory_plans", "plan_for_budget", "largest_hidden", "evaluation_peak",
           "parse_size", "format_size"]


def _weight_nnz(w):
    """A matrix's nonzeros (SparseWeight) or None (a dense Parameter)."""
    return w.nnz if hasattr(w, "nnz") else None


def sizes_of(module, **overrides) -> RecurrentSizes:
    """:class:`RecurrentSizes` of a built module: a SparseRNN/LSTM/GRU, a SparseCTRNN, or a
    ``SequenceModel`` (any module with ``rnn`` and ``readout`` children, read as the command
    line's model). ``overrides``: fields to replace (``recompute_every``, ``device``, ...)."""
    head = None
    if hasattr(module, "rnn") and hasattr(module, "readout"):
        embed = module.embed
        head = Head(module.readout.out_features, module.readout_mode, module.kind,
                    None if embed is None else embed.num_embeddings)
        module = module.rnn
    mode = getattr(module, "mode", None)
    if mode not in MODES:
        raise TypeError(f"module must be a SparseRNN, SparseLSTM, SparseGRU, SparseCTRNN or SequenceModel, "
                        f"got {type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise ValueError("proj_size is not modelled (a projected LSTM is composed under plain autograd)")
    if mode == "CTRNN":
        names = [("weight_ih", "weight_hh")]
    else:
        names = [(n, n.replace("weight_ih", "weight_hh")) for n in module._flat_weights_names
                 if n.startswith("weight_ih")]
    ws = [(getattr(module, a), getattr(module, b)) for a, b in names]
    first = ws[0][0]
    ref = first.values if hasattr(first, "nnz") else first
    sizes = RecurrentSizes(
        mode, module.input_size, module.hidden_size, tuple(_weight_nnz(a) for a, _ in ws),
        tuple(_weight_nnz(b) for _, b in ws), layers=getattr(module, "num_layers", 1),
        bidirectional=getattr(module, "bidirectional", False),
        bias=bool(module.bias) if mode != "CTRNN" else module.bias is not None,
        dropout=getattr(module, "dropout", 0.0), unfolds=getattr(module, "unfolds", 1), fused=module.fused,
        compute="sparse" if mode == "CTRNN" else module.compute,
        recompute_every=getattr(module, "recompute_every", None),
        saved_dtype=getattr(module, "saved_dtype", None), head=head, dtype=ref.dtype,
        device=ref.device.type)
    return replace(sizes, **overrides)


# ------------------------------------------------------------------------------ the prediction
@dataclass(frozen=True)
class MemoryBreakdown:
    """Predicted bytes of one training step at its peak, by kind (:data:`KINDS`; they add up to
    ``peak``), the phase it is in (``forward``: the forward's end, ``backward``, ``optimizer``:
    the optimizer step), each phase's own peak, the recompute interval it was predicted for and
    which layer-directions take the stacked products (``stacked``, :data:`..recurrence.STACK_BYTES`)."""
    weights: int
    index: int
    gradients: int
    optimizer: int
    activations: int
    workspace: int
    batch: int
    peak: int
    phase: str
    phases: dict = field(default_factory=dict)
    recompute_every: int | None = None
    stacked: tuple = ()

    def rows(self) -> list[tuple[str, int]]:
        """(kind, bytes) at the peak, then the total: the table the command line prints."""
        return [(kind, getattr(self, kind)) for kind in KINDS] + [(f"peak ({self.phase})", self.peak)]


_UNSET = object()


def predict(model, steps: int, batch: int, optimizer: str = "adam", *, recompute_every=_UNSET,
            **overrides) -> MemoryBreakdown:
    """The predicted peak memory of one training step of ``model`` (a module, see :func:`sizes_of`,
    or :class:`RecurrentSizes`) on ``batch`` sequences of ``steps`` steps with ``optimizer``
    (:data:`OPTIMIZERS`). ``recompute_every``: the interval to predict for (default: the model's);
    ``overrides``: other :class:`RecurrentSizes` fields (``dtype``, ``device``, ...). Reads sizes only."""
    s = model if isinstance(model, RecurrentSizes) else sizes_of(model)
    if recompute_every is not _UNSET:
        overrides["recompute_every"] = recompute_every
    if overrides:
        s = replace(s, **overrides)
    k = s.recompute_every
    check_args(s, steps, batch, optimizer, k)
    led, runs = replay(s, steps, batch, optimizer)
    total, phase, kinds = led.top
    return MemoryBreakdown(**kinds, peak=total, phase=phase, phases=dict(led.phases), recompute_every=k,
                           stacked=tuple(r.stacked for r in runs))


# ------------------------------------------------------------------------------- budgets
class MemoryBudgetError(ValueError):
    """A step does not fit the budget even with recomputation; ``minimum`` is the smallest
    predicted peak and ``recompute_every`` the interval that gives it."""

    def __init__(self, message: str, minimum: int, recompute_every: int | None):
        super().__init__(message)
        self.minimum, self.recompute_every = minimum, recompute_every


def _intervals(T: int) -> list[int]:
    """The recompute intervals tried: every k up to 2,048 steps, a geometric ladder beyond."""
    ks = set(range(1, min(T, 2048) + 1))
    k = 2048
    while k < T:
        k = int(k * 1.05) + 1
        ks.add(min(k, T))
    return sorted(ks)


def _need(model, steps, batch, optimizer, k, eval_batch, overrides) -> tuple[int, MemoryBreakdown, int | None]:
    """(bytes a step and, with ``eval_batch``, the evaluation batches need, the step's breakdown,
    the evaluation's peak or None)."""
    got = predict(model, steps, batch, optimizer, recompute_every=k, **overrides)
    if eval_batch is None:
        return got.peak, got, None
    evaluation = evaluation_peak(model, steps, eval_batch, optimizer, recompute_every=k, **overrides)
    return max(got.peak, evaluation), got, evaluation


def least_memory_interval(model, steps: int, batch: int, optimizer: str = "adam", *, eval_batch: int | None = None,
                          **overrides) -> tuple[int, int, MemoryBreakdown]:
    """(recompute_every, the bytes it needs, the step's breakdown) of the interval with the
    smallest predicted peak (the largest such k on a tie); with ``eval_batch`` the evaluation
    batches between steps (:func:`evaluation_peak`) count too."""
    least, step, _, k = _least(model, steps, batch, optimizer, eval_batch, overrides)
    return k, least, step


def _least(model, steps, batch, optimizer, eval_batch, overrides) -> tuple:
    """:func:`_need`'s (need, breakdown, evaluation) and the interval k of least need (the largest on a tie)."""
    return min(((*_need(model, steps, batch, optimizer, k, eval_batch, overrides), k) for k in _intervals(steps)),
               key=lambda t: (t[0], -t[3]))


def recompute_for_budget(model, steps: int, batch: int, budget: int, optimizer: str = "adam", *,
                         eval_batch: int | None = None, **overrides) -> tuple[int | None, MemoryBreakdown]:
    """(recompute_every, the step's breakdown) for a step within ``budget`` bytes: None (store every
    step) where that fits, else the interval with the smallest predicted peak
    (:func:`least_memory_interval`): the least memory wins, leaving the most headroom. A larger k
    recomputes fewer steps (all but the last segment's: T - 1 - (T - 1) % k of T), at most about
    half a forward less; a user who prefers that time to memory names k. With ``eval_batch``, the
    evaluation batches between steps (:func:`evaluation_peak`) must fit too.
    :class:`MemoryBudgetError` when no interval fits, naming the smallest peak possible."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a number of bytes >= 1, got {budget!r}")
    stored, step, _ = _need(model, steps, batch, optimizer, None, eval_batch, overrides)
    if stored <= budget:
        return None, step
    k, least, step = least_memory_interval(model, steps, batch, optimizer, eval_batch=eval_batch, **overrides)
    if least > budget:
        what = "a step" + (f" and evaluation batches of {eval_batch}" if eval_batch else "")
        raise MemoryBudgetError(
            f"does not fit even with recomputation: {what} need at least {format_size(least)} "
            f"(recompute_every={k}; {format_size(stored)} storing every step), the budget is "
            f"{format_size(budget)}", least, k)
    return k, step


#: the dtype of Adam's moments -> the optimizer the model replays (CompactAdam for bfloat16)
ADAM_STATES = {"float32": "adam", "bfloat16": "adam-bf16"}
#: the dtype of a stored run's kept c's and activations -> the modules' ``saved_dtype``
SAVED_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class MemoryPlan:
    """One choice of the memory options of a training run: ``recompute_every`` (None: store every
    step), ``adam_state`` (:data:`ADAM_STATES`), the bytes it needs (the step's peak, or the
    evaluation batches' where larger) and the step's breakdown."""
    recompute_every: int | None
    adam_state: str
    need: int
    step: MemoryBreakdown
    evaluation: int | None = None
    saved_dtype: str = "float32"  # the kept c's and activations (the modules' saved_dtype)


def memory_plans(model, steps: int, batch: int, *, recompute_every="auto", adam_state: str = "auto",
                 saved_dtype: str = "float32", eval_batch: int | None = None, **overrides) -> list[MemoryPlan]:
    """The choices allowed by ``recompute_every`` (an interval, None, or ``"auto"``: storing, then
    the interval of least memory), ``adam_state`` (``"float32"``, ``"bfloat16"`` or ``"auto"``:
    both) and ``saved_dtype`` (the same three: bfloat16 saved activations, which only a stored run
    takes), cheapest first: exact ones before approximate ones (float32 moments before bfloat16,
    then bfloat16 saved activations, whose rounding reaches every gradient), and within each storing
    before recomputing (recomputation costs time, not accuracy)."""
    for name, value, choices in (("adam_state", adam_state, ADAM_STATES), ("saved_dtype", saved_dtype, SAVED_DTYPES)):
        if value not in ("auto", *choices):
            raise ValueError(f"{name} must be auto, float32 or bfloat16, got {value!r}")
    plans = []
    for saved in list(SAVED_DTYPES) if saved_dtype == "auto" else [saved_dtype]:
        ks = [None, "auto"] if recompute_every == "auto" else [recompute_every]
        extra = overrides
        if SAVED_DTYPES[saved] is not None:  # a stored run only
            if recompute_every not in (None, "auto"):
                raise ValueError("saved_dtype bfloat16 keeps every step: recompute_every must be None or auto")
            ks, extra = [None], {**overrides, "saved_dtype": SAVED_DTYPES[saved]}
        for state in (list(ADAM_STATES) if adam_state == "auto" else [adam_state]):
            optimizer = ADAM_STATES[state]
            for k in ks:
                if k == "auto":
                    need, step, evaluation, k = _least(model, steps, batch, optimizer, eval_batch, extra)
                else:
                    need, step, evaluation = _need(model, steps, batch, optimizer, k, eval_batch, extra)
                plans.append(MemoryPlan(k, state, need, step, evaluation, saved))
    return plans


def plan_for_budget(model, steps: int, batch: int, budget: int, **options) -> MemoryPlan:
    """The cheapest of :func:`memory_plans` (``options``: its keywords) whose need fits ``budget``
    bytes; :class:`MemoryBudgetError` naming the least any of them needs when none fits."""
    plans = memory_plans(model, steps, batch, **options)
    for plan in plans:
        if plan.need <= budget:
            return plan
    least = min(plans, key=lambda p: p.need)
    raise MemoryBudgetError(f"does not fit: at least {format_size(least.need)} (recompute_every="
                            f"{least.recompute_every}, Adam moments {least.adam_state}), the budget is "
                            f"{format_size(budget)}", least.need, least.recompute_every)


def largest_hidden(build, steps: int, batch: int, budget: int, optimizer: str = "adam", *, auto: bool = False,
                   low: int = 1, high: int = 2**31 - 1) -> tuple[int, int | None, MemoryBreakdown] | None:
    """The largest hidden size whose step fits ``budget`` bytes, as (hidden, recompute_every, its
    breakdown), or None if not even ``low`` fits: ``build(hidden)`` gives the :class:`RecurrentSizes`
    of each size tried, predicted with their own ``recompute_every`` or, with ``auto``, the interval
    :func:`recompute_for_budget` picks. Bisection: the peak grows with the hidden size."""
    def fits(hidden):
        if not auto:
            got = predict(build(hidden), steps, batch, optimizer)
            return (got.recompute_every, got) if got.peak <= budget else None
        try:
            return recompute_for_budget(build(hidden), steps, batch, budget, optimizer)
        except MemoryBudgetError:
            return None

    best = fits(low)
    if best is None:
        return None
    best, lo, hi = (low, *best), low, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = fits(mid)
        if got is not None:
            lo, best = mid, (mid, *got)
        else:
            hi = mid - 1
    return best


def evaluation_peak(model, steps: int, batch: int, optimizer: str = "adam", **overrides) -> int:
    """Bytes of an evaluation batch under ``torch.no_grad`` between training steps (the command
    line scores the test set after each epoch, in batches of 256): the training forward's peak at
    that batch, an upper bound (under no_grad a run keeps nothing for a backward: no c's,
    activations or recomputation states), plus the gradients the last training step left."""
    got = predict(model, steps, batch, optimizer, **overrides)
    return got.phases["forward"] + got.weights


# --------------------------------------------------------------------------- sizes as text
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``16G``, ``512M``, ``1.5T`` or ``1000000`` (binary units, an optional
    trailing ``B`` or ``iB``). ValueError saying what was expected."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    number = t[:-1] if unit else t
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a size such as 16G, 512M or 1000000 (bytes), got {text!r}")
    return int(value * _UNITS[unit])


def format_size(nbytes: int) -> str:
    """``nbytes`` in binary units, three significant digits: ``1.23 GiB``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"
