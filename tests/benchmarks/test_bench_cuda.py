"""benchmarks/bench_cuda.py without a GPU: it imports, --help works and a run says there is no
device; and its whole path (patterns by row law, the float64 check, the best-baseline ratio, the
tables, --out/--copy-to/--budget-s as gpu_all.sh passes them, the exit status of a wrong result)
runs on the CPU with the device calls stubbed, float32 and bfloat16, so that a GPU session does not
find its bugs. The timings are stubbed: the numbers are not what is checked."""
import subprocess
import sys
import types
from argparse import Namespace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(load_script, monkeypatch):
    """bench_cuda.py on the CPU: DEV "cpu", one call per timing, a device of 80 GiB named fake-gpu."""
    module = load_script("benchmarks/bench_cuda.py")
    monkeypatch.setattr(module, "DEV", "cpu")
    monkeypatch.setattr(module, "time_ms", lambda fn, **kw: (fn(), 0.5)[1])
    monkeypatch.setattr(module, "copy_bandwidth", lambda *a: 1e12)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (80 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return module


def args(dtype="float32", **kw):
    return Namespace(ops=["spmm", "spmm_t", "sddmm"], dtype=dtype, no_dense=False, **kw)


def test_imports_and_help_without_a_gpu():
    help_ = subprocess.run([sys.executable, "benchmarks/bench_cuda.py", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert help_.returncode == 0 and "--laws" in help_.stdout and "--budget-s" in help_.stdout
    if not torch.cuda.is_available():
        run = subprocess.run([sys.executable, "benchmarks/bench_cuda.py", "--quick"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2 and "no CUDA device" in run.stderr


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("law", ["uniform", "zipf1.0", "banded", "block"])
def test_a_cell_on_the_cpu_is_checked(bench, law, dtype, tmp_path):
    """Our result is within its rounding bound in the dtype it is stored in (bfloat16: ours, not
    cuSPARSE's, which has no CPU bfloat16 kernel and shows its error); best x against the fastest."""
    patterns, dense = {}, {}
    cells = []
    for B in (1, 4):
        cell = bench.run_cell(300, 0.05, B, law, args(dtype), dense, 1e12, patterns)
        for op, r in cell["ops"].items():
            assert bench.check_text(r["check"]).startswith("checked (all rows)"), (op, r["check"])
            assert isinstance(r["ours"], float) and bench.best(r) is not None
            if dtype == "bfloat16":
                assert isinstance(r["ours32"], float)
        assert isinstance(cell["ops"]["spmm_t"]["ours_gather"], float)  # spmm_t without values_t too
        cells.append(((300, 0.05, B, law), cell))
    assert patterns["key"] == (300, 0.05, law)  # one pattern for both B
    out = tmp_path / "t.md"
    bench.write_report(out, "Machine: test\n", cells, ["spmm", "spmm_t", "sddmm"], dtype)
    text = out.read_text()
    assert "| N | density | law | B | nnz | max row | ours ms |" in text and "| best x |" in text
    spmm_t = text.split("## spmm_t")[1].split("## sddmm")[0]
    assert "| ours, values gathered ms | best x |" in spmm_t and "values gathered" not in text.split("## spmm_t")[0]
    header = next(line for line in spmm_t.splitlines() if line.startswith("| N |"))
    rows = [line for line in spmm_t.splitlines() if line.startswith("| 300 |")]
    assert len(rows) == 2 and all(row.count("|") == header.count("|") for row in rows), (header, rows)
    assert all(text.count(f"| 300 | 5% | {law} | {B} | ") == 3 for B in (1, 4)) and "WRONG" not in text
    assert text.count(f"| 300 | 5% | {law} | 4,500 | 0.50 |") == 1  # the transposition, once a pattern


def test_a_wrong_result_is_recorded(bench, monkeypatch):
    import sparse_engine.ops as se_ops

    sddmm = se_ops.sddmm
    monkeypatch.setattr(se_ops, "sddmm", lambda W, G, X: sddmm(W, G, X) * 1.01)
    cell = bench.run_cell(300, 0.05, 4, "zipf1.2", args(), {}, 1e12)
    assert bench.wrong(cell) == ["sddmm"]
    assert bench.check_text(cell["ops"]["sddmm"]["check"]).startswith("WRONG: error ")


@pytest.fixture
def gpu_main(bench, monkeypatch):
    """main() as on a GPU machine: a device that is available, named, with properties."""
    import sparse_engine.kernels

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU 9")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda *a: types.SimpleNamespace(multi_processor_count=1, total_memory=80 << 30))
    monkeypatch.setattr(sparse_engine.kernels, "HAS_CUDA_KERNELS", True)
    return bench.main


def test_main_as_gpu_all_calls_it(gpu_main, tmp_path, capsys):
    """--out FOLDER/ (the name after the GPU, _n<sizes>), --copy-to, --budget-s; --pattern power_law
    still runs (as zipf1.0)."""
    out, copy = tmp_path / "results", tmp_path / "copy"
    copy.mkdir()
    rc = gpu_main(["--n", "256", "--density", "0.05", "--batch", "1", "32", "--pattern", "uniform", "power_law",
                   "--dtype", "bfloat16", "--budget-s", "100", "--out", f"{out}/", "--copy-to", str(copy)])
    assert rc == 0
    name = "cuda_ops_fake_gpu_9_bf16_n256.md"
    text = (out / name).read_text()
    assert (copy / name).read_text() == text
    for law in ("uniform", "zipf1.0"):
        for B in (1, 32):
            assert text.count(f"| 256 | 5% | {law} | {B} | ") == 3
    console = capsys.readouterr().out
    assert "N=256 d=5% B=32 zipf1.0 ..." in console and "vs the best baseline" in console


def test_main_ends_with_status_1_on_a_wrong_result(gpu_main, monkeypatch, tmp_path, capsys):
    import sparse_engine.ops as se_ops

    monkeypatch.setattr(se_ops, "spmm_t", lambda W, G, values_t=None: torch.zeros(W.shape[1], G.shape[1], dtype=G.dtype))
    rc = gpu_main(["--n", "200", "--density", "0.05", "--batch", "4", "--laws", "uniform", "--budget-s", "100",
                   "--out", str(tmp_path / "w.md")])
    assert rc == 1
    assert "WRONG" in (tmp_path / "w.md").read_text()
    assert "our result is WRONG" in capsys.readouterr().err


def test_budget_stops_starting_cells(gpu_main, tmp_path, capsys):
    assert gpu_main(["--n", "128", "--density", "0.05", "--batch", "1", "2", "--laws", "block", "--budget-s", "0",
                     "--out", str(tmp_path / "b.md")]) == 0
    assert "budget of 0 s spent: 2 cells not run" in capsys.readouterr().out


def test_quick_and_grid_orders(bench):
    quick = bench.grid_cells(Namespace(quick=True, laws=bench.QUICK_LAWS))
    assert quick[0] == (65536, 0.01, 32, "uniform") and {c[3] for c in quick} == {"uniform", "zipf1.0"}
    assert {c[2] for c in quick} == {1, 32, 128}
    grid = bench.grid_cells(Namespace(quick=False, n=bench.GRID_N, density=bench.GRID_DENSITY,
                                      laws=list(bench.ROW_LAWS), batch=bench.GRID_B))
    assert len(grid) == 3 * 4 * 7 * 6 and grid[0] == (16384, 0.0005, 1, "uniform")
    first = grid[:7 * 6]
    assert {c[3] for c in first} == set(bench.ROW_LAWS) and {c[:2] for c in first} == {(16384, 0.0005)}
