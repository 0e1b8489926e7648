"""The CPU sources also compile where setup.py's defaults don't hold: as C++17 (some torch
versions build extensions as C++17, this one as C++20) and without -march=native
(SPARSE_ENGINE_NATIVE=0, or a CPU without AVX2/F16C), which compiles the portable branches
(the scalar float16 conversion, the scalar exp/tanh) that a -march=native build skips. The built
module links the shared libstdc++ that torch loads, whatever the compiler's default. (The
sources' shape, one schema file and kernels per op family, is tests/ops/test_registry.py's. The
compilers come from the fixtures host_cxx and run_all of tests/kernels/conftest.py.)"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

import sparse_engine  # noqa: F401  (loads sparse_engine._C)

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "csrc" / "ops.cpp", ROOT / "csrc" / "autograd.cpp", *sorted((ROOT / "csrc" / "cpu").glob("*.cpp"))]
# The schemas and the op families the half-precision probe below calls: spmm, sddmm, transpose_index.
PROBE_SOURCES = [ROOT / "csrc" / "ops.cpp", *(ROOT / "csrc" / "cpu" / f"{family}_cpu.cpp"
                                              for family in ("spmm", "sddmm", "transpose"))]


def test_cpu_sources_compile_as_cxx17_without_march_native(host_cxx, run_all):
    cxx = host_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler")
    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    results = run_all({src: [cxx, "-std=c++17", "-O0", "-fopenmp", "-fsyntax-only", *includes, str(src)]
                       for src in SOURCES})
    failures = [f"{src.name}:\n{out[-3000:]}" for src, (rc, out) in results.items() if rc]
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not (shutil.which("readelf") and shutil.which("nm")),
                    reason="needs Linux and binutils (readelf, nm)")
def test_module_links_the_shared_libstdcxx():
    """sparse_engine._C needs libstdc++.so and holds no copy of its own (setup.py's -lstdc++): with a
    static copy (a -static-libstdc++ build, the GPU image's /opt/gcc/bin/g++) the module's streams
    break, and an error message loses its numbers (here) or the process crashes (on the H200)."""
    so = sparse_engine._C.__file__
    needed = subprocess.run(["readelf", "-d", so], capture_output=True, text=True, check=True).stdout
    assert "libstdc++.so" in needed, f"{so} does not link the shared libstdc++:\n{needed}"
    defined = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True, check=True).stdout
    own = [line for line in defined.splitlines() if "_ZNSo9_M_insert" in line or "codecvt" in line]
    assert not own, f"{so} defines libstdc++'s stream functions itself: {own[:3]}"
    rp, ci = torch.tensor([0, 2, 3]), torch.tensor([0, 5, 1], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"col_idx entry 5 \(position 1\) out of range \[0, 5\)"):
        torch.ops.sparse_engine.transpose_index(rp, ci, 5)



def _setup_functions() -> dict:
    """setup.py's functions, without running its setup() call."""
    source = (ROOT / "setup.py").read_text().split("\nsetup(\n")[0]
    names: dict = {"__file__": str(ROOT / "setup.py")}
    exec(compile(source, "setup.py", "exec"), names)
    return names


@pytest.mark.skipif(not sys.platform.startswith("linux") or not (shutil.which("g++") and shutil.which("nm")),
                    reason="needs Linux, g++ and nm")
def test_setup_builds_past_a_compiler_that_links_libstdcxx_statically(tmp_path, monkeypatch):
    """The GPU image's /opt/gcc/bin/g++ put a static libstdc++ into the module even past -lstdc++
    (the second H200 run crashed at the first error message again). A wrapper that does the same
    here: setup.py's probe must see it and build with a g++ that links the shared library."""
    wrapper = tmp_path / "g++"
    wrapper.write_text("#!/bin/bash\nargs=(); for a in \"$@\"; do [[ $a == -lstdc++ ]] && a=-l:libstdc++.a; "
                       f"args+=(\"$a\"); done\nexec {shutil.which('g++')} -static-libstdc++ \"${{args[@]}}\"\n")
    wrapper.chmod(0o755)
    setup = _setup_functions()
    link = ["-fopenmp", "-lstdc++"]
    assert setup["carries_its_own_libstdcxx"](str(wrapper), link)
    assert not setup["carries_its_own_libstdcxx"](shutil.which("g++"), link)
    monkeypatch.setenv("CXX", str(wrapper))
    setup["choose_linker"](link)
    chosen = setup["linker_cxx"]()
    assert chosen != str(wrapper) and not setup["carries_its_own_libstdcxx"](chosen, link)
    monkeypatch.setenv("CXX", shutil.which("g++"))
    setup["choose_linker"](link)  # a compiler that links the shared library is kept
    assert setup["linker_cxx"]() == shutil.which("g++")

_PROBE = r"""
import sys, torch
torch.ops.load_library(sys.argv[1])
ops = torch.ops.sparse_engine
bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)  # every 16-bit pattern
for dtype in (torch.float16, torch.bfloat16):
    X = bits.view(dtype).reshape(2048, 32)            # feature-major: 2048 features x 32 batch
    n = X.shape[0]
    rp = torch.arange(n + 1, dtype=torch.int64)        # W = I (one 1.0 per row)
    ci = torch.arange(n, dtype=torch.int32)
    cp, cr, pm = ops.transpose_index(rp, ci, n)
    Y = ops.spmm(rp, ci, cp, cr, pm, torch.ones(n, dtype=dtype), X)
    exact = Y.view(torch.int16) == X.view(torch.int16)
    same = torch.where(X == 0, Y == 0, exact) | (Y.isnan() & X.isnan())  # -0 sums to +0, as in any kernel
    assert bool(same.all()), (dtype, int((~same).sum()))
    G = torch.ones(n, 32, dtype=dtype)                 # sddmm(I, 1, X)[k] = sum_b X[k, b]: float32 sums
    want = X.float().sum(1).to(dtype)
    got = ops.sddmm(rp, ci, cp, cr, pm, G, X)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~got.isnan()], want[~want.isnan()]), dtype
print("OK")
"""


@pytest.mark.slow
def test_portable_half_conversion_is_exact(tmp_path, host_cxx):
    """The scalar float16/bfloat16 widening (no F16C/AVX-512, e.g. aarch64) against every 16-bit
    pattern: spmm with W = I must return X bit for bit (NaNs stay NaN, -0 becomes +0), sddmm must
    match torch's float32 sums."""
    cxx = host_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler")
    lib = tmp_path / "portable_ops.so"
    torch_lib = Path(cpp_extension.TORCH_LIB_PATH)
    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-fPIC", "-shared", "-fopenmp", *includes,
                            *map(str, PROBE_SOURCES),
                            f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch", "-ltorch_cpu",
                            "-o", str(lib)], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    import sys
    run = subprocess.run([sys.executable, "-c", _PROBE, str(lib)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "OK", run.stdout + run.stderr[-3000:]
