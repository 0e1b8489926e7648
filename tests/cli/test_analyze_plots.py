"""``sparse-engine analyze --plot DIR`` for a shipped seed network, a checkpoint of our own run
and a recorded run; ``--convention seed``; their errors."""
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("matplotlib")

from sparse_engine import cli  # noqa: E402
from sparse_engine.analysis import read_edge_csv, read_record, signed_triad_census, structural_balance  # noqa: E402


def valid(folder, names):
    for name in names:
        png, svg = folder / f"{name}.png", folder / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert ET.parse(svg).getroot().tag.endswith("svg"), name


def test_seed_network_figures_and_convention(tmp_path, shared_data):
    seed_net = shared_data("sparse_rnns_networks", "Person_node__pruning_n_64_p_0.05__epoch_50.csv")
    out = tmp_path / "figs"  # created
    result = cli.run(["analyze", str(seed_net), "--plot", str(out), "--null", "4", "--null-method", "swap",
                      "--convention", "seed"])
    valid(out, ["census", "distributions"])
    W = read_edge_csv(seed_net)
    assert result["semicycle"] == pytest.approx(structural_balance(W, convention="seed").value)
    assert result["semicycle"] != pytest.approx(structural_balance(W).value)  # this network tells them apart
    c = result.census["h"]
    assert c.counts == signed_triad_census(W, nodes="edges").counts and c.n == 62
    assert result.null["h"].observed["003"] == c.counts["003"]  # the null model counts the same nodes


def test_checkpoint_and_recorded_run(tmp_path):
    ck, bal, out = tmp_path / "ck.pt", tmp_path / "bal.csv", tmp_path / "figs"
    cli.run(["train", "--model", "lstm", "--hidden", "12", "--epochs", "2", "--quiet", "--algorithm", "set",
             "--save", str(ck), "--record-balance", str(bal)])
    cli.run(["analyze", str(ck), "--plot", str(out), "--gate", "sum"])
    valid(out, ["census", "distributions"])
    rows = cli.run(["analyze", str(bal), "--plot", str(out)])
    assert [(r["step"], r["gate"]) for r in rows] == [(r["step"], r["gate"]) for r in read_record(bal)]
    graphs = {(r["layer"], r["gate"]) for r in rows}
    assert len(graphs) == 5  # an LSTM's four gates and their sum
    valid(out, [f"balance_{layer}_{gate}" for layer, gate in graphs])


