"""Recurrent matrices of every model the command line trains: gate blocks and the summed graph,
the balance recorder during training, ``analyze`` on every checkpoint ``train`` writes, and
clear errors on files that are not what they claim to be."""
import csv
import math
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sparse_engine import cli
from sparse_engine.analysis import (SUM, BalanceRecorder, gate_graphs, gate_names, load_recurrent, recurrent_weights,
                                    signed_triad_census, structural_balance)
from sparse_engine.kernels.constants import GATE_NAMES
from sparse_engine.models import SequenceModel
from sparse_engine.runs import analyze
from sparse_engine.testing import random_weight

DEFINITIONS = {"semicycle", "triad", "weighted"}


def same(a: dict, b: dict) -> bool:
    """Equal balance values, NaN equal to NaN."""
    return set(a) == set(b) and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


# ----------------------------------------------------------------------------- gate blocks
def test_gate_blocks_and_summed_graph(rng):
    H = 12
    W = random_weight(4 * H, H, 0.4, generator=rng)
    D = W.to_dense()
    graphs = gate_graphs(W)
    assert list(graphs) == [*GATE_NAMES["LSTM"], SUM]
    for k, g in enumerate(GATE_NAMES["LSTM"]):  # rows k*H..(k+1)*H of the stack
        np.testing.assert_array_equal(graphs[g].toarray(), D[k * H:(k + 1) * H].numpy())
    np.testing.assert_allclose(graphs[SUM].toarray(), D.view(4, H, H).sum(0).numpy(), rtol=1e-6)
    assert signed_triad_census(graphs["f"]) == signed_triad_census(sp.csr_matrix(D[H:2 * H].numpy()))
    assert list(gate_graphs(random_weight(3 * H, H, 0.4, generator=rng))) == [*GATE_NAMES["GRU"], SUM]
    assert list(gate_graphs(random_weight(H, H, 0.4, generator=rng))) == ["h"]  # one block: no separate sum
    assert list(gate_graphs(W, gates="g")) == ["g"]
    assert gate_names((4 * H, H)) == GATE_NAMES["LSTM"] and gate_names((H, H)) == ("h",)
    with pytest.raises(ValueError, match="gate"):
        gate_graphs(W, gates="z")
    with pytest.raises(ValueError, match=r"\(24, 10\)"):
        gate_graphs(random_weight(24, 10, 0.4, generator=rng))


def test_summed_graph_signs_and_cancellation():
    # two gates of a GRU-like stack cancel on one connection: the sum has no edge there
    H = 3
    rows = [0, H + 0, 2 * H + 1, 1]
    cols = [1, 1, 2, 0]
    vals = [0.5, -0.5, -2.0, 1.0]
    W = sp.csr_matrix((vals, (rows, cols)), shape=(3 * H, H))
    S = gate_graphs(W)[SUM]
    S.eliminate_zeros()
    assert S.nnz == 2 and S[1, 2] == -2.0 and S[1, 0] == 1.0


def test_dense_recurrent_matrices_are_graphs_of_their_nonzeros():
    D = torch.tensor([[0.0, 1.0], [-2.0, 0.0], [3.0, 0.0], [0.0, 0.0], [0.0, 0.5], [1.0, 1.0]])  # GRU, H=2
    graphs = gate_graphs(D)
    assert graphs["r"].nnz == 2 and graphs["z"].nnz == 1 and graphs[SUM].toarray().tolist() == [[3.0, 1.5],
                                                                                                [-1.0, 1.0]]


def test_recurrent_weights_of_every_model():
    for model in ("lstm", "gru", "rnn", "ctrnn"):
        for sparse in ("both", "input", "recurrent"):
            m = SequenceModel(model, 8, 10, 6, 2 if model != "ctrnn" else 1, 0.3, sparse, "classify")
            ws = recurrent_weights(m)
            want = ["rnn.weight_hh"] if model == "ctrnn" else ["rnn.weight_hh_l0", "rnn.weight_hh_l1"]
            assert list(ws) == want, (model, sparse)
            for w in ws.values():
                assert tuple(w.shape) == (len(gate_names(w.shape)) * 6, 6)


