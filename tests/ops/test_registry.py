"""Every operator can be found by name in one hop (docs/architecture.md): its schema in
csrc/ops.cpp under its family, its CPU kernel in csrc/cpu/<family>_cpu.cpp, its CUDA kernel in
csrc/cuda/<family>_cuda.cu (+ <family>_glue.cpp) or, for the topology family and the densify
family's scatter_csr/gather_csr, the Python function <op>_torch of
sparse_engine.kernels.<family>_torch, its fake kernel in sparse_engine/kernels/library.py, whose
table lists what each op has, and its autograd formula (spmm, spmm_t and sddmm) in
csrc/autograd.cpp; and its tests are in tests/ops/test_<family>.py (every device and dtype,
the emulated CUDA kernels included)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch._library import simple_registry

import sparse_engine  # noqa: F401  (loads the library)
from sparse_engine.kernels import densify_torch, has_kernel, library, topology_torch

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
OPS_CPP = (CSRC / "ops.cpp").read_text()
# CUDA kernels written with torch primitives, in sparse_engine/kernels/<family>_torch.py, for every op
# of the family but those that are CPU only (the pattern as bits: on CUDA the dense path uses the CSR)
PYTHON_CUDA = {"topology": topology_torch, "densify": densify_torch}
CPU_ONLY_OPS = {"pattern_bits", "expand_bits", "compress_bits", "same_bytes"}
CPU_ONLY = {"dense_rnn", "analysis", "mlp"}
PYTHON_CUDA_OPS = {op for module in PYTHON_CUDA.values() for op in module.OPS}


def schemas_by_family() -> dict[str, list[str]]:
    """{family: [op, ...]} from the section comments (`// ---- family`) of csrc/ops.cpp."""
    body = OPS_CPP[OPS_CPP.index("TORCH_LIBRARY(sparse_engine"):]
    families, family = {}, None
    for line in body.splitlines():
        head = re.match(r"\s*// -+ (\w+)\s*$", line)
        if head:
            family = head.group(1)
            families[family] = []
        for op in re.findall(r'm\.def\("(\w+)\(', line):
            assert family is not None, f"{op} is defined before any family section"
            families[family].append(op)
    return families


FAMILIES = schemas_by_family()
OPS = [op for ops in FAMILIES.values() for op in ops]
FAMILY_OF = {op: fam for fam, ops in FAMILIES.items() for op in ops}


def library_table() -> dict[str, set[str]]:
    """{op: {"fake", "autograd", "autocast", "CUDA kernel"}} from library.py's docstring table."""
    rows = {}
    for line in library.__doc__.splitlines():
        m = re.match(r"(\w+)\s{2,}(.*)$", line)
        if m and m.group(1) in FAMILY_OF:
            rows[m.group(1)] = {w.strip() for w in m.group(2).split(",") if w.strip()}
    return rows


def test_every_schema_is_defined_once_in_ops_cpp():
    """One TORCH_LIBRARY with every schema; the kernel and glue files only register
    implementations (TORCH_LIBRARY_IMPL), each of an operator ops.cpp defines."""
    assert len(OPS) == len(set(OPS)) == len(re.findall(r'm\.def\("', OPS_CPP))
    implemented = set()
    for path in CSRC.rglob("*"):
        if path.suffix not in {".cpp", ".cu", ".h", ".cuh"}:
            continue
        text = path.read_text()
        assert "TORCH_LIBRARY_FRAGMENT" not in text, path
        if path.name != "ops.cpp":
            assert not re.search(r"\bTORCH_LIBRARY\s*\(", text) and "m.def(" not in text, path
        implemented |= set(re.findall(r'm\.impl\("(\w+)"', text))
    assert implemented == set(OPS), sorted(implemented ^ set(OPS))


def test_the_loaded_library_is_exactly_the_schemas():
    loaded = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("sparse_engine::")}
    assert loaded == set(OPS), sorted(loaded ^ set(OPS))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_files_mirror_each_other(family):
    """cpu/<family>_cpu.cpp registers the family's CPU kernels; the CUDA kernels are
    cuda/<family>_cuda.cu + <family>_glue.cpp, or Python <op>_torch functions of
    sparse_engine/kernels/<family>_torch.py, or none (CPU only); the family's tests are
    tests/ops/test_<family>.py."""
    assert (ROOT / "tests" / "ops" / f"test_{family}.py").is_file(), f"no tests/ops/test_{family}.py"
    cpu = CSRC / "cpu" / f"{family}_cpu.cpp"
    assert cpu.is_file(), cpu
    assert "TORCH_LIBRARY_IMPL(sparse_engine, CPU" in cpu.read_text() or "register_" in cpu.read_text()
    for op in FAMILIES[family]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_engine::{op}", "CPU"), op
    cu, glue = CSRC / "cuda" / f"{family}_cuda.cu", CSRC / "cuda" / f"{family}_glue.cpp"
    if family in PYTHON_CUDA:
        assert not cu.exists() and not glue.exists()
        module = PYTHON_CUDA[family]
        assert Path(module.__file__).name == f"{family}_torch.py"
        assert set(module.OPS) == set(FAMILIES[family]) - CPU_ONLY_OPS
        for op in module.OPS:
            assert module.OPS[op] is getattr(module, f"{op}_torch"), op
    elif family in CPU_ONLY:
        assert not cu.exists() and not glue.exists()
    else:
        assert cu.is_file() and glue.is_file(), (cu, glue)
        assert "CUDA" in glue.read_text()
    cpu_files = {p.stem.removesuffix("_cpu") for p in (CSRC / "cpu").glob("*_cpu.cpp")}
    cuda_files = {p.stem.removesuffix("_cuda") for p in (CSRC / "cuda").glob("*_cuda.cu")}
    assert cpu_files == set(FAMILIES) and cuda_files == set(FAMILIES) - set(PYTHON_CUDA) - CPU_ONLY


