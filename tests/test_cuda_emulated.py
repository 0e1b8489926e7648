"""The CUDA kernels' logic, run on the CPU: indexing, lane layouts, shuffles, the long-row
kernels (and that they are launched only when a row can be long), the index scan, and bounds,
checked against float64 references on a machine without a GPU.

csrc/cuda/spmm_cuda.cu, sddmm_cuda.cu and transpose_cuda.cu are compiled as host C++ with
tests/cuda_emu/emu.h, which runs every CUDA thread as a std::thread, keeps each warp in
lockstep at its shuffles and runs blocks in turn (a shuffle inside divergent code would
deadlock here, as it would hang or be undefined on a GPU; the timeout makes it a failure). Only the `kernel<<<...>>>(args)`
launch lines are rewritten, and cub's radix sort is replaced by a stable sort (cub_shim.h).
What this cannot show: speed, memory coalescing, real concurrency between blocks, the
float4/double2 hardware loads, and cub itself.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from _build_util import host_cxx, run_all
from sparse_engine.kernels.constants import MODE_IDS

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
LAUNCH = re.compile(r"(\b\w+_kernel(?:<[^<>]*>)?)\s*<<<(.*?)>>>\((.*?)\);", re.S)
CUB = "#include <cub/device/device_radix_sort.cuh>"


def _cuda_include() -> Path | None:
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cand and (Path(cand) / "include" / "cuda_runtime.h").exists():
            return Path(cand) / "include"
    nvcc = shutil.which("nvcc")
    if nvcc and (Path(nvcc).resolve().parents[1] / "include" / "cuda_runtime.h").exists():
        return Path(nvcc).resolve().parents[1] / "include"
    return None


def _build_emulator(out: Path, kernels: list[str], driver: str) -> Path:
    """The named csrc/cuda/<kernel>.cu files as host C++ (launch lines rewritten, cub's sort
    replaced by a stable sort) linked with tests/cuda_emu/<driver>.cpp; skips where the
    toolchain is missing."""
    inc = _cuda_include()
    cxx = host_cxx()
    if inc is None or cxx is None:
        pytest.skip("needs CUDA toolkit headers (cuda_runtime.h, for the vector types) and a host C++ compiler")
    flags = [cxx, "-std=c++20", "-O1", "-w", f"-I{inc}", f"-I{CUDA_DIR}", f"-I{EMU_DIR}"]
    probe = out / "probe.cpp"
    probe.write_text("#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
    if subprocess.run(flags + [str(probe), "-o", str(out / "probe"), "-pthread"], capture_output=True).returncode:
        pytest.skip(f"{cxx} has no C++20 <barrier>")
    compiles = {}  # object -> command
    for name in kernels:
        host, n = LAUNCH.subn(r"::emu::launch(\1, \2, \3);", (CUDA_DIR / f"{name}.cu").read_text())
        assert n >= 2, f"expected kernel launches in {name}.cu to rewrite, found {n}"
        if CUB in host:  # cub has no host version: a stable sort stands in for it
            host = host.replace(CUB, '#include "cub_shim.h"')
        tu = out / f"{name}_emu.cpp"
        tu.write_text('#include "emu.h"\n' + host)
        compiles[out / f"{name}_emu.o"] = flags + ["-c", str(tu), "-o", str(out / f"{name}_emu.o")]
    compiles[out / f"{driver}.o"] = flags + ["-c", str(EMU_DIR / f"{driver}.cpp"), "-o", str(out / f"{driver}.o")]
    for rc, text in run_all(compiles).values():
        assert rc == 0, text[-4000:]
    exe = out / f"{driver}_emu"
    link = subprocess.run([cxx, *map(str, compiles), "-o", str(exe), "-pthread"], capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-4000:]
    return exe


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    return _build_emulator(tmp_path_factory.mktemp("cuda_emu"), ["spmm_cuda", "sddmm_cuda", "transpose_cuda"], "driver")


@pytest.mark.slow
def test_kernels_match_float64_references_on_the_emulator(emulator):
    suite = os.environ.get("SPARSE_ENGINE_EMU_SUITE", "small")  # "full": bigger long-row cases
    proc = subprocess.run([str(emulator), suite], capture_output=True, text=True, timeout=900)
    lines = proc.stdout.splitlines()
    failed = [line for line in lines if "FAIL" in line]
    assert proc.returncode == 0 and lines and lines[-1].startswith("ALL OK"), "\n".join(failed or lines[-20:]) + proc.stderr
    # the long-row kernels really ran, for rows (spmm, sddmm) and for columns (spmm_t)
    assert any("power " in line and "long rows=5" in line for line in lines)
    assert any("powerT" in line and "long cols=5" in line for line in lines)
    # with the longest row known (a checked index), a pattern without long rows launches only the
    # row kernels (spmm/spmm_t/sddmm), where sizing by nnz alone launched the long-row kernels too;
    # with long rows, those still run
    flat = [line for line in lines if line.split()[1:2] == ["flat"]]
    assert flat and all("launches=2/2/2" in line for line in flat if "known=0" in line)
    assert any("known=1" in line for line in flat) and all("launches=1/1/1" in line for line in flat if "known=1" in line)
    assert any("power " in line and "known=1 launches=2/1/2" in line for line in lines)
    # the index scan (launch_index_scan) found every planted problem (its FAIL lines fail the run above)
    scans = [line for line in lines if line.startswith("scan ")]
    assert len(scans) >= 15 and all(line.endswith(" ok") for line in scans)


# ------------------------------------------------- fused recurrent step (rnn_step_cuda.cu)
@pytest.fixture(scope="module")
def rnn_emulator(tmp_path_factory) -> Path:
    """rnn_step_cuda.cu (+ spmm_cuda.cu, whose gather its backward calls) and tests/cuda_emu/rnn_driver.cpp,
    a separate executable from the one above."""
    return _build_emulator(tmp_path_factory.mktemp("cuda_emu_rnn"), ["rnn_step_cuda", "spmm_cuda"], "rnn_driver")


@pytest.mark.slow
def test_fused_rnn_step_kernels_match_float64_references_on_the_emulator(rnn_emulator):
    suite = os.environ.get("SPARSE_ENGINE_EMU_SUITE", "small")  # "full": wider batches, bigger long rows
    proc = subprocess.run([str(rnn_emulator), suite], capture_output=True, text=True, timeout=900)
    lines = proc.stdout.splitlines()
    failed = [line for line in lines if "FAIL" in line]
    assert proc.returncode == 0 and lines and lines[-1].startswith("ALL OK"), "\n".join(failed or lines[-20:]) + proc.stderr
    for mode in MODE_IDS:  # every mode ran, in both dtypes (the driver prints constants.h's mode names)
        assert any(line.startswith(f"f32 {mode} ") for line in lines), mode
        assert any(line.startswith(f"f64 {mode} ") for line in lines), mode
    # the backward's W_hh^T dG really took spmm_cuda.cu's long-row kernel (5 long columns)
    assert any("longcols" in line and "long cols=5" in line for line in lines)
