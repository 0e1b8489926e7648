"""Builds sparse_engine._C from csrc/: the CPU (OpenMP) kernels always, the CUDA kernels
when a CUDA-enabled torch and nvcc are present.

Environment switches:
  SPARSE_ENGINE_CUDA=0|1   force the CUDA kernels off / on (default: auto-detect)
  SPARSE_ENGINE_NATIVE=0   build for a generic x86-64 instead of -march=native
"""
import glob
import os

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
    kwargs = dict(extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
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
