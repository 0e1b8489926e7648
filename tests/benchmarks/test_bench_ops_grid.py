"""benchmarks/bench_ops.py, the CPU grid with the row law as an axis: --quick covers uniform and a
Zipf law at B = 1 and 128 and its table lists the law, the best baseline and the check; every row
is checked against a float64 reference, and a wrong result ends the run with status 1 after its row
says so; --budget-s stops starting cells; the grid runs every law before the next density. The
timings are stubbed (one call each): what is checked here is the script, not the numbers."""
import re

import pytest


@pytest.fixture
def bench(load_script, monkeypatch):
    module = load_script("benchmarks/bench_ops.py")
    monkeypatch.setattr(module, "timeit", lambda fn: (fn(), 1e-3)[1])
    monkeypatch.setattr(module, "copy_bandwidth", lambda *a: 10e9)
    return module


def table(path):
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return header, [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def test_quick_grid_covers_laws_and_batches_and_checks_every_row(bench, tmp_path, capsys):
    assert {"uniform", "zipf1.0"} <= set(bench.QUICK["laws"]) and {1, 128} <= set(bench.QUICK["batch"])
    out = tmp_path / "quick.md"
    assert bench.main(["--quick", "--ops", "spmm", "sddmm", "fwd+bwd", "--out", str(out)]) == 0
    header, rows = table(out)
    assert header[:7] == ["N", "law", "density", "max row", "B", "op", "ours ms"]
    assert {"best", "x best", "% floor", "check", "load"} <= set(header)
    assert {(r["law"], r["B"]) for r in rows} == {(law, B) for law in ("uniform", "zipf1.0") for B in ("1", "128")}
    assert len(rows) == 4 * 3
    for r in rows:
        assert r["check"] == "checked (all rows)", r
        assert r["best"] in bench.BASELINES and re.fullmatch(r"\d+\.\d\dx", r["x best"]), r
        assert re.fullmatch(r"\d+%", r["% floor"]), r
    zipf = [r for r in rows if r["law"] == "zipf1.0"]
    assert all(r["max row"] == "2,048" for r in zipf)  # its hub rows are full
    console = capsys.readouterr().out
    assert "| N | law | density | max row | B | op |" in console and "N 2,048, zipf1.0, density 1%, B 128 ..." in console
    assert "memcpy bandwidth: 10.0 GB/s" in out.read_text()


def test_a_wrong_result_fails_the_check_loudly(bench, tmp_path, monkeypatch, capsys):
    """One output row off by 1e-3 of its value: past the rounding bound; the row says WRONG and the
    run stops with status 1, naming the cell."""
    spmm = bench.ops.spmm

    def off(W, X):
        Y = spmm(W, X).clone()
        Y[int(W.row_ptr.diff().argmax())] *= 1.001
        return Y

    monkeypatch.setattr(bench.ops, "spmm", off)
    out = tmp_path / "wrong.md"
    argv = ["--n", "300", "--density", "0.05", "--batch", "4", "32", "--laws", "zipf1.2", "--ops", "spmm", "sddmm",
            "--out", str(out)]
    assert bench.main(argv) == 1
    _, rows = table(out)
    assert len(rows) == 1 and rows[0]["op"] == "spmm" and rows[0]["check"].startswith("WRONG: error ")
    assert "bench_ops: ours is wrong at N 300, zipf1.2, density 5%, B 4, spmm" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_two_byte_cells_check_our_rounded_result_against_every_baseline(bench, tmp_path, dtype):
    """--dtype bfloat16 / float16: 2-byte values and operands, every row checked within the type's
    bound, every baseline timed (scipy in float32 on the same numbers), the file saying so."""
    out = tmp_path / f"{dtype}.md"
    assert bench.main(["--quick", "--dtype", dtype, "--ops", "spmm", "spmm_t", "sddmm", "--laws", "zipf1.0",
                       "--out", str(out)]) == 0
    _, rows = table(out)
    assert len(rows) == 2 * 3
    for r in rows:
        assert r["check"] == "checked (all rows)", r
        assert re.fullmatch(r"\d+\.\d+", r["torch.sparse CSR ms"]) and re.fullmatch(r"\d+\.\d+", r["scipy ms"]), r
    assert f"dtype: {dtype} (values and dense operands" in out.read_text()


def test_budget_stops_starting_cells(bench, tmp_path, capsys):
    out = tmp_path / "budget.md"
    assert bench.main(["--n", "64", "--density", "0.1", "--batch", "1", "2", "--laws", "uniform", "--ops", "spmm",
                       "--budget-s", "1e-9", "--out", str(out)]) == 0
    assert "budget of 0 s spent: 2 of 2 cells not run" in capsys.readouterr().out
    assert "2 of 2 cells not run (the first not run: N 64, uniform, density 10%, B 1)" in out.read_text()


def test_grid_order_every_law_at_small_n_first(bench):
    cells = bench.cells(bench.GRID_N, bench.GRID_DENSITY, list(bench.ROW_LAWS), bench.GRID_B)
    first = cells[:len(bench.ROW_LAWS) * len(bench.GRID_B)]
    assert {(n, d) for n, d, _, _ in first} == {(16384, 0.0005)}
    assert {law for _, _, law, _ in first} == set(bench.ROW_LAWS) and {B for *_, B in first} == set(bench.GRID_B)
    assert [n for n, *_ in cells] == sorted(n for n, *_ in cells)
    assert bench.GRID_B == [1, 4, 20, 32, 128, 256, 512] and bench.GRID_DENSITY == [0.0005, 0.001, 0.01, 0.05]


def test_floor_bytes_count_each_byte_once(bench):
    n, nnz, B = 1000, 5000, 8
    assert bench.floor_bytes("spmm", n, nnz, B) == 8 * nnz + 8 * (n + 1) + 2 * 4 * n * B
    assert bench.floor_bytes("spmm_t+gather", n, nnz, B) - bench.floor_bytes("spmm_t", n, nnz, B) == 4 * nnz
    assert bench.floor_bytes("fwd+bwd", n, nnz, B) == sum(bench.floor_bytes(op, n, nnz, B)
                                                          for op in ("spmm", "spmm_t+gather", "sddmm"))


@pytest.mark.parametrize("argv,message", [(["--laws", "zipf"], "argument --laws: invalid choice: 'zipf'"),
                                          (["--batch", "0"], "--batch values must be >= 1"),
                                          (["--density", "2"], "--density values must be in (0, 1]"),
                                          (["--budget-s", "0"], "--budget-s must be > 0")])
def test_bad_arguments_are_one_line_errors(bench, argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
