"""The memory model (:mod:`sparse_engine.memory`) on the command line: ``train``'s plan before
it builds anything (its estimate line, ``--recompute-every auto``, the refusal of a run that would
not fit ``--memory-budget``) and ``bench --memory``'s table. Kept apart from train_run and bench_run
because both read the same sizes the same way and neither needs the other's work."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..memory import (ADAM_STATES, Head, MemoryBudgetError, RecurrentSizes, evaluation_peak, format_size,
                      largest_hidden, memory_plans, parse_size, predict, recompute_for_budget)
from ..runtime.timing import available_memory_bytes
from .config import BenchConfig, ConfigError

#: the batch of train's evaluation of the test set (evaluate's default for the recurrent models)
EVAL_BATCH = 256


def budget_bytes(value, device: torch.device) -> tuple[int | None, str]:
    """(bytes, where they come from) of ``--memory-budget``: the value given, else the memory free
    now (``MemAvailable``; on a GPU its free memory); None where that cannot be read."""
    if value is not None:
        return parse_size(value), "--memory-budget"
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], "the GPU's free memory"
    return available_memory_bytes(), "the memory available now"


def run_sizes(options: Mapping, meta: dict, device: torch.device) -> RecurrentSizes:
    """The :class:`RecurrentSizes` of the SequenceModel a train run builds (``sequence_model``), from
    its options and its task's ``meta``, without building it; the compute path as the module's default."""
    kind = meta["kind"]
    readout = meta.get("readout") or ("last" if kind == "classify" else "steps")
    head = Head(meta["n_out"], readout, kind, meta.get("vocab"))
    return RecurrentSizes.build(options["model"], meta["n_in"], options["hidden"], layers=options["layers"],
                                density=options["density"], sparse=options["sparse"], head=head, compute=None,
                                device=device.type)


@dataclass(frozen=True)
class TrainingPlan:
    """What ``train``'s memory plan chose: the recompute interval, the dtype of Adam's moments, the
    batch of the test set's evaluation, and the line it prints (None: nothing to say)."""
    recompute_every: int | None
    adam_state: str
    eval_batch: int
    saved_dtype: str
    line: str | None


def plan_training(cfg, meta: dict, steps: int, n_test: int, device: torch.device) -> TrainingPlan:
    """The memory plan of a run of ``cfg``'s options on sequences of ``steps`` steps: the cheapest
    of :func:`~sparse_engine.memory.memory_plans` whose step fits the budget (the options set to
    ``auto`` chosen, exact ones first), evaluated in batches of up to :data:`EVAL_BATCH` sequences,
    halved until they fit too (the evaluation never forces an approximation; the batch changes
    only the order in which the test loss is summed). ConfigError naming ``--memory-budget`` when
    nothing allowed fits. No line for a model on the dense compute path (small layers, whose
    memory the model does not replay) unless a budget was asked for."""
    budget, source = budget_bytes(cfg.memory_budget, device)
    sizes = run_sizes(vars(cfg), meta, device)
    B, B_eval = cfg.batch_size, max(1, min(EVAL_BATCH, n_test))
    try:
        plans = memory_plans(sizes, steps, B, recompute_every=cfg.recompute_every, adam_state=cfg.adam_state,
                             saved_dtype=_saved_choice(cfg, sizes))
    except ValueError as exc:
        if "dense path" not in str(exc):
            raise
        state = "float32" if cfg.adam_state == "auto" else cfg.adam_state
        saved = "float32" if cfg.saved_dtype == "auto" else cfg.saved_dtype
        line = None if cfg.memory_budget is None else (
            "memory: not estimated, --memory-budget not checked: layers this small compute on the dense path "
            "(docs/compute_paths.md), the memory model covers the sparse one")
        return TrainingPlan(None, state, B_eval, saved, line)

    def evaluation(plan, batch):
        return evaluation_peak(sizes, steps, batch, ADAM_STATES[plan.adam_state], recompute_every=plan.recompute_every)

    chosen = None
    for plan in plans:
        if budget is not None and plan.need > budget:
            continue
        batch = B_eval
        evaluated = evaluation(plan, batch)
        while batch > 1 and budget is not None and evaluated > budget:
            batch //= 2
            evaluated = evaluation(plan, batch)
        if budget is None or evaluated <= budget:
            chosen = plan, batch, evaluated
            break
    fits = chosen is not None
    if not fits:  # the choice of least memory, for the refusal
        plan = min(plans, key=lambda p: p.need)
        chosen = plan, 1, evaluation(plan, 1)
    plan, batch, evaluated = chosen
    k, state = plan.recompute_every, plan.adam_state
    options = "every step stored" if k is None else f"recompute_every {k}" + (
        " (auto)" if cfg.recompute_every == "auto" else "")
    options += f"; Adam moments {state}" + (" (auto)" if cfg.adam_state == "auto" and state != "float32" else "")
    if plan.saved_dtype != "float32":
        options += "; saved activations bfloat16" + (" (auto)" if cfg.saved_dtype == "auto" else "")
    need = max(plan.need, evaluated)
    line = (f"memory: estimated peak {format_size(need)} (a training step of {B}: {format_size(plan.need)}, "
            f"{plan.step.phase}; evaluation batches of {batch}: {format_size(evaluated)}; {options})")
    if budget is None:
        return TrainingPlan(k, state, batch, plan.saved_dtype,
                            line + "; no budget: the available memory cannot be read here")
    if not fits:
        what = "a training step" if plan.need >= evaluated else f"an evaluation batch of {batch}"
        pinned = [f"--{o}" for o, v in (("recompute-every", cfg.recompute_every), ("adam-state", cfg.adam_state),
                                        ("saved-dtype", cfg.saved_dtype)) if v != "auto"]
        hint = f"{' and '.join(pinned)} auto, " if pinned else ""
        least = "even with " if len(plans) > 1 else ""  # the choice of least memory
        raise ConfigError("memory_budget", f"{what} needs an estimated {format_size(need)} ({least}{options}), "
                                           f"more than the budget of {format_size(budget)} ({source}): try {hint}a "
                                           "smaller --batch-size or --hidden, or a larger --memory-budget")
    line += f" of a budget of {format_size(budget)} ({source})"
    if cfg.memory_budget is not None:  # a run planned to fit a card: how long its steps take, too
        line += "; " + _step_time(sizes, steps, B, plan, device)
    return TrainingPlan(k, state, batch, plan.saved_dtype, line)


