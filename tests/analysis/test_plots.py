"""The analysis figures: files written and valid (PNG signature, SVG XML), and the plotted
numbers read back from the Axes equal the computed ones."""
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from sparse_engine.analysis import (BalanceRecorder, lesion_ffls, nnstd_matrix, null_model_test, plots,  # noqa: E402
                                    read_record, signed_triad_census, TRIAD_TYPES)
from sparse_engine.testing import random_scipy, random_weight  # noqa: E402


def valid_files(paths):
    assert [p.suffix for p in paths] == [".png", ".svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_census_bars_and_z_scores(tmp_path, rng):
    W = random_weight(40, 40, 0.15, generator=rng)
    c = signed_triad_census(W)
    null = null_model_test(W, "swap", K=5, seed=1)
    fig = plots.census_figure(c, null)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [float(c.counts[t]) for t in TRIAD_TYPES]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(TRIAD_TYPES)
    rows = plots.census_table(c, null)
    for r in rows:  # the table is the null model's, independently recomputed from its samples
        x = null.null[r["type"]]
        assert r["null_mean"] == pytest.approx(x.mean()) and r["null_std"] == pytest.approx(x.std(ddof=1))
    zs = [float(a.get_text()) for a in ax.texts]
    assert zs == [pytest.approx(round(r["z"], 1), abs=0.051) for r in rows if not math.isnan(r["z"])]
    valid_files(plots.save(fig, tmp_path, "census"))


def test_balance_over_epochs_with_null_band(tmp_path, rng):
    path = tmp_path / "rec.csv"
    rec = BalanceRecorder(path=path, null=4, seed=3)
    Ws = [random_weight(30, 30, 0.2, generator=rng) for _ in range(3)]
    for epoch, W in enumerate(Ws, 1):
        rec(epoch * 10 - 5, {"weight_hh": W})  # an update inside the epoch: not on the epoch axis
        rec.end_epoch(epoch * 10, {"weight_hh": W}, epoch=epoch)
    rows = read_record(path)
    s = plots.balance_series(rows)
    assert s["x"] == [1, 2, 3]
    fig = plots.balance_figure(rows)
    ax = fig.axes[0]
    for line, d in zip(ax.lines, ("semicycle", "triad", "weighted")):
        want = [r[f"balance_{d}"] for r in rows if r["event"] == "epoch_end"]
        np.testing.assert_allclose(line.get_ydata(), want)
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    # the band: the null model of each epoch's graph, recomputed
    res = null_model_test(Ws[0], "sign_shuffle", K=4, seed=3 + 10)
    assert s["null_mean_semicycle"][0] == pytest.approx(res.mean["balance_semicycle"])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]  # the polygon of mean +- 2 std over the epochs
    lower = np.array(s["null_mean_semicycle"]) - 2 * np.array(s["null_std_semicycle"])
    upper = np.array(s["null_mean_semicycle"]) + 2 * np.array(s["null_std_semicycle"])
    assert min(band) == pytest.approx(lower.min()) and max(band) == pytest.approx(upper.max())
    valid_files(plots.save(fig, tmp_path, "balance"))
    assert len(plots.plot_record(rows, tmp_path / "rec")) == 2
    with pytest.raises(ValueError, match="layer"):
        plots.balance_series(rows, layer="nope")


def test_comparison_of_runs(tmp_path, rng):
    runs = {}
    for label in ("a", "b"):
        rec = BalanceRecorder(null=3)
        for epoch in range(3):
            rec.end_epoch(epoch, {"weight_hh": random_weight(25, 25, 0.2, generator=rng)}, epoch=epoch)
        runs[label] = rec.records
    fig = plots.comparison_figure(runs, definition="triad")
    ax = fig.axes[0]
    for line, records in zip(ax.lines, runs.values()):
        np.testing.assert_allclose(line.get_ydata(), [r["balance_triad"] for r in records])
    assert len(ax.collections) == 2  # one null band per run
    valid_files(plots.save(fig, tmp_path, "compare"))
    with pytest.raises(ValueError, match="definition"):
        plots.comparison_figure(runs, definition="nope")


