"""The CUDA sources keep compiling on machines without a GPU.

Each csrc/cuda/<family>_cuda.cu is compiled on its own with the machine's nvcc (the kernels take
plain pointers, so no torch headers are needed), each launcher header (csrc/cuda/*launchers.h)
compiles alone without torch, and every torch glue file (csrc/cuda/<family>_glue.cpp) is
compiled with the host compiler against torch's c10/cuda headers. Running the kernels is
tests/test_cuda_ops.py's and tests/test_cuda_rnn.py's job and needs a GPU.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from _build_util import host_cxx, run_all

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
GLUE_FILES = sorted(CUDA_DIR.glob("*.cpp"))  # torch glue: one per family of operators
LAUNCHER_HEADERS = sorted(CUDA_DIR.glob("*launchers.h"))
ARCH = os.environ.get("SPARSE_ENGINE_TEST_ARCH", "sm_90")  # the H100's; one arch keeps CI fast
# The flags torch's BuildExtension gives every .cu (setup.py), among them -D__CUDA_NO_HALF_OPERATORS__
# and -D__CUDA_NO_HALF_CONVERSIONS__: half/bf16 code that leans on implicit conversions compiles
# alone but not in the extension, so the kernels are checked under the same flags.
NVCC_FLAGS = list(cpp_extension.COMMON_NVCC_FLAGS)


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


FAMILIES = ("spmm", "sddmm", "transpose", "rnn_step")  # the op families with CUDA kernels (csrc/ops.cpp)


def test_there_are_cuda_sources():
    """One kernel file and one glue file per op family, mirroring csrc/cpu/<family>_cpu.cpp, and
    no two sources that setuptools would compile to the same object file."""
    assert {p.name for p in CU_FILES} == {f"{family}_cuda.cu" for family in FAMILIES}
    assert {p.name for p in GLUE_FILES} == {f"{family}_glue.cpp" for family in FAMILIES}
    assert {f"{family}_cpu.cpp" for family in FAMILIES} <= {p.name for p in (ROOT / "csrc" / "cpu").glob("*.cpp")}
    assert not {p.stem for p in CU_FILES} & {p.stem for p in GLUE_FILES}
    assert "launchers.h" in {p.name for p in LAUNCHER_HEADERS}


@pytest.fixture(scope="module")
def cu_objects(tmp_path_factory) -> dict:
    """{source: (returncode, output, object path)} for every .cu, compiled in parallel."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, /usr/local/cuda): cannot compile the CUDA kernels")
    out = tmp_path_factory.mktemp("cu_objects")
    obj = {src: out / (src.stem + ".o") for src in CU_FILES}
    results = run_all({src: [nvcc, "-std=c++17", "-O3", *NVCC_FLAGS, f"-arch={ARCH}", "-c", "-o", str(obj[src]),
                             str(src)] for src in CU_FILES})
    return {src: (rc, text, obj[src]) for src, (rc, text) in results.items()}


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


@pytest.mark.parametrize("header", LAUNCHER_HEADERS, ids=lambda p: p.name)
def test_launcher_headers_stand_alone(header, tmp_path):
    """A launcher header needs only the CUDA runtime API: no torch, no device code, so the
    glue (host compiler) and the kernels (nvcc) can both include it; some glue file does."""
    home, cxx = _cuda_home(), host_cxx()
    if home is None or cxx is None:
        pytest.skip("needs a CUDA toolkit's headers (cuda_runtime_api.h) and a host C++ compiler")
    tu = tmp_path / "tu.cpp"
    tu.write_text(f'#include "{header.name}"\n#include "{header.name}"\nint main() {{ return 0; }}\n')  # twice: #pragma once
    proc = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", f"-I{CUDA_DIR}", f"-I{home / 'include'}", str(tu)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not re.search(r"#include\s*[<\"](torch|ATen|c10)/", header.read_text()), "launcher headers must not need torch"
    users = [g.name for g in GLUE_FILES if f'"{header.name}"' in g.read_text()]
    assert users, f"no glue file includes {header.name}"


@pytest.fixture(scope="module")
def glue_objects(tmp_path_factory) -> dict:
    """{glue source: (returncode, stderr, object path)}: every csrc/cuda/*.cpp compiled against the
    installed torch's headers (a CPU-only torch wheel still ships c10/cuda headers;
    cuda_runtime_api.h comes from the CUDA toolkit), in parallel."""
    torch = pytest.importorskip("torch")
    from torch.utils.cpp_extension import include_paths

    home, cxx = _cuda_home(), host_cxx()
    if home is None or cxx is None:
        pytest.skip("needs a CUDA toolkit's headers (cuda_runtime_api.h) and a host C++ compiler")
    incs = include_paths()
    if not any((Path(p) / "c10" / "cuda" / "CUDAGuard.h").exists() for p in incs):
        pytest.skip(f"torch {torch.__version__} ships no c10/cuda headers")
    out = tmp_path_factory.mktemp("glue_objects")
    obj = {src: out / (src.stem + ".o") for src in GLUE_FILES}
    flags = ["-std=c++17", "-O0", "-fPIC", "-c", "-DSPARSE_ENGINE_WITH_CUDA=1",
             # the CMake-generated c10/cuda/impl/cuda_cmake_macros.h exists only in CUDA wheels;
             # it sets Windows export macros, which this check does not need
             "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"]
    flags += [f"-I{p}" for p in incs] + [f"-I{sysconfig.get_paths()['include']}", f"-I{home / 'include'}"]
    results = run_all({src: [cxx, *flags, "-o", str(obj[src]), str(src)] for src in GLUE_FILES})
    return {src: (rc, text, obj[src]) for src, (rc, text) in results.items()}


@pytest.mark.parametrize("glue", GLUE_FILES, ids=lambda p: p.name)
def test_torch_glue_compiles_and_calls_the_kernels(glue, glue_objects, cu_objects):
    """Each glue file compiles, and every launcher it calls is defined, with the same
    signature, by the nvcc-compiled kernels."""
    rc, err, obj = glue_objects[glue]
    errors = [line for line in err.splitlines() if "error" in line]
    assert rc == 0, f"{glue.name}:\n" + "\n".join(errors[:40] or [err[-4000:]])
    if any(code != 0 for code, _, _ in cu_objects.values()):
        pytest.fail("the .cu files did not compile (see test_cu_files_compile_with_nvcc)")
    needed = _defined_symbols([obj], "U")
    defined = _defined_symbols([o for _, _, o in cu_objects.values()], "T")
    assert needed, f"{glue.name} calls no sparse_engine::cuda launcher?"
    assert needed <= defined, f"launchers called by {glue.name} but not defined: {sorted(needed - defined)}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
