"""The content check of a sparse index before a kernel gathers through it (csrc/index_check.h).

An index whose row_ptr is not non-decreasing from 0 to nnz, or whose col_idx / csc_row / csc_perm
holds an entry out of range, gives one ValueError naming the argument, the entry and its position
(before this check the CPU kernels segfaulted, and a GPU kernel would fault and leave the CUDA
context unusable). The check is a scan of the index, run once per pattern and remembered while
the index's tensors are unchanged (same storage, same version counter): these tests count the
scans (sparse_engine._C._index_scans()). They run on the CPU and, where a GPU and the CUDA kernels
are present, on CUDA too (there the scan is launch_index_scan, itself tested on the emulator,
below). The fused steps and the topology ops check their index too (test_rnn_step.py, test_topology.py).
"""
from __future__ import annotations

import re
import threading
from functools import partial

import pytest
import torch

from sparse_engine import _C, ops
from sparse_engine import testing
from sparse_engine.kernels import HAS_CUDA_KERNELS
from sparse_engine.testing import randn, weight_with_row_lengths
from cuda_emu.emu_testing import assert_passed

RAW = torch.ops.sparse_engine
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and HAS_CUDA_KERNELS else [])
LENGTHS = [3, 0, 5, 2, 9, 1, 4]  # 7 x 9, 24 entries, an empty row and a full one
ROWS, COLS, NNZ = len(LENGTHS), 9, sum(LENGTHS)
B = 3


def scans() -> int:
    return _C._index_scans()


def weight(device: str, seed: int = 0):
    return weight_with_row_lengths(LENGTHS, COLS, dtype=torch.float32, seed=seed, device=device)


def operands(device: str, seed: int = 1):
    return (randn(COLS, B, dtype=torch.float32, seed=seed, device=device),
            randn(ROWS, B, dtype=torch.float32, seed=seed + 1, device=device))


def expected(W, X, G):
    """float64 references from the dense matrix."""
    D = W.to_dense().detach().double()
    return {"spmm": D @ X.double(), "spmm_t": D.t() @ G.double(),
            "sddmm": (G.double() @ X.double().t())[D != 0]}


def call(op: str, index, W, X, G):
    if op == "spmm":
        return RAW.spmm(*index, W.values, X)
    if op == "spmm_t":
        return RAW.spmm_t(*index, W.values, G)
    if op == "sddmm":
        return RAW.sddmm(*index, G, X)
    return RAW.transpose_index(index[0], index[1], COLS)


def corrupt(W, what: str):
    """(index with one problem, argument name, regex of the message)."""
    index = [t.clone() for t in W.index]
    rp, ci, cp, cr, cm = index
    if what == "col_idx too large":
        ci[10] = COLS
        return index, rf"col_idx entry {COLS} \(position 10\) out of range \[0, {COLS}\)"
    if what == "col_idx negative":
        ci[NNZ - 1] = -7
        ci[NNZ - 2] = -8  # the first one is reported
        return index, rf"col_idx entry -8 \(position {NNZ - 2}\) out of range \[0, {COLS}\)"
    if what == "row_ptr decreasing":
        rp[3] = int(rp[4]) + 1  # ends fine, row 3 has -1 entries, row 2 runs past row 3's start
        return index, rf"row_ptr must be non-decreasing, got row_ptr\[3\]={int(rp[3])} > row_ptr\[4\]={int(rp[4])}"
    if what == "row_ptr end":
        rp[-1] = NNZ + 5
        return index, rf"row_ptr must start at 0 and end at nnz={NNZ}, got 0 and {NNZ + 5}"
    if what == "csc_row too large":
        cr[4] = ROWS
        return index, rf"csc_row entry {ROWS} \(position 4\) out of range \[0, {ROWS}\)"
    if what == "csc_perm out of range":
        cm[0] = NNZ
        return index, rf"csc_perm entry {NNZ} \(position 0\) out of range \[0, nnz={NNZ}\)"
    if what == "csc_ptr decreasing":
        cp[1] = int(cp[2]) + 1
        return index, rf"csc_ptr must be non-decreasing, got csc_ptr\[1\]={int(cp[1])} > csc_ptr\[2\]="
    raise ValueError(what)


