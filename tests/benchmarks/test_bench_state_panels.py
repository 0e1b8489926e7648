"""benchmarks/bench_state_panels.py, column panels of the state emulated with one CSR per panel: the
panels hold W's entries exactly once, each with its column shifted into its panel; the panelled
products agree with the whole ones (checked in every row); a row per op and panel count. Timings are
not checked (a small CPU run)."""
import sparse_engine  # noqa: F401  (before torch)
import torch

from sparse_engine import SparseWeight


def test_panels_hold_every_entry_once_shifted(load_script):
    bench = load_script("benchmarks/bench_state_panels.py")
    g = torch.Generator().manual_seed(0)
    w = SparseWeight.random(40, 30, nnz=300, generator=g)
    parts = bench.panel_weights(w, 4)
    assert [(lo, hi) for lo, hi, _ in parts] == [(0, 7), (7, 15), (15, 22), (22, 30)]
    dense = torch.zeros(40, 30)
    for lo, hi, wp in parts:
        assert wp.shape == (40, hi - lo) and int(wp.col_idx.max()) < hi - lo
        dense[:, lo:hi] += wp.to_dense()
    assert torch.equal(dense, w.to_dense())


def test_a_small_run_checks_every_row(load_script, tmp_path):
    bench = load_script("benchmarks/bench_state_panels.py")
    out = tmp_path / "panels.md"
    assert bench.main(["--device", "cpu", "--hidden", "512", "--batch", "3", "20", "--panels", "1", "3",
                       "--repeat", "1", "--out", str(out)]) == 0
    rows = [line.strip("|").split("|") for line in out.read_text().splitlines() if line.startswith("| 512")]
    assert len(rows) == 2 * 2 * 2  # B x panels x ops
    assert {(r[1].strip(), r[2].strip(), r[3].strip()) for r in rows} == {
        (b, op, p) for b in ("3", "20") for op in ("spmm", "sddmm") for p in ("1", "3")}
    assert all(r[-1].strip() in ("same", "close") for r in rows)
    assert all(r[-1].strip() == "same" for r in rows if r[3].strip() == "1")
