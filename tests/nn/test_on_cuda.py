"""The modules on CUDA (marked ``cuda``; skipped without a CUDA device or the CUDA kernels):
SparseLinear against the same layer on the CPU. (The recurrent modules on CUDA, through the fused
step: tests/ops/test_rnn_step.py.)"""
from __future__ import annotations

import pytest
import torch

from sparse_engine.kernels import HAS_CUDA_KERNELS

DEV = "cuda"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"),
    pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="sparse_engine._C was built without the CUDA kernels "
                       "(build with a CUDA torch and nvcc, or SPARSE_ENGINE_CUDA=1)"),
]


def test_sparse_linear_on_cuda_matches_cpu():
    from sparse_engine.nn import SparseLinear

    torch.manual_seed(0)
    cpu = SparseLinear(40, 30, density=0.2)
    gpu = SparseLinear(40, 30, density=0.2)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(DEV)
    x = torch.randn(7, 40, generator=torch.Generator().manual_seed(1))
    y_cpu, y_gpu = cpu(x), gpu(x.to(DEV))
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-5, atol=1e-5)
    y_cpu.square().sum().backward()
    y_gpu.square().sum().backward()
    torch.testing.assert_close(gpu.weight.values.grad.cpu(), cpu.weight.values.grad, rtol=1e-4, atol=1e-5)