# ----------------------------------------------------------------------------- recorder
def test_recorder_rows_per_gate_and_zeros_are_not_edges(rng):
    H = 10
    W = random_weight(4 * H, H, 0.3, generator=rng)
    rec = BalanceRecorder()
    rec(5, {"rnn.weight_hh_l0": W, "rnn.weight_ih_l0": random_weight(4 * H, H, 0.3, generator=rng)})
    assert [(r["layer"], r["gate"]) for r in rec.records] == [("rnn.weight_hh_l0", g) for g in "ifgo"] + [
        ("rnn.weight_hh_l0", SUM)]  # only the recurrent matrix when one is named so
    blocks = gate_graphs(W)
    for r in rec.records:
        assert r["step"] == 5 and r["n"] == H and r["event"] == "update"
        c = signed_triad_census(blocks[r["gate"]])
        assert r["030T"] == c.counts["030T"]
        b = structural_balance(c).value
        assert r["balance_semicycle"] == b or (math.isnan(b) and math.isnan(r["balance_semicycle"]))
    # regrown at zero: stored, not edges, and still a row
    Z = random_weight(H, H, 0.5, generator=rng)
    with torch.no_grad():
        Z.values.zero_()
    rec = BalanceRecorder()
    rec.record(0, {"w": Z}, event="epoch_end", epoch=1)
    (r,) = rec.records
    assert r["edges"] == 0 and r["stored"] == Z.nnz > 0 and r["epoch"] == 1 and r["event"] == "epoch_end"
    # a dense recurrent matrix (sparse='input') is recorded too
    rec.record(1, {"rnn.weight_hh_l0": torch.randn(H, H)})
    assert rec.records[-1]["dense"] and rec.records[-1]["edges"] == H * (H - 1)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_record_balance_default_lstm_writes_per_gate_rows(tmp_path):
    """The default model (LSTM, no topology algorithm) used to write an empty file."""
    path = tmp_path / "bal.csv"
    cli.run(["train", "--hidden", "8", "--epochs", "2", "--record-balance", str(path), "--quiet"])
    rows = read_rows(path)
    assert len(rows) == 2 * 5  # once per epoch: four gates and the summed graph
    assert [r["gate"] for r in rows[:5]] == ["i", "f", "g", "o", SUM]
    assert {r["layer"] for r in rows} == {"rnn.weight_hh_l0"}
    assert [r["epoch"] for r in rows] == ["1"] * 5 + ["2"] * 5 and {r["event"] for r in rows} == {"epoch_end"}
    assert all(int(r["n"]) == 8 and int(r["edges"]) >= 0 for r in rows)


@pytest.mark.parametrize("model,gates", [("gru", ["r", "z", "n", SUM]), ("ctrnn", ["h"])])
def test_record_balance_other_cells_and_algorithms(tmp_path, model, gates):
    path = tmp_path / "bal.csv"
    cli.run(["train", "--model", model, "--hidden", "8", "--epochs", "2", "--algorithm", "set",
             "--record-balance", str(path), "--quiet"])
    rows = read_rows(path)
    assert [r["gate"] for r in rows] == gates * 2  # SET's end-of-epoch update: one record set per epoch
    assert {r["event"] for r in rows} == {"update"}


def test_record_balance_dense_recurrent_matrix(tmp_path):
    path = tmp_path / "bal.csv"
    cli.run(["train", "--model", "rnn", "--sparse", "input", "--hidden", "6", "--epochs", "1",
             "--record-balance", str(path), "--quiet"])
    (row,) = read_rows(path)
    assert row["layer"] == "rnn.weight_hh_l0" and row["dense"] == "True" and int(row["edges"]) == 30


# ----------------------------------------------------------------------------- analyze
@pytest.mark.parametrize("sparse", ["both", "recurrent", "input"])
@pytest.mark.parametrize("model", ["lstm", "gru", "rnn", "ctrnn"])
def test_analyze_every_model_the_cli_trains(tmp_path, model, sparse, capsys):
    ck = tmp_path / f"{model}.pt"
    cli.run(["train", "--model", model, "--sparse", sparse, "--hidden", "6", "--density", "0.5", "--epochs", "1",
             "--save", str(ck), "--quiet"])
    assert cli.main(["analyze", str(ck)]) == 0
    result = analyze(path=str(ck))
    assert set(result) == DEFINITIONS and all(isinstance(v, float) for v in result.values())
    gates = {"lstm": ["i", "f", "g", "o", SUM], "gru": ["r", "z", "n", SUM]}.get(model, ["h"])
    assert list(result.graphs) == gates
    assert result.key == ("rnn.weight_hh" if model == "ctrnn" else "rnn.weight_hh_l0")
    assert result.dense == (sparse == "input")
    assert result.primary == gates[-1] and same(result, result.graphs[gates[-1]])
    out = capsys.readouterr().out
    assert result.key in out and ("dense" in out) == (sparse == "input")
    # one gate, chosen by name: the census of that block of the saved matrix
    gate = gates[1] if len(gates) > 1 else "h"
    one = analyze(path=str(ck), gate=gate)
    assert list(one.graphs) == [gate] and same(one, result.graphs[gate])
    assert same(cli.run(["analyze", str(ck), "--gate", gate, "--key", result.key]), one)
    with pytest.raises(ValueError, match="gate"):
        analyze(path=str(ck), gate="x")


