"""The figures of the structural analysis, as the papers show them (matplotlib, no pyplot state:
each function builds a :class:`matplotlib.figure.Figure` and returns it; :func:`save` writes it
as PNG and SVG).

Each figure draws the numbers of a data function that tests (and users) can call on their own:

* :func:`census_figure` — the 16 triad counts as bars (log scale) with the null model's mean +-
  std and each type's z-score above its bar; data: :func:`census_table`;
* :func:`balance_figure` — the three balance measures over epochs (or steps) of a recorded run,
  with the null model's mean +- 2 std as a band when the record has it (``--record-balance``
  with null models, :class:`~.record.BalanceRecorder` ``null=K``); data: :func:`balance_series`;
* :func:`comparison_figure` — one balance measure over epochs for several recorded runs side by
  side (e.g. pruning and SET at two sizes), each with its null band;
* :func:`lesion_figure` — performance against removed motifs, one line (mean +- std over runs)
  per kind: balanced, unbalanced, random motifs, random edges (:func:`~.lesions.lesion_ffls`);
* :func:`nnstd_figure` — the NNSTD distance matrix between runs as a heat map
  (:func:`~.nnstd.nnstd_matrix`);
* :func:`distributions_figure` — in- and out-degree histograms and the weight histogram split
  by sign; data: :func:`degree_weight_data`.

:func:`plot_matrix` and :func:`plot_record` write the figures ``sparse-engine analyze --plot``
makes for a network and for a recorded run.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .balance import DEFINITIONS
from .census import TRIAD_TYPES, TriadCensus
from .graph import edges, to_graph

__all__ = ["FORMATS", "save", "census_table", "census_figure", "balance_series", "balance_figure", "comparison_figure",
           "lesion_figure", "nnstd_figure", "degree_weight_data", "distributions_figure", "plot_matrix",
           "plot_record"]

FORMATS = ("png", "svg")


def _figure(width: float = 6.4, height: float = 3.6, ncols: int = 1):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the figures need matplotlib: pip install 'sparse-engine[analysis]'") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def save(fig, out_dir, name: str, formats=FORMATS) -> list[Path]:
    """Writes ``fig`` as ``out_dir/name.<format>`` for each format; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=150 if fmt == "png" else None)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- census
def census_table(census: TriadCensus, null=None) -> list[dict]:
    """One row per triad type: ``type``, ``observed`` count, and with a
    :class:`~.nulls.NullModelResult` ``null_mean``, ``null_std``, ``z`` (NaN without)."""
    def stat(table: str, t: str) -> float:
        return math.nan if null is None else float(getattr(null, table)[t])

    return [{"type": t, "observed": float(census.counts[t]), "null_mean": stat("mean", t),
             "null_std": stat("std", t), "z": stat("z", t)} for t in TRIAD_TYPES]


def census_figure(census: TriadCensus, null=None, *, title: str = "signed triad census"):
    """Bars of the observed triad counts; the null model's mean +- std as black marks with error
    bars, and the z-score over each bar (when ``null`` is given)."""
    rows = census_table(census, null)
    fig, ax = _figure(7.5, 3.8)
    x = np.arange(len(rows))
    obs = np.array([r["observed"] for r in rows])
    ax.bar(x, obs, color="tab:blue", label="observed")
    if null is not None:
        mean = np.array([r["null_mean"] for r in rows])
        std = np.array([r["null_std"] for r in rows])
        ax.errorbar(x, mean, yerr=std, fmt="_", color="black", markersize=10, capsize=3,
                    label=f"null ({null.method}, K={len(next(iter(null.null.values())))}) mean ± std")
        for xi, r in zip(x, rows):
            if not math.isnan(r["z"]):
                top = max(r["observed"], r["null_mean"] + r["null_std"], 1.0)
                ax.annotate(f"{r['z']:.1f}", (xi, top), xytext=(0, 3), textcoords="offset points", ha="center",
                            fontsize=6, rotation=90)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xticks(x, [r["type"] for r in rows], rotation=60, fontsize=7)
    ax.set_ylabel("triads")
    ax.set_title(title + (" (numbers over bars: z-scores)" if null is not None else ""), fontsize=9)
    ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- balance over training
