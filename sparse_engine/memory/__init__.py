"""The memory model: the peak memory of one training step of a sparse recurrent network, predicted
from its sizes alone, before anything is allocated (docs/memory.md).

* :mod:`.predict`: the public side: :func:`predict`, :func:`recompute_for_budget`,
  :func:`largest_hidden`, :func:`evaluation_peak`, the options for a budget (:func:`plan_for_budget`),
  sizes read off a module (:func:`sizes_of`);
* :mod:`.step_replay`: the replay of a whole step (the stack, the head, the optimizer);
* :mod:`.recurrence_replay`: the replay of one ``Recurrence`` call, into a ledger of live bytes by kind.

Used by the command line (``train --memory-budget``, ``bench --memory``) and by users sizing a run;
nothing of the training path imports it.
"""
from .predict import (ADAM_STATES, KINDS, OPTIMIZERS, PHASES, SAVED_DTYPES, Head, MemoryBreakdown, MemoryBudgetError,
                      MemoryPlan, RecurrentSizes, evaluation_peak, format_size, largest_hidden, least_memory_interval,
                      memory_plans, parse_size, plan_for_budget, predict, recompute_for_budget, sizes_of)

__all__ = ["KINDS", "PHASES", "OPTIMIZERS", "RecurrentSizes", "Head", "MemoryBreakdown", "MemoryBudgetError",
           "sizes_of", "predict", "recompute_for_budget", "least_memory_interval", "ADAM_STATES", "SAVED_DTYPES",
           "MemoryPlan", "memory_plans", "plan_for_budget", "largest_hidden", "evaluation_peak", "parse_size",
           "format_size"]