def _saved_choice(cfg, sizes) -> str:
    """``--saved-dtype`` as the plans take it: a CT-RNN keeps its own (no option), and a fixed
    recomputation interval stores no run to narrow."""
    if sizes.mode == "CTRNN" or cfg.recompute_every not in ("auto", None):
        return "float32" if cfg.saved_dtype == "auto" else cfg.saved_dtype
    return cfg.saved_dtype


def _step_time(sizes, steps: int, batch: int, plan, device: torch.device) -> str:
    """The plan line's estimated step time (:mod:`.step_estimate`), or why there is none."""
    from .step_estimate import estimate_step

    try:
        estimate = estimate_step(sizes, steps, batch, ADAM_STATES[plan.adam_state], device)
        seconds = estimate.seconds(steps, plan.recompute_every)
    except torch.OutOfMemoryError:  # the timed blocks did not fit beside what is there
        return "step time not estimated (no memory for its timed products)"
    finally:
        if device.type == "cuda":  # the timed blocks' memory back to the card, for the run
            torch.cuda.empty_cache()
    return f"estimated step {seconds:.3g} s (its products and cells timed here at this size: an estimate)"


def memory_bench(cfg: BenchConfig) -> dict:
    """``bench --memory``: the predicted peak of a training step by kind and phase, as a table, and
    with a budget the largest hidden size that fits (same nonzeros per row). Builds nothing."""
    from rich.console import Console
    from rich.table import Table

    device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    row_nnz = cfg.density * cfg.hidden

    def sizes(hidden: int, k=None) -> RecurrentSizes:
        return RecurrentSizes.build(cfg.model, cfg.input_size, hidden, layers=cfg.layers, row_nnz=row_nnz,
                                    sparse=cfg.sparse, recompute_every=k, device=device)

    budget = None if cfg.budget is None else parse_size(cfg.budget)
    T, B = cfg.seq_len, cfg.batch
    try:
        if cfg.recompute_every == "auto":
            k, got = recompute_for_budget(sizes(cfg.hidden), T, B, budget, cfg.optimizer)
        else:
            k = cfg.recompute_every
            got = predict(sizes(cfg.hidden, k), T, B, cfg.optimizer)
    except MemoryBudgetError as exc:
        raise ConfigError("budget", str(exc)) from None
    except ValueError as exc:  # sizes past what the layers take (density above 1, ...)
        raise ConfigError("hidden", str(exc)) from None
    console = Console()
    title = (f"{cfg.model.upper()} hidden {cfg.hidden:,} x {cfg.layers}, {row_nnz:g} nonzeros per row "
             f"(density {cfg.density:g}, sparse={cfg.sparse}), T={T}, B={B}, {cfg.optimizer}, {device}, "
             + ("every step stored" if k is None else f"recompute_every {k}"))
    table = Table(title=title)
    for col in ("at the peak", "bytes", ""):
        table.add_column(col, justify="right")
    for kind, nbytes in got.rows():
        table.add_row(kind, f"{nbytes:,}", format_size(nbytes))
    for phase, nbytes in got.phases.items():
        table.add_row(f"{phase} phase peak", f"{nbytes:,}", format_size(nbytes))
    console.print(table)
    result = {"breakdown": got, "recompute_every": k, "largest": None}
    if budget is not None:
        low = max(1, int(-(-row_nnz // 1)))  # a density of at most 1
        fits = largest_hidden(lambda h: sizes(h, None if cfg.recompute_every == "auto" else k), T, B, budget,
                              cfg.optimizer, auto=cfg.recompute_every == "auto", low=low)
        if fits is None:
            console.print(f"no hidden size fits {format_size(budget)}", markup=False)
        else:
            hidden, k_fit, at = fits
            how = "every step stored" if k_fit is None else f"recompute_every {k_fit}"
            console.print(f"largest hidden size for a budget of {format_size(budget)}: {hidden:,} ({row_nnz:g} "
                          f"nonzeros per row, {how}: peak {format_size(at.peak)}, {at.phase})", markup=False)
        result["largest"] = fits
    return result