def balance_series(records: list[dict], *, layer: str | None = None, gate: str | None = None,
                   x: str = "epoch") -> dict:
    """The recorded balance of one graph over training, from :func:`~.record.read_record` rows
    (or ``BalanceRecorder.records``): ``{"x": [...], "x_label", "<definition>": [...], "null_mean_<d>",
    "null_std_<d>" (when recorded)}``. ``layer``/``gate`` pick the graph (default: the first
    record's layer and, for gated cells, ``sum``); ``x``: ``"epoch"`` keeps the epoch-end
    records (one per epoch; records without epochs, every record by step, ``x_label`` "step"),
    ``"step"`` every record."""
    if x not in ("epoch", "step"):
        raise ValueError(f"x must be 'epoch' or 'step', got {x!r}")
    if not records:
        raise ValueError("records is empty: nothing to plot")
    layer = records[0]["layer"] if layer is None else layer
    gates = [r["gate"] for r in records if r["layer"] == layer]
    if not gates:
        raise ValueError(f"layer {layer!r} is not in the records; they hold {sorted({r['layer'] for r in records})}")
    if gate is None:
        gate = "sum" if "sum" in gates else gates[0]
    rows = [r for r in records if r["layer"] == layer and r["gate"] == gate]
    if not rows:
        raise ValueError(f"gate {gate!r} of {layer!r} is not in the records; they hold {sorted(set(gates))}")
    if x == "epoch":
        by_epoch = {}
        for r in rows:  # the last record of each epoch (its end)
            if r.get("epoch") is not None:
                by_epoch[r["epoch"]] = r
        rows = [by_epoch[e] for e in sorted(by_epoch)] or rows
        if not by_epoch:  # records without epochs (a BalanceRecorder used from Python): by step
            x = "step"
    out = {"x": [r[x] for r in rows], "x_label": x, "layer": layer, "gate": gate}
    for d in DEFINITIONS:
        out[d] = [_num(r.get(f"balance_{d}")) for r in rows]
        if f"null_mean_balance_{d}" in rows[0]:
            out[f"null_mean_{d}"] = [_num(r.get(f"null_mean_balance_{d}")) for r in rows]
            out[f"null_std_{d}"] = [_num(r.get(f"null_std_balance_{d}")) for r in rows]
    return out


def _num(v) -> float:
    return math.nan if v is None else float(v)