def test_plot_errors_are_one_line(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    src = tmp_path / "m.csv"
    src.write_text("Id,Source,Target,Weight\n0,0,1,1.0\n1,1,2,-1.0\n")
    assert cli.main(["analyze", str(src), "--plot", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --plot: " in err[0] and "expected a directory" in err[0]
    assert cli.main(["analyze", str(src), "--plot", str(f / "dir")]) == 1  # its parents are created, not under a file
    assert f"{f} is not a directory" in capsys.readouterr().err
    assert cli.main(["analyze", str(src), "--convention", "paper"]) == 2
    assert "invalid choice: 'paper'" in capsys.readouterr().err
    # options that only apply to one network are refused for a recorded run or a directory
    rec = tmp_path / "rec.csv"
    rec.write_text("step,epoch,event,layer,gate,balance_semicycle\n0,0,epoch_end,w,h,0.5\n")
    assert cli.main(["analyze", str(rec), "--null", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "argument --null: does not apply to a recorded run" in err and len(err.splitlines()) == 1
    assert cli.main(["analyze", str(tmp_path), "--lesion", "3"]) == 2
    assert "argument --lesion: does not apply to a directory of networks" in capsys.readouterr().err
    edges = tmp_path / "edges.csv"  # a valid matrix file has no model or test set to lesion
    edges.write_text("Source,Target,Weight\n0,1,0.5\n1,2,-0.3\n2,0,0.2\n")
    assert cli.main(["analyze", str(edges)]) == 0
    capsys.readouterr()
    assert cli.main(["analyze", str(edges), "--lesion", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "argument --lesion: needs a checkpoint written by sparse-engine train" in err and len(err.splitlines()) == 1


def test_nnstd_heat_map_of_a_directory_of_networks(tmp_path, shared_data):
    from sparse_engine.analysis import load_nnstd_layers, nnstd

    root = shared_data("nnstd_topologies", "e5_s0_w0")  # one run before (epoch_000) and after (epoch_190) training
    result = cli.run(["analyze", str(root), "--plot", str(tmp_path)])
    assert result["labels"] == ["epoch_000", "epoch_190"]
    want = nnstd(load_nnstd_layers(root / "epoch_000"), load_nnstd_layers(root / "epoch_190")).distance
    assert result["distance"][0, 1] == result["distance"][1, 0] == pytest.approx(want) and want > 0
    valid(tmp_path, ["nnstd"])


def test_lesion_curves_of_a_trained_rnn(tmp_path):
    from sparse_engine.io.checkpoint import load_checkpoint

    ck = tmp_path / "rnn.pt"
    cli.run(["train", "--model", "rnn", "--hidden", "32", "--density", "0.3", "--epochs", "3", "--quiet", "--save",
             str(ck)])
    result = cli.run(["analyze", str(ck), "--lesion", "6", "--plot", str(tmp_path / "figs")])
    runs = result.lesions
    assert set(runs) == {"balanced", "unbalanced", "random", "edges"}
    acc = load_checkpoint(ck)["extra"]["history"][-1]["test_acc"]
    for kind, res in runs.items():
        assert len(res.curves) == 10 and res.n_removed == list(range(7)), kind
        assert res.mean[0] == pytest.approx(acc)  # the intact model scores what training reported
    assert any(res.mean[-1] != res.mean[0] for res in runs.values())  # cuts change the score
    valid(tmp_path / "figs", ["lesions"])
    lstm = tmp_path / "lstm.pt"
    cli.run(["train", "--model", "lstm", "--hidden", "8", "--epochs", "1", "--quiet", "--save", str(lstm)])
    with pytest.raises(ValueError, match="one-block recurrent matrix"):
        cli.run(["analyze", str(lstm), "--lesion", "2"])


def test_nnstd_table_keeps_its_numbers_at_80_columns(tmp_path, capsys, monkeypatch):
    """Long network names wrap; the distances are never cut to fit the terminal."""
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    for k in range(6):
        folder = tmp_path / f"run_with_a_rather_long_descriptive_name_seed{k}" / "epoch_190"
        folder.mkdir(parents=True)
        for i, (n_in, n_out) in enumerate(((6, 5), (5, 3))):
            sp.save_npz(folder / f"weight_l{i}.npz", sp.random(n_in + 1, n_out, density=0.5, random_state=rng,
                                                               format="csr"))
    monkeypatch.setenv("COLUMNS", "80")
    result = cli.run(["analyze", str(tmp_path)])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert all(f"{x:.3f}" in out for x in result["distance"].ravel()) and "…" not in out


def test_nnstd_of_networks_of_two_architectures_names_them(tmp_path, capsys):
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    for name, sizes in (("a", (6, 5, 3)), ("b", (6, 5, 3)), ("c", (6, 4, 3))):
        (tmp_path / name).mkdir()
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):  # (in + 1) x out, the bias last
            layer = sp.random(n_in + 1, n_out, density=0.5, random_state=rng, format="csr")
            sp.save_npz(tmp_path / name / f"weight_l{i}.npz", layer)
    assert cli.main(["analyze", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "network c has layers of shapes [(4, 6), (3, 4)]" in err, err


def test_nnstd_layer_and_one_heat_map_per_snapshot(tmp_path):
    """`analyze FOLDER --nnstd-layer 0 --plot DIR` over RUN/SNAPSHOT networks draws the NNSTD paper's
    Figure 4: layer 0's distances among the runs of each snapshot, one map per snapshot (before, one
    map of every network of every epoch, each pixel the mean over the layers). Layer 0's distance
    against a dense linear_sum_assignment of 1 - Jaccard (the paper's definition)."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(3)
    first = {}
    for run in ("w0", "w1", "w2"):
        for epoch in ("epoch_000", "epoch_190"):
            folder = tmp_path / "nets" / run / epoch
            folder.mkdir(parents=True)
            for i, (n_in, n_out) in enumerate(((7, 6), (6, 4))):  # (in + 1) x out, the bias last
                layer = sp.random(n_in + 1, n_out, density=0.4, random_state=rng, format="csr")
                sp.save_npz(folder / f"weight_l{i}.npz", layer)
                if i == 0:
                    first[f"{run}/{epoch}"] = layer.toarray()[:-1].T != 0  # out x in
    result = cli.run(["analyze", str(tmp_path / "nets"), "--nnstd-layer", "0", "--plot", str(tmp_path / "figs")])
    labels, D = result["labels"], result["distance"]
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            A, B = first[a], first[b]
            inter = A.astype(int) @ B.T.astype(int)
            union = A.sum(1)[:, None] + B.sum(1)[None, :] - inter
            cost = np.where(union > 0, 1 - inter / np.maximum(union, 1), 0.0)
            r, c = linear_sum_assignment(cost)
            assert D[i, j] == pytest.approx(cost[r, c].sum() / len(A), abs=1e-12), (a, b)
    valid(tmp_path / "figs", ["nnstd_epoch_000", "nnstd_epoch_190"])
    assert not (tmp_path / "figs" / "nnstd.png").exists()
    mean = cli.run(["analyze", str(tmp_path / "nets")])["distance"]
    assert not np.allclose(mean, D)  # the default: the mean over the two layers
