"""``sparse-engine analyze`` as a function, :func:`analyze`: the signed triad census and
structural balance of a recurrent matrix (with null models, an edge-list export, figures and, for
a train checkpoint, motif lesions), the balance of a recorded run, or the NNSTD between the
networks of a directory. The analysis itself is :mod:`sparse_engine.analysis`; this module loads,
prints the tables and writes the files."""
from __future__ import annotations

import math
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np

from .config import AnalyzeConfig, ConfigError, with_options
from .rebuild import evaluate, load_run_task, run_recipe, sequence_model


def load_matrix(path: str, key: str | None = None):
    """The recurrent matrix to analyse, as a :class:`~sparse_engine.analysis.RecurrentMatrix`
    (:func:`~sparse_engine.analysis.load_recurrent`): from a checkpoint (.pt/.pth/.ckpt;
    default key: the first hidden-to-hidden weight, ``rnn.weight_hh_l0`` or a CT-RNN's
    ``rnn.weight_hh``, sparse or dense), a Gephi edge list (.csv) or a scipy matrix (.npz).
    FileNotFoundError for a missing file, ValueError naming the file for anything unreadable."""
    from ..analysis import load_recurrent

    return load_recurrent(path, key)


def _number(value: float, digits: int = 3) -> str:
    """A value for the tables; ``-`` where it is not defined (no triad of the type, a z-score of
    null values that do not vary)."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _untested(why: dict, definitions) -> str:
    """``balance_*_300 (no 300 triad in the graph), ...``: the measures a null model test left out
    (measure -> why), the balance definitions written ``*`` where all of them are left out alike."""
    groups: dict = {}
    for measure, reason in why.items():
        definition = next((d for d in definitions if measure.startswith(f"balance_{d}")), None)
        rest = measure[len(f"balance_{definition}"):] if definition else measure
        groups.setdefault((rest, reason), []).append(measure)
    parts = []
    for (rest, reason), measures in groups.items():
        names = [f"balance_*{rest}"] if len(measures) == len(definitions) and len(definitions) > 1 else measures
        parts += [f"{name} ({reason})" for name in names]
    return ", ".join(parts)


def _load_checked(cfg):
    """:func:`load_matrix` of ``cfg``, a ``key`` that names no matrix of the file and a ``gate`` that
    is not one of the matrix's blocks refused as bad arguments (ConfigError naming the option)."""
    from ..analysis import SUM

    try:
        m = load_matrix(cfg.path, cfg.key)
    except ValueError as exc:
        if cfg.key is not None and repr(cfg.key) in str(exc):  # the key names no matrix of the file
            raise ConfigError("key", str(exc)) from exc
        raise
    gates = (*m.gates, SUM) if len(m.gates) > 1 else m.gates
    if cfg.gate is not None and cfg.gate not in gates:
        raise ConfigError("gate", f"expected one of {', '.join(gates)} for {m.label} ({m.cell}), got {cfg.gate!r}")
    return m


