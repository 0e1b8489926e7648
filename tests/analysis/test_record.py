"""BalanceRecorder writing its CSV as it goes, and read_record reading it back as a table."""
import math

import pytest

from sparse_engine.analysis import BalanceRecorder, read_record, signed_triad_census, structural_balance
from sparse_engine.testing import random_weight


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_written_as_it_goes_and_read_back(tmp_path, rng):
    path = tmp_path / "balance.csv"
    W = random_weight(30, 30, 0.2, generator=rng)
    rec = BalanceRecorder(path=path)
    assert not path.exists()
    for step in range(3):
        rec(step, {"weight_hh": W})
        rows = read_record(path)  # on disk after every record, before any to_csv
        assert len(rows) == step + 1
    rec.end_epoch(5, {"weight_hh": W}, epoch=1)
    rows = read_record(path)
    assert len(rows) == len(rec.records) == 4
    for got, want in zip(rows, rec.records):
        assert got.keys() == want.keys()
        assert all(same(got[k], want[k]) for k in want), [k for k in want if not same(got[k], want[k])]
    # the numbers are the census's
    c = signed_triad_census(W)
    assert rows[0]["030T"] == c.counts["030T"] and rows[0]["n"] == 30 and rows[0]["epoch"] is None
    assert rows[0]["balance_semicycle"] == pytest.approx(structural_balance(c).value)
    assert rows[-1]["event"] == "epoch_end" and rows[-1]["epoch"] == 1 and rows[-1]["dense"] is False


def test_resumed_recorder_rewrites_restored_records(tmp_path, rng):
    path = tmp_path / "b.csv"
    W = random_weight(12, 12, 0.3, generator=rng)
    first = BalanceRecorder(path=path)
    first(0, {"weight_hh": W})
    first(1, {"weight_hh": W})
    path.write_text("stale")  # what a crashed run might leave
    again = BalanceRecorder(path=path)
    again.records = list(first.records)  # as TrainProgress restores them from a checkpoint
    again(2, {"weight_hh": W})
    assert [r["step"] for r in read_record(path)] == [0, 1, 2]
    again(3, {"weight_hh": W})
    assert [r["step"] for r in read_record(path)] == [0, 1, 2, 3]


def test_read_record_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_record(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a balance record"):
        read_record(bad)
    with pytest.raises(ValueError, match="not a file"):
        read_record(tmp_path)
    with pytest.raises(TypeError, match="path"):
        BalanceRecorder(path=3)


def test_a_damaged_record_names_the_file_line_and_column(tmp_path):
    """Text in a number column, a short row: one error naming the file, the line (and the column);
    a byte-order mark (a spreadsheet's save) reads as the record it is. Before: "could not convert
    string to float", an int() of None, and a mark read as part of the first column's name."""
    from sparse_engine.analysis import read_record

    head = "step,epoch,layer,gate,balance_semicycle\n"
    cases = {"text.csv": (head + "1,0,a,h,0.5\n2,0,a,h,abc\n", r"text.csv, line 3: column balance_semicycle "
                                                               r"holds 'abc', expected a number"),
             "short.csv": (head + "1,0,a,h\n", r"short.csv, line 2: the row's number of cells differs"),
             "step.csv": (head + "1.5,0,a,h,0.5\n", r"step.csv, line 2: column step holds '1.5', expected an integer")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            read_record(tmp_path / name)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (head + "1,0,a,h,0.5\n").encode())
    assert read_record(tmp_path / "bom.csv") == [{"step": 1, "epoch": 0, "layer": "a", "gate": "h",
                                                  "balance_semicycle": 0.5}]
