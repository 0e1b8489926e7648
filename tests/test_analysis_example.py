"""examples/balance_at_scale.py at a small size: both runs at both sizes, the records, table and
figures it writes agree, the models learn; and its --estimate mode."""
import math

import pytest

pytest.importorskip("matplotlib")

from sparse_engine.analysis import read_record  # noqa: E402


@pytest.fixture
def ex(load_script):
    return load_script("examples/balance_at_scale.py")


ARGS = ["--task", "mackey-glass", "--hidden", "200", "--density", "0.02", "--paper-hidden", "30", "--epochs", "2",
        "--null", "3", "--batch-size", "64", "--lr", "0.01"]


def test_small_experiment_writes_consistent_outputs(tmp_path, ex):
    rows = ex.main(ARGS + ["--out", str(tmp_path)])
    assert [r["run"] for r in rows] == ["n30_pruning", "n30_set", "n200_pruning", "n200_set"]
    table = (tmp_path / "results.md").read_text()
    assert (tmp_path / "balance_comparison.svg").stat().st_size > 1000
    for r in rows:
        rec = read_record(tmp_path / f"{r['run']}.csv")
        assert [x["epoch"] for x in rec] == [0, 1, 2]  # before training, then every epoch
        assert r["semicycle_start"] == pytest.approx(rec[0]["balance_semicycle"], nan_ok=True)
        assert r["z_semicycle_end"] == pytest.approx(rec[-1]["z_balance_semicycle"], nan_ok=True)
        assert f"| {r['run']} |" in table
        for suffix in ("png", "svg"):
            assert (tmp_path / f"{r['run']}_balance.{suffix}").stat().st_size > 1000
        assert r["score_end"] < 0.5 * r["score_start"]  # test MSE falls: the model learns
        assert r["record_s"] < r["wall_s"]
    pruning = {r["hidden"]: r for r in rows if r["algorithm"] == "pruning"}
    assert pruning[30]["edges_start"] == 30 * 29  # the papers' pruning starts fully connected
    assert pruning[30]["edges_end"] <= math.ceil(0.05 * 900) and pruning[200]["edges_end"] < pruning[200]["edges_start"]


def test_untrained_model_fails_the_learning_check(tmp_path, ex):
    rows = ex.main(ARGS + ["--out", str(tmp_path), "--lr", "1e-12", "--skip-large"])
    assert all(not (r["score_end"] < 0.5 * r["score_start"]) for r in rows)


def test_estimate_mode(tmp_path, ex):
    est = ex.main(["--task", "mackey-glass", "--hidden", "2000", "--density", "0.005", "--null", "2",
                   "--estimate", "--estimate-batches", "2"])
    assert est["edges"] > 0 and est["step_s"] > 0 and est["record_s"] > 0
    from sparse_engine.data.tasks import load_task

    (X, _), _, _ = load_task("mackey-glass", None, 0)
    assert est["epoch_s"] == pytest.approx(est["step_s"] * math.ceil(len(X) / 64))
