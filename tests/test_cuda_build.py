"""The CUDA sources keep compiling on machines without a GPU.

Each csrc/cuda/*.cu is compiled on its own with the machine's nvcc (the kernels take plain
pointers, so no torch headers are needed), and the torch glue csrc/cuda/ops_cuda.cpp is
syntax-checked with the host compiler against torch's c10/cuda headers. Running the kernels
is tests/test_cuda_ops.py's job and needs a GPU.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
ARCH = os.environ.get("SPARSE_ENGINE_TEST_ARCH", "sm_90")  # the H100's; one arch keeps CI fast


def _cuda_home() -> Path | None:
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cand and (Path(cand) / "include" / "cuda_runtime_api.h").exists():
            return Path(cand)
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = Path(nvcc).resolve().parents[1]
        if (home / "include" / "cuda_runtime_api.h").exists():
            return home
    return None


def _nvcc() -> str | None:
    home = _cuda_home()
    if shutil.which("nvcc"):
        return shutil.which("nvcc")
    if home and (home / "bin" / "nvcc").exists():
        return str(home / "bin" / "nvcc")
    return None


def test_there_are_cuda_sources():
    assert CU_FILES, f"no .cu files in {CUDA_DIR}"
    assert (CUDA_DIR / "ops_cuda.cpp").exists()


@pytest.fixture(scope="module")
def cu_objects(tmp_path_factory) -> dict:
    """{source: (returncode, output, object path)} for every .cu, compiled in parallel."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, /usr/local/cuda): cannot compile the CUDA kernels")
    out = tmp_path_factory.mktemp("cu_objects")
    procs = []
    for src in CU_FILES:  # both cores at once: the files are independent
        obj = out / (src.stem + ".o")
        cmd = [nvcc, "-std=c++17", "-O3", f"-arch={ARCH}", "-c", "-o", str(obj), str(src)]
        procs.append((src, obj, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    results = {}
    for src, obj, proc in procs:
        text, _ = proc.communicate(timeout=600)
        results[src] = (proc.returncode, text, obj)
    return results


def test_cu_files_compile_with_nvcc(cu_objects):
    failures = [f"{src.name} (exit {rc}):\n{text}" for src, (rc, text, _) in cu_objects.items() if rc != 0]
    assert not failures, "nvcc failed:\n" + "\n".join(failures)
    for _, _, obj in cu_objects.values():
        assert obj.stat().st_size > 0


def _defined_symbols(objs, kind: str) -> set:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    out = subprocess.run([nm, "-C", *map(str, objs)], capture_output=True, text=True, check=True).stdout
    return {line.split(f" {kind} ", 1)[1] for line in out.splitlines() if f" {kind} sparse_engine::cuda::" in line}


def test_torch_glue_compiles_and_calls_the_kernels(cu_objects, tmp_path):
    """ops_cuda.cpp compiles against the installed torch's headers (a CPU-only torch wheel
    still ships c10/cuda headers; cuda_runtime_api.h comes from the CUDA toolkit), and every
    launcher it calls is defined, with the same signature, by the nvcc-compiled kernels."""
    torch = pytest.importorskip("torch")
    from torch.utils.cpp_extension import include_paths

    home = _cuda_home()
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if home is None or cxx is None:
        pytest.skip("needs a CUDA toolkit's headers (cuda_runtime_api.h) and a host C++ compiler")
    incs = include_paths()
    if not any((Path(p) / "c10" / "cuda" / "CUDAGuard.h").exists() for p in incs):
        pytest.skip(f"torch {torch.__version__} ships no c10/cuda headers")
    obj = tmp_path / "ops_cuda.o"
    cmd = [cxx, "-std=c++17", "-O0", "-fPIC", "-c", "-o", str(obj), "-DSPARSE_ENGINE_WITH_CUDA=1",
           # the CMake-generated c10/cuda/impl/cuda_cmake_macros.h exists only in CUDA wheels;
           # it sets Windows export macros, which this check does not need
           "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"]
    cmd += [f"-I{p}" for p in incs] + [f"-I{sysconfig.get_paths()['include']}", f"-I{home / 'include'}"]
    cmd.append(str(CUDA_DIR / "ops_cuda.cpp"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode == 0, f"{' '.join(cmd)}\n" + "\n".join(errors[:40] or [proc.stderr[-4000:]])
    if any(rc != 0 for rc, _, _ in cu_objects.values()):
        pytest.fail("the .cu files did not compile (see test_cu_files_compile_with_nvcc)")
    needed = _defined_symbols([obj], "U")
    defined = _defined_symbols([o for _, _, o in cu_objects.values()], "T")
    assert needed, "the glue calls no sparse_engine::cuda launcher?"
    assert needed <= defined, f"launchers called by ops_cuda.cpp but not defined: {sorted(needed - defined)}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