@pytest.mark.parametrize("op", OPS)
def test_kernels_are_named_after_their_op(op):
    """m.impl("<op>", &<op>_cpu) in the family's CPU file and &<op>_cuda in its CUDA glue; the
    recurrent steps are written once over a device (csrc/rnn_step_ops.h: RnnStepOps<Device>::<op>)
    and registered for each device by register_rnn_step_ops."""
    family = FAMILY_OF[op]
    cpu = (CSRC / "cpu" / f"{family}_cpu.cpp").read_text()
    glue = CSRC / "cuda" / f"{family}_glue.cpp"
    if family == "rnn_step":
        assert f'm.impl("{op}", &Ops::{op});' in (CSRC / "rnn_step_ops.h").read_text()
        assert "register_rnn_step_ops<" in cpu and "register_rnn_step_ops<" in glue.read_text()
        return
    assert f'm.impl("{op}", &{op}_cpu);' in cpu
    if glue.exists():
        assert f'm.impl("{op}", &{op}_cuda);' in glue.read_text()


def test_library_table_lists_what_is_registered():
    """library.py's table names every op once and says truthfully which have a fake kernel,
    an autograd formula, an autocast rule and a Python CUDA kernel; every fake comes from
    library.py (no second place registers one)."""
    table = library_table()
    assert set(table) == set(OPS), sorted(set(table) ^ set(OPS))
    for op in OPS:
        entry = simple_registry.singleton.find(f"sparse_engine::{op}")
        fake = entry.fake_impl.kernel
        assert ("fake" in table[op]) == (fake is not None), op
        if fake is not None:
            assert Path(fake.source.rsplit(":", 1)[0]).resolve() == Path(library.__file__).resolve(), (op, fake.source)
        autocast = torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_engine::{op}", "AutocastCPU")
        assert ("autocast" in table[op]) == autocast, op
        assert ("CUDA kernel" in table[op]) == (op in PYTHON_CUDA_OPS), op
    differentiable = {op for op in OPS if "autograd" in table[op]}
    assert differentiable == {"spmm", "spmm_t", "sddmm"}
    for op in OPS:
        has_autograd = torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_engine::{op}", "Autograd")
        assert has_autograd == (op in differentiable), op


def test_family_sections_of_library_follow_ops_cpp():
    """library.py's sections come in the order of ops.cpp's families."""
    src = Path(library.__file__).read_text()
    positions = [src.find(f"[{family}]") for family in FAMILIES]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), dict(zip(FAMILIES, positions))


# ------------------------------- the Python kernels (kernels/topology_torch.py, densify_torch.py)
def test_registered_as_the_kernels_of_every_device_but_the_cpu():
    """The Python kernels are the operators' CUDA kernels on any torch and, under
    CompositeExplicitAutograd, the one fallback of every other device without a kernel of its own
    (the CPU keeps its C++ kernels), so the operator is the only way to call them."""
    for name, fn in {**topology_torch.OPS, **densify_torch.OPS}.items():
        assert has_kernel(name, "cuda") and has_kernel(name, "cpu"), name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_engine::{name}", "CompositeExplicitAutograd")
        assert fn.__name__ == f"{name}_torch"  # the twin of <op>_cpu in csrc/cpu/<family>_cpu.cpp
    assert set(topology_torch.OPS) == {"select_smallest", "set_prune", "compact", "random_empty", "merge",
                                      "remap_index", "gather_or_zero", "coo_dot", "grad_topk", "rewire"}
    assert set(densify_torch.OPS) == {"scatter_csr", "gather_csr"}
    assert not torch._C._dispatch_has_kernel_for_dispatch_key("sparse_engine::spmm", "CompositeExplicitAutograd")
    # a device without a kernel of its own (meta; remap_index has no fake kernel) runs the Python one
    e = torch.empty(0, dtype=torch.int64, device="meta")
    out = torch.ops.sparse_engine.remap_index(e, e, 5)
    assert out.device.type == "meta" and out.shape == (5,) and out.dtype == torch.int64
    with pytest.raises(TypeError, match="int64"):  # with its checks
        torch.ops.sparse_engine.remap_index(e, torch.empty(0, dtype=torch.int32, device="meta"), 5)