def test_analyze_gate_matches_the_block(tmp_path):
    ck = tmp_path / "lstm.pt"
    cli.run(["train", "--hidden", "10", "--epochs", "1", "--save", str(ck), "--quiet"])
    m = load_recurrent(ck)
    assert m.key == "rnn.weight_hh_l0" and m.gates == GATE_NAMES["LSTM"]
    state = torch.load(ck, weights_only=True)["model"]
    W = [state[f"rnn.weight_hh_l0.{part}"].numpy() for part in ("values", "col_idx", "row_ptr")]
    dense = sp.csr_matrix(tuple(W), shape=(40, 10)).toarray()
    for k, g in enumerate("ifgo"):
        want = structural_balance(sp.csr_matrix(dense[k * 10:(k + 1) * 10]), "triad").value
        got = analyze(path=str(ck), gate=g)["triad"]
        assert got == want or (math.isnan(got) and math.isnan(want))
    want = structural_balance(sp.csr_matrix(dense.reshape(4, 10, 10).sum(0)), "weighted").value
    got = analyze(path=str(ck), gate=SUM)["weighted"]
    assert got == pytest.approx(want, nan_ok=True)


def test_analyze_key_choice_and_null_models_per_gate(tmp_path):
    ck = tmp_path / "gru.pt"
    cli.run(["train", "--model", "gru", "--layers", "2", "--hidden", "8", "--epochs", "1", "--save", str(ck),
             "--quiet"])
    res = analyze(path=str(ck), key="rnn.weight_hh_l1", null=3)
    assert res.key == "rnn.weight_hh_l1" and set(res.null) == {"r", "z", "n", SUM}
    # an input matrix is not recurrent: its blocks are 8 x 8 here only because digits have 8 features
    with pytest.raises(ValueError, match="readout.weight"):
        analyze(path=str(ck), key="readout.weight")
    with pytest.raises(ValueError, match="rnn.weight_hh_l7.*rnn.weight_hh_l0"):
        analyze(path=str(ck), key="rnn.weight_hh_l7")
    out = tmp_path / "edges.csv"
    first = analyze(path=str(ck), export_csv=str(out))  # one edge list per graph
    names = sorted(p.name for p in tmp_path.glob("edges_*.csv"))
    assert names == sorted(f"edges_{g}.csv" for g in ["r", "z", "n", SUM])
    assert same(analyze(path=str(tmp_path / "edges_z.csv")), first.graphs["z"])
    assert same(analyze(path=str(tmp_path / "edges_sum.csv")), first)


def test_analyze_input_only_checkpoint_does_not_take_the_input_matrix(tmp_path):
    """With sparse='input' the only SparseWeight is the input matrix (square when the hidden
    size equals the feature count); it used to be analysed as if it were recurrent."""
    ck = tmp_path / "rnn.pt"
    cli.run(["train", "--model", "rnn", "--sparse", "input", "--hidden", "8", "--epochs", "1", "--save", str(ck),
             "--quiet"])
    res = analyze(path=str(ck))
    assert res.key == "rnn.weight_hh_l0" and res.dense


# ----------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        analyze(path=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="directory"):
        analyze(path=str(tmp_path))


def test_not_a_checkpoint_truncated_and_unknown_suffix(tmp_path):
    ck = tmp_path / "good.pt"
    cli.run(["train", "--model", "rnn", "--hidden", "6", "--epochs", "1", "--save", str(ck), "--quiet"])
    data = ck.read_bytes()
    cases = {
        "garbage.pt": b"this is not a checkpoint at all\n" * 10,
        "truncated.pt": data[: len(data) // 2],
        "pickle.pt": pickle.dumps({"a": 1}, protocol=2) + b"junk",
        "empty.pt": b"",
        "notes.txt": b"hello",
        "garbage.npz": b"PK\x03\x04 broken zip",
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")) as e:
            load_recurrent(p)
        assert "\n" not in str(e.value), name
    (tmp_path / "notes.txt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.txt"):
        analyze(path=str(tmp_path / "notes.txt"))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="tensor.pt"):
        analyze(path=str(tmp_path / "tensor.pt"))
    torch.save({"readout.weight": torch.zeros(3, 4)}, tmp_path / "norec.pt")
    with pytest.raises(ValueError, match="norec.pt.*no recurrent"):
        analyze(path=str(tmp_path / "norec.pt"))
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="arrays.npz"):
        analyze(path=str(tmp_path / "arrays.npz"))
    sp.save_npz(tmp_path / "rect.npz", sp.random(5, 7, 0.5, format="csr"))
    with pytest.raises(ValueError, match=r"rect.npz.*\(5, 7\)"):
        analyze(path=str(tmp_path / "rect.npz"))


def test_non_finite_weights_named(tmp_path):
    m = SequenceModel("rnn", 8, 10, 6, 1, 0.5, "both", "classify")
    with torch.no_grad():
        m.rnn.weight_hh_l0.values[0] = float("nan")
    torch.save({"model": m.state_dict()}, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="rnn.weight_hh_l0.*finite"):
        analyze(path=str(tmp_path / "nan.pt"))
