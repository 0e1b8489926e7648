"""memory_plans / plan_for_budget: the memory options of a run (recompute interval, Adam's
moments) in the order the command line takes them (exact before approximate, storing before
recomputing), the first that fits a budget, and the error naming the least any needs."""
import pytest

from sparse_engine.memory import (MemoryBudgetError, RecurrentSizes, least_memory_interval, memory_plans,
                                  plan_for_budget, predict)

SIZES = RecurrentSizes.build("lstm", 16, 3000, row_nnz=20, sparse="recurrent", compute="sparse")
T, B = 30, 16


def test_the_choices_come_exact_first_and_each_is_its_prediction():
    plans = memory_plans(SIZES, T, B)
    assert [(p.recompute_every is None, p.adam_state) for p in plans] == [
        (True, "float32"), (False, "float32"), (True, "bfloat16"), (False, "bfloat16")]
    for p in plans:
        optimizer = "adam" if p.adam_state == "float32" else "adam-bf16"
        assert p.need == predict(SIZES, T, B, optimizer, recompute_every=p.recompute_every).peak
        if p.recompute_every is not None:
            assert p.recompute_every == least_memory_interval(SIZES, T, B, optimizer)[0]
    stored32, recomputed32, stored16, recomputed16 = (p.need for p in plans)
    assert recomputed32 < stored32 and stored16 < stored32 and recomputed16 < recomputed32
    assert recomputed16 == min(p.need for p in plans)


def test_the_first_choice_that_fits_is_taken():
    plans = memory_plans(SIZES, T, B)
    assert plan_for_budget(SIZES, T, B, plans[0].need) == plans[0]
    # storing fits no more: recomputation (exact) comes before bfloat16 moments, whatever they need
    assert plan_for_budget(SIZES, T, B, plans[0].need - 1) == plans[1]
    assert plan_for_budget(SIZES, T, B, plans[3].need) == plans[3]
    with pytest.raises(MemoryBudgetError, match="does not fit") as err:
        plan_for_budget(SIZES, T, B, plans[3].need - 1)
    assert err.value.minimum == plans[3].need and err.value.recompute_every == plans[3].recompute_every


def test_pinned_options_leave_one_choice():
    (p,) = memory_plans(SIZES, T, B, recompute_every=None, adam_state="float32")
    assert p.recompute_every is None and p.adam_state == "float32"
    (q,) = memory_plans(SIZES, T, B, recompute_every=5, adam_state="bfloat16")
    assert q.recompute_every == 5 and q.need == predict(SIZES, T, B, "adam-bf16", recompute_every=5).peak
    with pytest.raises(MemoryBudgetError):
        plan_for_budget(SIZES, T, B, p.need - 1, recompute_every=None, adam_state="float32")
    with pytest.raises(ValueError, match="adam_state must be auto, float32 or bfloat16"):
        memory_plans(SIZES, T, B, adam_state="float16")


def test_evaluation_batches_count_where_asked():
    plans = memory_plans(SIZES, T, B, eval_batch=256)
    assert all(p.evaluation is not None and p.need == max(p.step.peak, p.evaluation) for p in plans)
    assert plans[0].evaluation > plans[0].step.peak  # 256 sequences outweigh a step of 16 here
