"""benchmarks/ab_builds.py, two builds of the extension timed against each other: each build runs in
a process of its own with its file installed in the package, the package's own file is back in place
afterwards (byte for byte), the table has a row per cell with both times; a malformed cell is one
line and status 2. The timings are not checked (one tiny cell, one round)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ab_builds.py"


def installed() -> Path:
    return next((ROOT / "sparse_engine").glob("_C*.so"))


def test_two_builds_alternate_and_the_package_file_is_restored(tmp_path):
    own = installed().read_bytes()
    build = tmp_path / "build.so"
    build.write_bytes(own)
    out = tmp_path / "ab.md"
    run = subprocess.run([sys.executable, str(SCRIPT), "--before", str(build), "--after", str(build), "--cells",
                          "sddmm:64:4", "spmm:64:20", "--rounds", "1", "--repeat", "1", "--threads", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert installed().read_bytes() == own
    assert not list((ROOT / "sparse_engine").glob("_C*.so.ab-*"))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.read_text().splitlines() if line.startswith("| s")}
    assert set(rows) == {"sddmm:64:4", "spmm:64:20"}
    for cells in rows.values():
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[3].endswith("x")
    assert rows["sddmm:64:4"][4] != "-" and rows["spmm:64:20"][4] == "-"  # MKL's sampled_addmm beside sddmm only


@pytest.mark.parametrize("cell", ["conv:64:4", "sddmm:64", "sddmm:x:4", "spmm:0:4"])
def test_a_malformed_cell_is_one_line(cell, tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--before", str(tmp_path), "--after", str(tmp_path),
                          "--cells", cell], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert f"--cells: {cell!r}" in run.stderr and "KIND:N:B" in run.stderr and "Traceback" not in run.stderr