def is_balance_record(path) -> bool:
    """True for a CSV whose header is a balance record's (``--record-balance``), not an edge list."""
    p = Path(path)
    if p.suffix.lower() != ".csv" or not p.is_file():
        return False
    with open(p, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = f.readline().strip().split(",")
    return {"step", "layer", "gate", "balance_semicycle"} <= set(header)


def _analyze_record(cfg, console):
    """``analyze`` of a recorded run: the balance per epoch as a table, and its figures."""
    from rich.table import Table

    from ..analysis import DEFINITIONS, plots, read_record

    rows = read_record(cfg.path)
    if not rows:
        raise ValueError(f"{cfg.path} holds no records (only a header)")
    pairs = dict.fromkeys((r["layer"], r["gate"]) for r in rows)
    series = [plots.balance_series(rows, layer=layer, gate=gate) for layer, gate in pairs]
    by_epoch = all(s["x_label"] == "epoch" for s in series)
    t = Table(title=f"recorded balance of {cfg.path} ({len(rows)} records"
                    f"{'; the last of each epoch' if by_epoch else ''})")
    for col in ("layer", "gate", "epoch" if by_epoch else "epoch or step", *DEFINITIONS):
        t.add_column(col, justify="right")
    for (layer, gate), s in zip(pairs, series):
        for i, x in enumerate(s["x"]):
            shown = str(x) if by_epoch or s["x_label"] == "epoch" else f"step {x}"
            t.add_row(layer, gate, shown, *("-" if math.isnan(s[d][i]) else f"{s[d][i]:.3f}" for d in DEFINITIONS))
    console.print(t)
    if cfg.plot:
        for path in plots.plot_record(rows, cfg.plot):
            console.print(f"figure: {path}")
    return rows


def _analyze_nnstd(cfg, console) -> dict:
    """``analyze`` of a directory: the NNSTD between every two networks found in it (folders of
    ``weight_l<i>.npz`` layers), as a table and, with ``plot``, a heat map."""
    from rich.table import Table

    from ..analysis import find_nnstd_networks, load_nnstd_layers, nnstd_matrix, plots

    found = find_nnstd_networks(cfg.path)
    if len(found) < 2:
        raise ValueError(f"{cfg.path} is a directory: expected at least two networks in it (folders of NNSTD layers "
                         f"weight_l0.npz, weight_l1.npz, ...), found {len(found)}")
    labels = list(found)
    networks = [load_nnstd_layers(d) for d in found.values()]
    shapes = [[layer.shape for layer in layers] for layers in networks]
    for label, shape in zip(labels, shapes):  # one line naming the network whose layers do not match
        if shape != shapes[0]:
            raise ValueError(f"{cfg.path}: network {label} has layers of shapes {shape} (out x in), network "
                             f"{labels[0]} {shapes[0]}: NNSTD compares networks of one architecture")
    layer = cfg.nnstd_layer
    if layer is not None and layer >= len(shapes[0]):
        raise ConfigError("nnstd_layer", f"the networks in {cfg.path} have {len(shapes[0])} layers (0 to "
                                         f"{len(shapes[0]) - 1}), got {layer}")
    D = nnstd_matrix(networks, layer=layer)
    what = f"layer {layer}" if layer is not None else f"mean over the {len(shapes[0])} layers"
    t = Table(title=f"NNSTD between the {len(labels)} networks in {cfg.path} ({what})")
    t.add_column("network", overflow="fold")  # long names wrap; the distances never lose digits to the width
    for i in range(len(labels)):
        t.add_column(str(i), justify="right", no_wrap=True, min_width=5)
    for i, label in enumerate(labels):
        t.add_row(f"{i}: {label}", *(f"{x:.3f}" for x in D[i]))
    console.print(t)
    if cfg.plot:
        groups = _nnstd_groups(labels)
        for group, members in groups.items():
            idx = [labels.index(m) for m in members]
            names = [m.replace("\\", "/").split("/", 1)[0] for m in members] if group else members
            title = f"NNSTD, {what}" + (f", {group}" if group else "")
            figure = plots.nnstd_figure(D[np.ix_(idx, idx)], names, title=title)
            for path in plots.save(figure, cfg.plot, f"nnstd_{group.replace('/', '_')}" if group else "nnstd"):
                console.print(f"figure: {path}")
    return {"labels": labels, "distance": D}


def _nnstd_groups(labels: list[str]) -> dict[str, list[str]]:
    """The heat maps of ``analyze FOLDER --plot``: networks stored as ``RUN/SNAPSHOT`` (the NNSTD
    paper's ``e5_s0_w1/epoch_190``) compared within each snapshot, one map per snapshot, as the paper's
    Figure 4 draws each epoch; otherwise one map of all (key "")."""
    parts = [label.replace("\\", "/").split("/", 1) for label in labels]  # (a Windows path's separator too)
    if all(len(p) == 2 for p in parts):
        groups: dict[str, list[str]] = {}
        for label, (_, snapshot) in zip(labels, parts):
            groups.setdefault(snapshot, []).append(label)
        if all(len(g) >= 2 for g in groups.values()):
            return groups
    return {"": list(labels)}


LESION_KINDS = ("balanced", "unbalanced", "random", "edges")


def lesion_curves(cfg, m, console) -> dict:
    """``analyze CHECKPOINT --lesion N``: the model of a ``train`` checkpoint is rebuilt from its
    saved options, and up to N motifs of each kind in :data:`LESION_KINDS` are cut from its
    recurrent matrix as the paper does (one shuffled list, cumulative, 10 runs), scoring the
    test set after each cut (accuracy, or MSE for regression tasks). {kind: LesionRuns}."""
    from rich.table import Table

    from ..analysis import lesion_ffls, plots
    from ..io.checkpoint import load_checkpoint
    from ..sparse import SparseWeight

    payload = load_checkpoint(cfg.path)
    args = payload.get("extra", {}).get("args") or {}
    if args.get("command") != "train":
        raise ValueError(f"{cfg.path}: --lesion needs a checkpoint written by sparse-engine train (its options rebuild "
                         "the model and its test set)")
    if args.get("model") == "mlp":
        raise ValueError(f"{cfg.path}: --lesion needs a recurrent model's checkpoint (train --model rnn or ctrnn); "
                         "this one is an mlp")
    _, (Xte, yte), meta = load_run_task(args, run_recipe(args))  # the run's test set and model, as train built them
    model = sequence_model(args, meta)
    model.load_state_dict(payload["model"])
    W = model.get_submodule(m.key) if isinstance(m.matrix, SparseWeight) else None
    if not isinstance(W, SparseWeight) or len(m.gates) != 1:
        what = f"an {m.cell} gate stack" if len(m.gates) != 1 else "stored dense"
        raise ValueError(f"{cfg.path}: --lesion needs a sparse one-block recurrent matrix (train --model rnn or "
                         f"ctrnn, --sparse recurrent or both); {m.key} is {what}")
    classify = meta["kind"] == "classify"

    def score():
        loss, acc = evaluate(model, Xte, yte, meta["kind"])
        return acc if classify else loss

    runs = {kind: lesion_ffls(W, score, kind=kind, max_removals=cfg.lesion, transpose=cfg.transpose, seed=cfg.seed)
            for kind in LESION_KINDS}
    what = "test accuracy" if classify else "test MSE"
    t = Table(title=f"motif lesions of {m.key}: {what}, mean of {len(runs['edges'].curves)} runs")
    for col in ("kind", "removed", "intact", "after"):
        t.add_column(col, justify="right")
    for kind, res in runs.items():
        t.add_row(kind, str(res.n_removed[-1]), f"{res.mean[0]:.4f}", f"{res.mean[-1]:.4f}")
    console.print(t)
    if cfg.plot:
        fig = plots.lesion_figure(runs, ylabel=what, title=f"motif lesions of {m.key}")
        for path in plots.save(fig, cfg.plot, "lesions"):
            console.print(f"figure: {path}")
    return runs


def analyze(config: AnalyzeConfig | None = None, **options):
    """Signed triad census and structural balance of a recurrent matrix, with optional null
    models and edge-list export (``sparse-engine analyze``). An LSTM's or GRU's W_hh is
    analysed per gate block and as the sum of its blocks (``gate`` picks one); see
    :mod:`sparse_engine.analysis.recurrent`. Prints tables and returns an
    :class:`~sparse_engine.analysis.AnalysisResult`: the overall balance per definition of
    the chosen gate, else of the summed graph (gated cells) or the one block, with every
    graph's values in ``.graphs``."""
    from rich.console import Console

    from .. import analysis as A

    cfg = with_options(AnalyzeConfig, config, options)
    console = Console()
    mode = "a directory of networks" if Path(cfg.path).is_dir() else (
        "a recorded run" if is_balance_record(cfg.path) else None)
    if mode is not None:  # only --plot (and --seed) apply there: refuse the rest rather than ignore them
        for f in fields(AnalyzeConfig):
            allowed = ("path", "plot", "seed", "nnstd_layer") if mode == "a directory of networks" else (
                "path", "plot", "seed")
            if f.name not in allowed and getattr(cfg, f.name) != f.default:
                raise ConfigError(f.name, f"does not apply to {mode} ({cfg.path})")
        return _analyze_nnstd(cfg, console) if Path(cfg.path).is_dir() else _analyze_record(cfg, console)
    if cfg.nnstd_layer is not None:
        raise ConfigError("nnstd_layer", f"applies to a directory of NNSTD networks, got {cfg.path}")
    if cfg.lesion and Path(cfg.path).suffix.lower() in (".csv", ".npz"):  # before the census, not after it
        raise ConfigError("lesion", f"needs a checkpoint written by sparse-engine train (its options rebuild the "
                                    f"model and its test set), got a matrix file ({cfg.path})")
    m = _load_checked(cfg)
    graphs = m.graphs(cfg.gate, transpose=cfg.transpose)
    primary = cfg.gate if cfg.gate is not None else m.primary
    console.print(m.describe())
    nodes = "edges" if cfg.convention == "seed" else "all"
    census = {g: A.signed_triad_census(w, nodes=nodes) for g, w in graphs.items()}
    console.print(_census_table(census, m.key or cfg.path, primary))
    per_graph = _balance(cfg, census, console)
    nulls = _null_models(cfg, graphs, nodes, console) if cfg.null else {}
    if cfg.export_csv:
        _export_csv(cfg.export_csv, graphs, m.ids, console)
    if cfg.plot:
        from ..analysis import plots

        for g, w in graphs.items():  # census_<gate>, distributions_<gate> when there are several
            name = "" if len(graphs) == 1 else f"{g}_"
            part = "the sum of its gate blocks" if g == "sum" else f"gate {g}"
            label = m.label if len(graphs) == 1 else f"{m.label}, {part}"
            for path in plots.plot_matrix(w, cfg.plot, census=census[g], null=nulls.get(g), name=name, label=label):
                console.print(f"figure: {path}")
    lesions = lesion_curves(cfg, m, console) if cfg.lesion else {}
    return A.AnalysisResult(per_graph[primary], matrix=m, primary=primary, graphs=per_graph, census=census,
                            null=nulls, lesions=lesions)


def _census_table(census: dict, label: str, primary: str):
    """The signed triad census: count, balanced and unbalanced of the one graph, or the counts of each."""
    from rich.table import Table

    from .. import analysis as A

    n = next(iter(census.values())).n
    t = Table(title=f"signed triad census of {label} (n={n:,})")
    t.add_column("type", justify="right")
    if len(census) == 1:
        c = census[primary]
        for col in ("count", "balanced", "unbalanced"):
            t.add_column(col, justify="right")
        for name in A.TRIAD_TYPES:
            t.add_row(name, f"{c.counts[name]:,}", f"{c.balanced.get(name, '')}", f"{c.unbalanced.get(name, '')}")
    else:
        for g in census:
            t.add_column(f"{g} count" if g != A.SUM else "sum count", justify="right")
        for name in A.TRIAD_TYPES:
            t.add_row(name, *(f"{census[g].counts[name]:,}" for g in census))
    return t


def _balance(cfg, census: dict, console) -> dict:
    """Structural balance of each graph by each definition, as a table: {graph: {definition: value}}."""
    from rich.table import Table

    from .. import analysis as A

    several = len(census) > 1
    b = Table(title="structural balance" + (" per gate and of the summed graph" if several else ""))
    if several:
        b.add_column("graph")
    b.add_column("definition")
    for typ in A.TRANSITIVE_TYPES:
        b.add_column(typ, justify="right")
    b.add_column("overall", justify="right")
    per_graph = {}
    for g, c in census.items():
        per_graph[g] = {}
        for d in A.DEFINITIONS:
            bal = A.structural_balance(c, d, convention=cfg.convention)
            per_graph[g][d] = bal.value
            cells = (*(_number(bal.per_type[x]) for x in A.TRANSITIVE_TYPES), _number(bal.value))
            b.add_row(*((g,) if several else ()), d, *cells)
    console.print(b)
    return per_graph


def _null_models(cfg, graphs: dict, nodes: str, console) -> dict:
    """``--null K``: each graph against K randomised ones, as a table, with the measures left untested
    and the null models' notes on a line each: {graph: NullModelResult}."""
    from rich.table import Table

    from .. import analysis as A

    several = len(graphs) > 1
    nt = Table(title=f"{cfg.null} null models ({cfg.null_method})")
    for col in (("graph",) if several else ()) + ("measure", "observed", "null mean", "z", "p (greater)"):
        nt.add_column(col, justify="right")
    nulls, untested, notes = {}, [], []
    for g, w in graphs.items():
        with warnings.catch_warnings(record=True) as said:  # NaN null values: said below, once
            warnings.simplefilter("always")
            nulls[g] = res = A.null_model_test(w, cfg.null_method, K=cfg.null, seed=cfg.seed, nodes=nodes,
                                               convention=cfg.convention)
        notes += [str(x.message) for x in said if "every null value" not in str(x.message)]
        why = {k: r for k, r in res.undefined.items() if k.startswith("balance_")}
        for row in res.table():
            if not row["measure"].startswith("balance_"):
                continue
            if math.isnan(row["p_greater"]):  # defined here, but in none of the null networks
                why[row["measure"]] = "no null network has it"
                continue
            nt.add_row(*((g,) if several else ()), row["measure"], f"{row['observed']:.3f}",
                       f"{row['null_mean']:.3f}", _number(row["z"], 2), f"{row['p_greater']:.3f}")
        if why:
            untested.append((f"{g}: " if several else "") + _untested(why, A.DEFINITIONS))
    console.print(nt)
    if untested:  # one line rather than rows of NaN
        console.print("not tested: " + "; ".join(untested), markup=False, highlight=False, soft_wrap=True)
    for note in dict.fromkeys(notes):
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    return nulls


def _export_csv(export_csv: str, graphs: dict, ids, console) -> None:
    """Each graph as a Gephi edge list: ``export_csv``, or name_<gate>.csv when there are several."""
    from .. import analysis as A

    out = Path(export_csv)
    out.parent.mkdir(parents=True, exist_ok=True)  # as every output path option
    for g, w in graphs.items():
        path = out if len(graphs) == 1 else out.with_name(f"{out.stem}_{g}{out.suffix}")
        A.write_edge_csv(w, path, ids=ids)
        console.print(f"edge list{'' if len(graphs) == 1 else f' ({g})'}: {path}")