def balance_figure(records: list[dict], *, layer: str | None = None, gate: str | None = None, x: str = "epoch",
                   title: str | None = None):
    """The three balance measures over training, one line each, with the null mean +- 2 std
    band in the same colour where recorded."""
    s = balance_series(records, layer=layer, gate=gate, x=x)
    fig, ax = _figure(6.0, 3.6)
    xs = np.asarray(s["x"], dtype=float)
    for d, colour in zip(DEFINITIONS, ("tab:blue", "tab:orange", "tab:green")):
        ax.plot(xs, s[d], marker="o", markersize=3, color=colour, label=d)
        if f"null_mean_{d}" in s:
            m, sd = np.asarray(s[f"null_mean_{d}"]), np.asarray(s[f"null_std_{d}"])
            ax.fill_between(xs, m - 2 * sd, m + 2 * sd, color=colour, alpha=0.15, linewidth=0,
                            label=f"{d}: null ± 2 std")
    ax.set_xlabel(s["x_label"])
    ax.set_ylabel("balance ratio")
    ax.set_title(title or f"structural balance of {s['layer']} ({s['gate']})", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def comparison_figure(runs: dict, *, definition: str = "semicycle", title: str | None = None):
    """``definition``'s balance over epochs of several recorded runs (``{label: records}``), one
    line per run with its null mean +- 2 std band where recorded."""
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {DEFINITIONS}, got {definition!r}")
    fig, ax = _figure(6.0, 3.6)
    labels = set()
    for label, records in runs.items():
        s = balance_series(records)
        labels.add(s["x_label"])
        xs = np.asarray(s["x"], dtype=float)
        line, = ax.plot(xs, s[definition], marker="o", markersize=3, label=label)
        if f"null_mean_{definition}" in s:
            m, sd = np.asarray(s[f"null_mean_{definition}"]), np.asarray(s[f"null_std_{definition}"])
            ax.fill_between(xs, m - 2 * sd, m + 2 * sd, color=line.get_color(), alpha=0.12, linewidth=0)
    ax.set_xlabel(" or ".join(sorted(labels)) or "epoch")
    ax.set_ylabel(f"{definition} balance")
    ax.set_title(title or f"{definition} balance over training (bands: null mean ± 2 std)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- lesions
def lesion_figure(runs_by_kind: dict, *, ylabel: str = "performance", title: str = "motif lesions"):
    """One line per kind of :func:`~.lesions.lesion_ffls` result (``{kind: LesionRuns}``): the
    mean over runs against the number of removed motifs, +- std as a band."""
    fig, ax = _figure(5.5, 3.6)
    for kind, res in runs_by_kind.items():
        xs, m, sd = np.asarray(res.n_removed), res.mean, res.std
        line, = ax.plot(xs, m, marker="o", markersize=2.5, label=f"{kind} ({len(res.curves)} runs)")
        ax.fill_between(xs, m - sd, m + sd, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("removed motifs (edges: groups of three)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- NNSTD
def nnstd_figure(D, labels=None, *, title: str = "NNSTD between runs"):
    """The symmetric distance matrix ``D`` (:func:`~.nnstd.nnstd_matrix`) as a heat map, 0..1."""
    D = np.asarray(D, dtype=float)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"D must be a square matrix, got shape {D.shape}")
    labels = [str(i) for i in range(len(D))] if labels is None else [str(x) for x in labels]
    if len(labels) != len(D):
        raise ValueError(f"labels must name the {len(D)} runs, got {len(labels)}")
    fig, ax = _figure(4.8, 4.0)
    im = ax.imshow(D, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(D)), labels, rotation=60, fontsize=7)
    ax.set_yticks(range(len(D)), labels, fontsize=7)
    fig.colorbar(im, ax=ax, label="NNSTD")
    ax.set_title(title, fontsize=9)
    return fig


# --------------------------------------------------------------------------- distributions
def degree_weight_data(W, *, transpose: bool = False) -> dict[str, np.ndarray]:
    """``in_degree`` and ``out_degree`` per node, ``weights`` of the edges (zeros and self-loops
    left out, as everywhere in the analysis)."""
    g = to_graph(W, transpose=transpose)
    src, dst, w = edges(g)
    return {"in_degree": np.bincount(dst, minlength=g.n), "out_degree": np.bincount(src, minlength=g.n),
            "weights": np.asarray(w, dtype=np.float64)}


def distributions_figure(W, *, transpose: bool = False, title: str = "degrees and weights"):
    """Three panels: in-degree and out-degree histograms (one bin per degree) and the weight
    histogram, positive and negative edges in two colours."""
    data = degree_weight_data(W, transpose=transpose)
    fig, axes = _figure(9.0, 3.0, ncols=3)
    for ax, key in zip(axes[:2], ("in_degree", "out_degree")):
        deg = data[key]
        ax.hist(deg, bins=np.arange(deg.max(initial=0) + 2) - 0.5, color="tab:blue")
        ax.set_xlabel(key.replace("_", "-"))
        ax.set_ylabel("nodes")
    w = data["weights"]
    bins = np.histogram_bin_edges(w, bins=50) if len(w) else 10
    axes[2].hist([w[w > 0], w[w < 0]], bins=bins, color=["tab:red", "tab:blue"], label=["positive", "negative"],
                 stacked=True)
    axes[2].set_xlabel("weight")
    axes[2].set_ylabel("edges")
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


# --------------------------------------------------------------------------- what the CLI writes
def plot_matrix(graph, out_dir, *, census: TriadCensus | None = None, null=None, name: str = "",
                formats=FORMATS, label: str | None = None) -> list[Path]:
    """The figures of one network: ``<name>census`` (with the null model when given) and
    ``<name>distributions``, their titles naming ``label`` (what the graph is: a matrix, a gate
    block; default ``name``). Returns the files written."""
    from .census import signed_triad_census

    census = signed_triad_census(graph) if census is None else census
    of = f" of {label or name.rstrip('_')}" if (label or name) else ""
    paths = []
    figures = ((f"{name}census", census_figure(census, null, title=f"triad census{of} (counts of the 16 types)")),
               (f"{name}distributions", distributions_figure(graph, title=f"degrees and weights{of}")))
    for stem, fig in figures:
        paths += save(fig, out_dir, stem, formats)
    return paths


def plot_record(records: list[dict], out_dir, *, formats=FORMATS) -> list[Path]:
    """``balance_<layer>_<gate>`` for every graph of a recorded run. Returns the files written."""
    paths = []
    for layer, gate in dict.fromkeys((r["layer"], r["gate"]) for r in records):
        fig = balance_figure(records, layer=layer, gate=gate)
        paths += save(fig, out_dir, f"balance_{layer}_{gate}".replace("/", "_"), formats)
    return paths
