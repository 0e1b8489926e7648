"""Builds sparse_engine._C from csrc/: the CPU (OpenMP) kernels always, the CUDA kernels
when a CUDA-enabled torch and nvcc are present.

Environment switches:
  SPARSE_ENGINE_CUDA=0|1   force the CUDA kernels off / on (default: auto-detect)
  SPARSE_ENGINE_NATIVE=0   build for a generic x86-64 instead of -march=native
  SPARSE_ENGINE_SANITIZE=address
                           the CPU kernels with AddressSanitizer + UndefinedBehaviorSanitizer (-O1 -g,
                           every finding fatal), for `make asan`, which builds them into build/asan
                           (the normal extension is left as it is) and runs the kernel tests under it
"""
import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import setup
from torch.utils import cpp_extension


def want_cuda() -> bool:
    flag = os.environ.get("SPARSE_ENGINE_CUDA")
    if flag is not None:
        return flag == "1"
    import torch

    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def linker_cxx() -> str:
    """The C++ compiler setuptools links the module with: $CXX, else Python's own."""
    return os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++"


def carries_its_own_libstdcxx(cxx: str, link: list) -> bool:
    """Links a one-line shared library with ``cxx`` and the module's link flags: True when it holds
    libstdc++'s stream code itself (a static copy). Beside the copy torch loads, such a module's
    streams break: on the GPU image (whose /opt/gcc/bin/g++ links libstdc++ statically even past
    -lstdc++) the first error message that formats a number crashed the process. False when the
    probe cannot tell (no compiler or nm: the real build then says what is wrong)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = os.path.join(tmp, "probe.cpp"), os.path.join(tmp, "probe.so")
        with open(src, "w") as f:
            f.write('#include <sstream>\nstd::string probe(long v) { std::ostringstream s; s << v; return s.str(); }\n')
        try:
            subprocess.run([*shlex.split(cxx), "-shared", "-fPIC", src, "-o", lib, *link],
                           check=True, capture_output=True, timeout=120)
            symbols = subprocess.run(["nm", "--defined-only", lib], check=True, capture_output=True,
                                     text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return False
    return "_ZNSo9_M_insertIlEERSoT_" in symbols  # std::ostream::_M_insert<long>


def choose_linker(link: list) -> None:
    """Keeps the module on the shared libstdc++: when the linking compiler would put a static copy
    in, build with the first g++/c++ on this machine that does not (CXX set for this build, and
    said), or stop with what to set."""
    cxx = linker_cxx()
    if not carries_its_own_libstdcxx(cxx, link):
        return
    for other in ("/usr/bin/g++", "g++", "c++", "clang++"):
        path = shutil.which(other)
        if path and path != shutil.which(shlex.split(cxx)[0]) and not carries_its_own_libstdcxx(path, link):
            print(f"setup.py: {cxx} links libstdc++ into the module statically (a second copy beside "
                  f"torch's breaks C++ streams); building with {path} instead (set CXX to choose)", file=sys.stderr)
            os.environ["CXX"] = path  # torch's ninja build compiles and setuptools links with it
            return
    raise SystemExit(f"setup.py: the C++ compiler {cxx} links libstdc++ into the module statically, which "
                     "breaks its C++ streams beside torch's libstdc++; set CXX to a g++ that links "
                     "the shared libstdc++.so")


def extension():
    sources = ["csrc/ops.cpp", "csrc/autograd.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-fopenmp"]
    if os.environ.get("SPARSE_ENGINE_NATIVE", "1") == "1":
        cxx.append("-march=native")
    link = ["-fopenmp"]
    if sys.platform.startswith("linux"):
        # libstdc++ as the shared library torch loads, also where the compiler links it statically
        # (-static-libstdc++; the GPU image's /opt/gcc/bin/g++ does): a second, static copy in the module
        # breaks its C++ streams, so an error message lost its numbers (a -static-libstdc++ build here)
        # or the process crashed at the first one (that compiler's build, on the H200). Named before
        # the compiler's own -lstdc++, this one is linked by a plain -static-libstdc++; the GPU image's
        # compiler put its static copy in even so (the second H200 run), so choose_linker probes.
        link.append("-lstdc++")
        choose_linker(link)
    sanitize = os.environ.get("SPARSE_ENGINE_SANITIZE", "")
    if sanitize == "address":
        flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
        cxx = ["-O1", "-g", "-fno-wrapv"] + flags + cxx[1:]  # -fno-wrapv: Python's -fwrapv hides signed overflow
        link += flags
    elif sanitize:
        raise SystemExit(f"SPARSE_ENGINE_SANITIZE must be 'address' (or unset), got {sanitize!r}")
    kwargs = dict(extra_compile_args={"cxx": cxx}, extra_link_args=link)
    if want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-lineinfo"]
        kwargs["define_macros"] = [("SPARSE_ENGINE_WITH_CUDA", "1")]
        return cpp_extension.CUDAExtension("sparse_engine._C", sources, **kwargs)
    return cpp_extension.CppExtension("sparse_engine._C", sources, **kwargs)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
