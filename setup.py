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
import sys

from setuptools import setup
from torch.utils import cpp_extension


def want_cuda() -> bool:
    flag = os.environ.get("SPARSE_ENGINE_CUDA")
    if flag is not None:
        return flag == "1"
    import torch

    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


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
        # the compiler's own -lstdc++, this one is the one linked.
        link.append("-lstdc++")
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
