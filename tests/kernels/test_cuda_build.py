"""The CUDA sources keep compiling on machines without a GPU, within a GPU's resources.

Each csrc/cuda/<family>_cuda.cu is compiled on its own with the machine's nvcc for sm_80 and sm_90
(the kernels take plain pointers, so no torch headers are needed), each launcher header
(csrc/cuda/*launchers.h) compiles alone without torch, and every torch glue file
(csrc/cuda/<family>_glue.cpp) is compiled with the host compiler against torch's c10/cuda headers.
ptxas's resource report of every kernel instantiation, for both architectures, must show no register
spills and a register and shared-memory use that keeps at least a quarter of an SM's threads
resident at the block size the kernel declares in its __launch_bounds__ (which the emulator checks
every launch against). Running the kernels is the job of tests/ops/test_<family>.py, on the CPU
emulator and on a GPU, and of tests/kernels/test_cuda_limits.py on a GPU. The compilers come from
the fixtures host_cxx, cuda_home and run_all of tests/kernels/conftest.py.
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

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
GLUE_FILES = sorted(CUDA_DIR.glob("*.cpp"))  # torch glue: one per family of operators
LAUNCHER_HEADERS = sorted(CUDA_DIR.glob("*launchers.h"))
# A100's and H100's; the resource check reads ptxas's report for each
ARCHS = os.environ.get("SPARSE_ENGINE_TEST_ARCHS", "sm_80,sm_90").split(",")
# The flags torch's BuildExtension gives every .cu (setup.py), among them -D__CUDA_NO_HALF_OPERATORS__
# and -D__CUDA_NO_HALF_CONVERSIONS__: half/bf16 code that leans on implicit conversions compiles
# alone but not in the extension, so the kernels are checked under the same flags.
NVCC_FLAGS = list(cpp_extension.COMMON_NVCC_FLAGS)


def _nvcc(cuda_home) -> str | None:
    home = cuda_home()
    if shutil.which("nvcc"):
        return shutil.which("nvcc")
    if home and (home / "bin" / "nvcc").exists():
        return str(home / "bin" / "nvcc")
    return None


FAMILIES = ("spmm", "sddmm", "transpose", "rnn_step", "rnn_sequence")  # the op families with CUDA kernels (csrc/ops.cpp)


def test_there_are_cuda_sources():
    """One kernel file and one glue file per op family, mirroring csrc/cpu/<family>_cpu.cpp, and
    no two sources that setuptools would compile to the same object file."""
    assert {p.name for p in CU_FILES} == {f"{family}_cuda.cu" for family in FAMILIES}
    assert {p.name for p in GLUE_FILES} == {f"{family}_glue.cpp" for family in FAMILIES}
    assert {f"{family}_cpu.cpp" for family in FAMILIES} <= {p.name for p in (ROOT / "csrc" / "cpu").glob("*.cpp")}
    assert not {p.stem for p in CU_FILES} & {p.stem for p in GLUE_FILES}
    assert "launchers.h" in {p.name for p in LAUNCHER_HEADERS}


@pytest.fixture(scope="module")
def cu_objects(tmp_path_factory, cuda_home, run_all) -> dict:
    """{source: (returncode, output with ptxas's resource report, object path)} for every .cu, compiled
    in parallel for every arch of ARCHS; the PTX of each arch stays in <out>/keep/<stem>/."""
    nvcc = _nvcc(cuda_home)
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, /usr/local/cuda): cannot compile the CUDA kernels")
    out = tmp_path_factory.mktemp("cu_objects")
    obj = {src: out / (src.stem + ".o") for src in CU_FILES}
    gencode = [f"-gencode=arch=compute_{a.removeprefix('sm_')},code={a}" for a in ARCHS]
    commands = {}
    for src in CU_FILES:
        keep = out / "keep" / src.stem
        keep.mkdir(parents=True)
        commands[src] = [nvcc, "-std=c++17", "-O3", *NVCC_FLAGS, *gencode, "-Xptxas", "-v", "--keep", "--keep-dir",
                         str(keep), "-c", "-o", str(obj[src]), str(src)]
    results = run_all(commands, timeout=1800)
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
def test_launcher_headers_stand_alone(header, tmp_path, cuda_home, host_cxx):
    """A launcher header needs only the CUDA runtime API: no torch, no device code, so the
    glue (host compiler) and the kernels (nvcc) can both include it; some glue file does."""
    home, cxx = cuda_home(), host_cxx()
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
def glue_objects(tmp_path_factory, cuda_home, host_cxx, run_all) -> dict:
    """{glue source: (returncode, stderr, object path)}: every csrc/cuda/*.cpp compiled against the
    installed torch's headers (a CPU-only torch wheel still ships c10/cuda headers;
    cuda_runtime_api.h comes from the CUDA toolkit), in parallel."""
    torch = pytest.importorskip("torch")
    from torch.utils.cpp_extension import include_paths

    home, cxx = cuda_home(), host_cxx()
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


# ------------------------------------------------------------------ registers, spills, occupancy
# Per SM on sm_80 and sm_90: 64 warps, 32 blocks, 65,536 registers in four quarters of 16,384 (a warp's
# registers come from one quarter, in units of 256), and the shared memory a kernel may use.
SM = {"sm_80": dict(smem=164 * 1024), "sm_90": dict(smem=228 * 1024)}
MIN_OCCUPANCY = 0.25  # a quarter of the SM's 64 warps resident
ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def ptxas_report(text: str) -> dict:
    """{(arch, mangled kernel): {"regs", "spill_stores", "spill_loads", "smem"}} from nvcc -Xptxas -v."""
    report, key, props = {}, None, None
    for line in text.splitlines():
        if m := ENTRY.search(line):
            key = (m[2], m[1])
            report[key] = {}
        elif m := re.search(r"Function properties for (\w+)", line):
            props = m[1]
        elif key and props == key[1] and (m := SPILLS.search(line)):
            report[key].update(spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif key and (m := USED.search(line)):
            report[key].update(regs=int(m[1]), smem=int(m[2] or 0))
    return report


def launch_bounds(ptx: str) -> dict:
    """{mangled kernel: threads per block of its __launch_bounds__ (PTX .maxntid)}."""
    bounds = {}
    for m in re.finditer(r"\.entry (\w+)\((?:.|\n)*?\)\s*((?:\.\w+[^\n{]*\n\s*)*)\{", ptx):
        nt = re.search(r"\.maxntid (\d+), (\d+), (\d+)", m[2])
        bounds[m[1]] = int(nt[1]) * int(nt[2]) * int(nt[3]) if nt else None
    return bounds


def occupancy(arch: str, regs: int, threads: int, smem: int) -> float:
    """Resident warps / 64 for blocks of `threads` threads using `regs` registers per thread and `smem`
    bytes of static shared memory (1 KB more per block reserved by the driver)."""
    warps = -(-threads // 32)
    per_warp = -(-regs * 32 // 256) * 256
    blocks = min(32, 64 // warps, 4 * (16384 // per_warp) // warps)
    if smem:
        blocks = min(blocks, SM[arch]["smem"] // (smem + 1024))
    return blocks * warps / 64


def test_occupancy_model():
    """The model reproduces what ptxas does under __launch_bounds__(T, kMinBlocks<T>): 128 registers give
    two blocks of 256 threads (25%), 96 three blocks of 192 (28%), 112 only two of 192 (19%)."""
    assert occupancy("sm_90", 128, 256, 0) == 0.25 and occupancy("sm_90", 136, 256, 0) == 0.125
    assert occupancy("sm_90", 96, 192, 0) == 18 / 64 and occupancy("sm_90", 112, 192, 0) == 12 / 64
    assert occupancy("sm_80", 32, 256, 0) == 1.0 and occupancy("sm_80", 32, 256, 80 * 1024) == 0.25


def test_kernels_neither_spill_nor_fall_below_a_quarter_occupancy(cu_objects):
    """Every instantiation of our kernels (cub's excluded) for sm_80 and sm_90: no spill stores or
    loads, a declared __launch_bounds__, and registers and shared memory that leave at least a quarter
    of the SM's warps resident at that block size."""
    if any(code != 0 for code, _, _ in cu_objects.values()):
        pytest.fail("the .cu files did not compile (see test_cu_files_compile_with_nvcc)")
    checked, problems = 0, []
    for src, (_, text, obj) in cu_objects.items():
        report = ptxas_report(text)
        bounds = {arch: launch_bounds((obj.parent / "keep" / src.stem / f"{src.stem}.compute_{arch[3:]}.ptx").read_text())
                  for arch in ARCHS}
        for (arch, kernel), r in report.items():
            if "13sparse_engine" not in kernel:
                continue
            checked += 1
            threads = bounds[arch].get(kernel)
            name = f"{src.name} {arch} {kernel}"
            if r["spill_stores"] or r["spill_loads"]:
                problems.append(f"{name}: {r['spill_stores']} bytes of spill stores, {r['spill_loads']} of loads")
            if threads is None:
                problems.append(f"{name}: no __launch_bounds__")
            elif (occ := occupancy(arch, r["regs"], threads, r["smem"])) < MIN_OCCUPANCY:
                problems.append(f"{name}: {r['regs']} registers, {r['smem']} bytes smem at {threads} threads: "
                                f"{occ:.1%} occupancy")
    assert checked >= 100 * len(ARCHS), f"only {checked} kernels in ptxas's report"
    assert not problems, "\n".join(problems)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