def test_lesion_curves(tmp_path, rng):
    W = random_weight(20, 20, 0.3, generator=rng)
    runs = {k: lesion_ffls(W, lambda: float(W.values.detach().abs().sum()), kind=k, runs=3, max_removals=6)
            for k in ("balanced", "unbalanced", "edges")}
    fig = plots.lesion_figure(runs)
    ax = fig.axes[0]
    for line, res in zip(ax.lines, runs.values()):
        np.testing.assert_array_equal(line.get_xdata(), res.n_removed)
        np.testing.assert_allclose(line.get_ydata(), np.mean([c.scores for c in res.curves], axis=0))
    valid_files(plots.save(fig, tmp_path, "lesions"))


def test_nnstd_heat_map(tmp_path, np_rng):
    nets = [[random_scipy(12, 10, 0.3, generator=np_rng), random_scipy(4, 12, 0.3, generator=np_rng)]
            for _ in range(3)]
    D = nnstd_matrix(nets)
    assert D.shape == (3, 3) and np.allclose(D, D.T) and (np.diag(D) == 0).all()
    fig = plots.nnstd_figure(D, ["a", "b", "c"])
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), D)
    valid_files(plots.save(fig, tmp_path, "nnstd"))
    with pytest.raises(ValueError, match="labels"):
        plots.nnstd_figure(D, ["a"])


def test_degree_and_weight_distributions(tmp_path, rng):
    W = random_weight(50, 50, 0.1, generator=rng)
    D = W.to_dense().numpy().copy()
    np.fill_diagonal(D, 0)
    data = plots.degree_weight_data(W)
    np.testing.assert_array_equal(data["in_degree"], (D != 0).sum(axis=1))   # row j: edges into j
    np.testing.assert_array_equal(data["out_degree"], (D != 0).sum(axis=0))
    fig = plots.distributions_figure(W)
    in_bars = [p.get_height() for p in fig.axes[0].patches]
    assert in_bars == list(np.bincount((D != 0).sum(axis=1)).astype(float))
    heights = [p.get_height() for p in fig.axes[2].patches]  # 50 positive bars, then 50 negative ones
    assert sum(heights[:50]) == (D > 0).sum() and sum(heights[50:]) == (D < 0).sum()
    valid_files(plots.save(fig, tmp_path, "dist"))


def test_records_without_epochs_are_drawn_and_labelled_by_step(tmp_path, rng, capsys):
    """A BalanceRecorder used from Python records steps, no epochs: the series, the figure's axis and
    the command line's table say "step" (before: the steps under the label "epoch"); a measure that
    is NaN (no triad of a kind) prints "-", as the other tables do."""
    from sparse_engine import cli

    path = tmp_path / "rec.csv"
    rec = BalanceRecorder(path=path)
    Ws = [random_weight(30, 30, 0.2, generator=rng) for _ in range(3)]
    for step, W in zip((100, 200, 300), Ws):
        rec(step, {"weight_hh": W})
    rec(400, {"weight_hh": random_weight(30, 30, 0.0, generator=rng)})  # no edges: every measure NaN
    rows = read_record(path)
    s = plots.balance_series(rows)
    assert s["x"] == [100, 200, 300, 400] and s["x_label"] == "step"
    assert plots.balance_figure(rows).axes[0].get_xlabel() == "step"
    assert plots.comparison_figure({"a": rows}).axes[0].get_xlabel() == "step"
    capsys.readouterr()
    cli.run(["analyze", str(path)])
    out = capsys.readouterr().out
    assert "epoch or step" in out and "step 300" in out and "nan" not in out
    last = next(line for line in out.splitlines() if "step 400" in line)
    assert last.count("-") >= 3


def test_matrix_figures_name_what_they_show(tmp_path, rng, monkeypatch):
    """Each gate block's census and distributions figures name the block in their titles (before,
    every gate's census was titled "signed triad census": only the file name told them apart)."""
    import matplotlib.figure

    titles = []
    real = matplotlib.figure.Figure.savefig

    def record(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        titles.append((Path(path).stem, ax.get_title() or fig._suptitle.get_text()))
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    W = random_weight(12, 12, 0.4, generator=rng)
    plots.plot_matrix(W, tmp_path, name="f_", label="net.pt: weight_hh_l0, gate f", formats=("png",))
    assert titles == [("f_census", "triad census of net.pt: weight_hh_l0, gate f (counts of the 16 types)"),
                      ("f_distributions", "degrees and weights of net.pt: weight_hh_l0, gate f")]