CASES = [("spmm", "col_idx too large"), ("spmm", "col_idx negative"), ("spmm", "row_ptr decreasing"),
         ("spmm", "row_ptr end"), ("sddmm", "col_idx too large"), ("sddmm", "row_ptr decreasing"),
         ("spmm_t", "csc_row too large"), ("spmm_t", "csc_perm out of range"), ("spmm_t", "csc_ptr decreasing"),
         ("transpose_index", "col_idx too large"), ("transpose_index", "row_ptr decreasing")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,what", CASES, ids=[f"{op}-{what}" for op, what in CASES])
def test_a_bad_index_is_one_value_error_naming_the_argument(device, op, what):
    W = weight(device)
    X, G = operands(device)
    index, message = corrupt(W, what)
    with pytest.raises(ValueError, match=message):
        call(op, index, W, X, G)
    # the device is still usable, and the good index still gives the right result
    if op == "transpose_index":
        for a, b in zip(call(op, W.index, W, X, G), W.index[2:]):
            assert torch.equal(a, b)
    else:
        torch.testing.assert_close(call(op, W.index, W, X, G).double().cpu(), expected(W, X, G)[op].cpu(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_the_first_problem_is_reported_in_a_fixed_order(device):
    """ends of row_ptr, then its first drop, then the first bad entry."""
    W = weight(device)
    X, _ = operands(device)
    rp, ci = W.row_ptr.clone(), W.col_idx.clone()
    ci[0] = COLS
    rp[5] = int(rp[6]) + 1
    with pytest.raises(ValueError, match=r"row_ptr must be non-decreasing, got row_ptr\[5\]"):
        RAW.spmm(rp, ci, *W.index[2:], W.values, X)
    rp[5] = int(rp[4])
    with pytest.raises(ValueError, match=r"col_idx entry 9 \(position 0\)"):
        RAW.spmm(rp, ci, *W.index[2:], W.values, X)


@pytest.mark.parametrize("device", DEVICES)
def test_an_index_is_scanned_once_until_it_changes(device):
    W = weight(device, seed=3)
    X, G = operands(device)
    n = scans()
    ops.spmm(W, X)
    ops.sddmm(W, G, X)
    assert scans() == n + 1, "the CSR: scanned at its first use, then remembered"
    ops.spmm_t(W, G)  # builds the transposed index (transpose_index: the CSR is remembered) and scans it
    assert W.has_transpose and scans() == n + 2
    for _ in range(3):
        ops.spmm(W, X)
        ops.spmm_t(W, G)
        ops.sddmm(W, G, X)
    assert scans() == n + 2
    # an in-place write (even of the same value) bumps the version: scanned again, once
    W.col_idx[0] = W.col_idx[0].clone()
    ops.spmm(W, X)
    ops.sddmm(W, G, X)
    assert scans() == n + 3
    # a bad write is caught, on every call (a failed scan is not remembered)
    good = int(W.col_idx[5])
    W.col_idx[5] = COLS + 1
    for _ in range(2):
        with pytest.raises(ValueError, match=rf"col_idx entry {COLS + 1} \(position 5\)"):
            ops.spmm(W, X)
    assert scans() == n + 5
    W.col_idx[5] = good
    torch.testing.assert_close(ops.spmm(W, X).double(), expected(W, X, G)["spmm"], rtol=1e-5, atol=1e-5)
    assert scans() == n + 6
    # another tensor with the same content is another pattern: scanned once
    index = [t.clone() for t in W.index]
    RAW.spmm(*index, W.values, X)
    RAW.spmm(*index, W.values, X)
    assert scans() == n + 7
    # a view of the same memory (same storage, offset, size, stride, version counter) is the same
    RAW.spmm(index[0][:], index[1].view(-1), *index[2:], W.values, X)
    assert scans() == n + 7


@pytest.mark.parametrize("device", DEVICES)
def test_inference_tensors_are_scanned_on_every_call(device):
    """No version counter to trust, so no memory of them."""
    W = weight(device)
    X, _ = operands(device)
    with torch.inference_mode():
        index = [t.clone() for t in W.index]
        values = W.values.detach().clone()
        n = scans()
        RAW.spmm(*index, values, X)
        RAW.spmm(*index, values, X)
        assert scans() == n + 2
        index[1][2] = -1
        with pytest.raises(ValueError, match=r"col_idx entry -1 \(position 2\)"):
            RAW.spmm(*index, values, X)


def test_more_patterns_than_the_cache_holds():
    """Past its 4096 entries the cache first drops the patterns whose tensors are gone, then starts
    over; every pattern is still checked and computed right."""
    W = weight("cpu")
    X, G = operands("cpu")
    ref = expected(W, X, G)["spmm"]
    _ = W.index  # builds the transposed index (transpose_index scans the CSR) before the count below
    keep = [W.col_idx.clone() for _ in range(4200)]  # alive: nothing to drop, so the cache starts over
    n = scans()
    for ci in keep:
        RAW.spmm(W.row_ptr, ci, *W.index[2:], W.values, X)
    assert scans() == n + 4200
    torch.testing.assert_close(RAW.spmm(W.row_ptr, keep[0], *W.index[2:], W.values, X).double(), ref,
                               rtol=1e-5, atol=1e-5)
    for _ in range(4200):  # dropped at once: the cache forgets them when it fills up
        RAW.spmm(W.row_ptr, W.col_idx.clone(), *W.index[2:], W.values, X)
    bad = W.col_idx.clone()
    bad[1] = COLS
    with pytest.raises(ValueError, match="col_idx entry 9"):
        RAW.spmm(W.row_ptr, bad, *W.index[2:], W.values, X)


def test_threads_share_the_memory_of_checked_indices():
    """Ops on several threads at once (as autograd's and a DataLoader's may be): one mutex guards
    the cache; every result is right and each index is scanned at most once per thread."""
    weights = [weight("cpu", seed=s) for s in range(4)]
    X, G = operands("cpu")
    refs = [expected(W, X, G) for W in weights]
    errors = []

    def work(t):
        try:
            for i in range(60):
                W, ref = weights[(t + i) % 4], refs[(t + i) % 4]
                torch.testing.assert_close(ops.spmm_t(W, G).double(), ref["spmm_t"], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(ops.spmm(W, X).double(), ref["spmm"], rtol=1e-5, atol=1e-5)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    n = scans()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert n + 4 <= scans() <= n + 16  # each transposed index once, maybe once per thread racing on it


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a CUDA device and the CUDA kernels")
def test_fused_step_on_cuda_checks_its_index():
    """The CUDA step ops check W_hh's CSR (forward) and transposed index (backward) the same way.
    (The CPU step ops do not yet: csrc/cpu/rnn_step_cpu.cpp.)"""
    H = 6
    W = weight_with_row_lengths([2, 0, 3, 6, 1, 4], H, dtype=torch.float32, seed=5, device="cuda")
    h = randn(H, B, dtype=torch.float32, seed=6, device="cuda")
    gx = randn(H, B, dtype=torch.float32, seed=7, device="cuda")
    index = [t.clone() for t in W.index]
    index[1][3] = H
    with pytest.raises(ValueError, match=re.escape(f"col_idx entry {H} (position 3) out of range [0, {H})")):
        RAW.rnn_step(*index, W.values, gx, h, False)
    index = [t.clone() for t in W.index]
    index[3][0] = -1
    h_new = RAW.rnn_step(*W.index, W.values, gx, h, False)
    with pytest.raises(ValueError, match=re.escape(f"csc_row entry -1 (position 0) out of range [0, {H})")):
        RAW.rnn_step_backward(*index, W.values, h_new, h, False)
    RAW.rnn_step_backward(*W.index, W.values, h_new, h, False)
    torch.cuda.synchronize()  # no fault was left behind


def _rewire(rp, ci, values, keep, seed=0):
    """The operator rewire on the CPU with random growth of 2 entries; returns (row_ptr, col_idx, values)."""
    out = RAW.rewire(rp, ci, values, COLS, keep, None, None, None, None, 2, seed, 2, 2, 0, False, [])
    return out[0], out[1], out[2]


def _spmm(rp, ci, v, X):
    """spmm without the transposed index (it does not read it)."""
    none = torch.empty(0, dtype=torch.int32)
    return RAW.spmm(rp, ci, torch.zeros(COLS + 1, dtype=torch.int64), none, none, v, X)


def test_rewire_scans_a_layers_pattern_once_and_its_own_output_never():
    """A layer's pattern comes back to rewire at each update: its first update scans it, the
    pattern rewire builds is remembered as checked (so the next update and the products between
    scan nothing), and a pattern changed in place is scanned again and its problem reported."""
    W = weight("cpu")
    rp, ci, v = W.row_ptr.clone(), W.col_idx.clone(), W.values.detach().clone()
    keep = torch.arange(NNZ) % 3 != 0
    n = scans()
    rp2, ci2, v2 = _rewire(rp, ci, v, keep)
    assert scans() == n + 1
    X, _ = operands("cpu")
    _spmm(rp2, ci2, v2, X)  # the product finds rewire's output checked
    rp3, ci3, v3 = _rewire(rp2, ci2, v2, torch.ones(ci2.numel(), dtype=torch.bool), seed=1)
    _rewire(rp, ci, v, keep)  # the first input, unchanged: remembered too
    assert scans() == n + 1
    # in place: the columns of the first row with two or more reversed (version bumped), found on the next update
    r = int(torch.nonzero(rp3.diff() >= 2)[0])
    row = slice(int(rp3[r]), int(rp3[r + 1]))
    ci3[row] = ci3[row].flip(0)
    with pytest.raises(ValueError, match="col_idx must be sorted and unique within each row: unsorted column"):
        _rewire(rp3, ci3, v3, torch.ones(ci3.numel(), dtype=torch.bool))
    assert scans() == n + 2


def test_a_pattern_the_products_accepted_is_still_checked_for_order_by_rewire():
    """spmm needs no sorted columns and remembers its scan; rewire needs them and must not take
    the product's memory of an unsorted pattern as a check of order."""
    W = weight("cpu")
    rp, ci, v = W.row_ptr.clone(), W.col_idx.clone(), W.values.detach().clone()
    ci[int(rp[0]):int(rp[1])] = ci[int(rp[0]):int(rp[1])].flip(0)  # row 0 unsorted, in range
    X, _ = operands("cpu")
    n = scans()
    _spmm(rp, ci, v, X)
    assert scans() == n + 1
    with pytest.raises(ValueError, match="col_idx must be sorted and unique within each row: unsorted column"):
        _rewire(rp, ci, v, torch.ones(NNZ, dtype=torch.bool))


# ---------------------------------------------------------------- CUDA: the kernels' own patterns
@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_an_out_of_range_index_is_an_error_not_a_fault(pattern_weight):
    """An index a kernel would read out of bounds with gives a ValueError (the tests above have the
    cases); the CUDA context stays usable."""
    randn = partial(testing.randn, dtype=torch.float32, device="cuda")  # seeded, drawn on the CPU, then on the GPU
    W = pattern_weight("power_rows")
    rows, cols = W.shape
    X, G = randn(cols, 8, seed=1), randn(rows, 8, seed=2)
    ref = ops.spmm(W, X)
    for k in (0, W.nnz // 2, W.nnz - 1):
        for bad in (cols, -1, 2**31 - 1):
            ci = W.col_idx.clone()
            ci[k] = bad
            with pytest.raises(ValueError, match=rf"col_idx entry {bad} \(position {k}\) out of range"):
                RAW.spmm(W.row_ptr, ci, *W.index[2:], W.values, X)
            with pytest.raises(ValueError, match=rf"col_idx entry {bad} \(position {k}\)"):
                RAW.sddmm(W.row_ptr, ci, *W.index[2:], G, X)
    perm = W.csc_perm.clone()
    perm[-1] = W.nnz
    with pytest.raises(ValueError, match="csc_perm entry"):
        RAW.spmm_t(*W.index[:4], perm, W.values, G)
    torch.cuda.synchronize()
    assert torch.equal(ops.spmm(W, X), ref)


# ------------------------------------------- the CUDA index scan on the emulator (tests/cuda_emu)
@pytest.mark.slow
def test_the_index_scan_kernel_finds_every_planted_problem_on_the_emulator(driver_runs):
    """The CUDA index scan (launch_index_scan), run by the emulator's driver on indices with one
    problem planted in each: every one found, as the CPU scan finds it (its FAIL lines fail the run)."""
    for seed, proc in driver_runs.items():
        lines = assert_passed(proc)
        # the index scan (launch_index_scan) found every planted problem (its FAIL lines fail the run above)
        scans = [line for line in lines if line.startswith("scan ")]
        assert len(scans) >= 15 and all(line.endswith(" ok") for line in scans), seed
