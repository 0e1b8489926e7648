"""Kernels written with torch primitives for ops whose C++ twins are in ``csrc/``; today the
CUDA topology kernels (:mod:`.topology_cuda`, the twins of ``csrc/cpu/topology_cpu.cpp``).

They are registered with the dispatcher by :mod:`sparse_engine.library`, like every other
Python part of ``torch.ops.sparse_engine``.
"""
