"""CPU benchmark of spmm, spmm_t, sddmm and spmm forward+backward on a grid that cannot hide a
loss: the row law is an axis, so that skewed rows (dynamic sparse training grows hub rows), B = 1
and wide batches show up beside the uniform patterns.

Same inputs, same run: ours vs torch.sparse.mm on CSR (MKL), scipy.sparse, dense and masked-dense
(W * mask, then the dense product), plus PyG's torch_sparse when it is installed. The grid: row law
(``sparse_engine.sparse.patterns.row_law_pattern``: uniform, zipf0.8, zipf1.0, zipf1.2, banded,
block) x N {16,384, 65,536, 262,144} x density {0.05%, 0.1%, 1%, 5%} x B {1, 4, 20, 32, 128, 256, 512},
smallest N first and every law at each N and density before the next density, so that --budget-s
(no new cell once spent) cuts the large sizes, not a law. One row per op and cell:

* every baseline's time, the fastest one ("best") and ours against it ("x best" < 1: a loss);
* % floor: the time to move the bytes that must move once (values, index, the dense operands read
  and the output written once) at this machine's memcpy bandwidth, measured once per run, over ours;
* check: our result against a float64 reference computed independently (benchmarks/float64_check.py:
  every output row when cheap, else a sample with the longest rows) within the op tests' rounding
  bound: "checked", or the row says WRONG and the run ends with status 1.

A baseline (or a whole cell) whose memory would exceed --memory-gib is skipped and the row says so.
Rows are printed and appended to the results file as measured, with the 1-minute load average (a
busy machine inflates every time); each cell prints a line when it starts and when it ends. Without
--out the results file is a fresh one, benchmarks/results/local/cpu_ops-<UTC time>.md (named at the
start and the end); the committed table is rewritten only with --out cpu_ops.md (`make bench`).

    python benchmarks/bench_ops.py --out cpu_ops.md --budget-s 36000   # the grid, as far as 10 hours go
    python benchmarks/bench_ops.py --quick         # uniform and zipf1.0, B 1 and 128, at N 2,048 (a fresh file)
    python benchmarks/bench_ops.py --n 16384 --density 0.01 --batch 1 128 --laws zipf1.2 banded
    python benchmarks/bench_ops.py --ops spmm_t spmm_t+gather sddmm --out /tmp/ops.md   # some ops only
    python benchmarks/bench_ops.py --dtype bfloat16 --n 16384 --out cpu_ops_bf16.md     # 2-byte storage

``--dtype bfloat16`` (or ``float16``): the values and the dense operands stored in that 2-byte type
(our kernels accumulate in float32), checked against the float64 reference of those rounded inputs
within the type's rounding bound (our error, not a baseline's); dense and masked-dense run in that
type too, torch.sparse and scipy (neither MKL's CSR product nor scipy has a 2-byte type on the CPU) in
float32 on the same rounded numbers, the best they offer.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import announce, cell, copy_bandwidth, finish, out_help, results_path, timeit, write_result  # noqa: E402
from float64_check import check, verdict  # noqa: E402

from sparse_engine import SparseWeight, ops  # noqa: E402
from sparse_engine.sparse.patterns import ROW_LAWS, default_values, row_law_pattern  # noqa: E402
import torch  # noqa: E402

GRID_N = [16384, 65536, 262144]
GRID_DENSITY = [0.0005, 0.001, 0.01, 0.05]
# B = 20: the recurrent tables' batch (T=35, B=20), whose rows are not whole 8-float vectors: their last
# vector is read masked (sddmm lost 1.5x to a masked load's miss there, docs/cpu_kernels.md "sddmm"),
# which no other width of the grid exercised
GRID_B = [1, 4, 20, 32, 128, 256, 512]
QUICK = dict(n=[2048], density=[0.01], batch=[1, 128], laws=["uniform", "zipf1.0"])
OPS = ["spmm", "spmm_t", "spmm_t+gather", "sddmm", "fwd+bwd"]
BASELINES = ["torch.sparse CSR", "scipy", "dense", "masked-dense"]
try:
    import torch_sparse as _pyg  # noqa: F401
    BASELINES.append("torch_sparse (PyG)")
except ImportError:
    pass
DEFAULT = "cpu_ops.md"
TITLE = "CPU operators: ours vs baselines (same run), by row law"
HEADER = (["N", "law", "density", "max row", "B", "op", "ours ms"] + [f"{b} ms" for b in BASELINES]
          + ["best", "x best", "% floor", "check", "load"])
NOTES = """x best = the fastest baseline's time / our time; < 1 is a loss. % floor = the time to move the bytes that
must move once (values, index, the dense operands read and the output written once) at the memcpy
bandwidth above, over our time (above 100%: the operands stayed in the caches, as in small cells).
check: ours against a float64 reference computed independently, within the op tests' rounding bound
(all rows, or a sample of N+ rows with the longest). max row: the longest row of the pattern (the row
law's hub). load = 1-minute load average when the row was measured.
spmm_t: W^T G. Its torch.sparse baseline gets a transposed CSR built once outside the timing, values
included (`torch.sparse.mm(W.t(), G)` converts the transposed CSR on every call, about 100x slower),
and so do we in the `spmm_t` rows: the values in column order (`ops.transposed_values(W)`, what a
recurrence makes once per sequence) are made outside the timing and passed as `values_t`. The
`spmm_t+gather` rows time ours gathering the current values through the transposed index on every call
(`ops.spmm_t(W, G)`, one product per change of the values, as in SparseLinear's backward), against
the sparse baselines given the same transposed index and gathering the current values through it on
every call too (`values[csc_perm]`, then their product; before 2026-11-27 they got the `spmm_t` rows'
prebuilt values, which compared a gather with no gather: the `spmm_t` rows still show that). The
forward-only rows run ours under torch.no_grad(), like the baselines, whose values are detached. sddmm
baselines: torch.sparse.sampled_addmm, scipy (row gathers), dense (G X^T, then the entries),
masked-dense ((G X^T) * mask). fwd+bwd: Y = W X, then the gradients of the values (or the dense
weight) and X; scipy has no autograd. Dense and masked-dense build N x N matrices; torch.sparse's
backward through a CSR weight also needs O(N^2) memory. Anything that would need more than the memory
budget is skipped and says so ("skip ~N GiB"); "-": no such baseline for that op.
"""


class CheckFailed(RuntimeError):
    """Our result is past its rounding bound: the run stops (status 1)."""


def physical_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def memory_needed(op: str, impl: str, n: int, nnz: int, B: int) -> float:
    """Bytes an implementation holds for one op (weights, workspaces, outputs), a rough bound."""
    dense, act = 4.0 * n * n, 4.0 * n * B
    if impl == "ours":
        return 40.0 * nnz + 6 * act  # index + values + values grad + transposed values, padded copies
    return OURS_RESIDENT * nnz + _baseline_bytes(op, impl, n, nnz, B, dense, act)


# Our weight (values, CSR and transposed index, values_t) stays in memory while a baseline runs.
OURS_RESIDENT = 20.0


def _baseline_bytes(op: str, impl: str, n: int, nnz: int, B: int, dense: float, act: float) -> float:
    if impl == "torch.sparse CSR":
        # int64 column indices; spmm_t's transposed CSR is converted through COO (int64 rows and
        # columns, a sort): at 40 bytes per entry in all, 65,536 / 5% was killed for memory on 24 GiB
        per_entry = {"spmm_t": 80.0, "spmm_t+gather": 80.0}.get(op, 40.0)
        return per_entry * nnz + (3 * dense if op == "fwd+bwd" else 0.0) + 4 * act
    if impl == "scipy":
        return (8.0 * nnz * B if op == "sddmm" else 0.0) + 12.0 * nnz + 4 * act
    if impl == "dense":
        return (2 if op in ("sddmm", "fwd+bwd") else 1) * dense + 8.0 * nnz + 4 * act
    if impl == "masked-dense":
        return {"spmm": 2.25, "spmm_t": 2.25, "sddmm": 2.25, "fwd+bwd": 3.5}[op] * dense + 8.0 * nnz + 4 * act
    if impl == "torch_sparse (PyG)":
        return 24.0 * nnz + 4 * act
    raise ValueError(impl)


def floor_bytes(op: str, n: int, nnz: int, B: int, e: int = 4) -> int:
    """Bytes that must move once: values of ``e`` bytes and int32 columns (e + 4 per entry; e + 8
    where the values are gathered through the transposed index), int64 row pointers, the N x B
    operands read and the output written once (sddmm: both operands read, one value per entry written)."""
    index, dense = 8 * (n + 1), e * n * B
    one = {"spmm": (4 + e) * nnz, "spmm_t": (4 + e) * nnz, "spmm_t+gather": (8 + e) * nnz, "sddmm": (4 + e) * nnz}
    if op == "fwd+bwd":  # Y = W X, then dX = W^T G gathering the values, dW = sddmm(G, X)
        return sum(one[o] + index + 2 * dense for o in ("spmm", "spmm_t+gather", "sddmm"))
    return one[op] + index + 2 * dense


def make_weight(n: int, density: float, law: str, dtype=torch.float32) -> SparseWeight:
    g = torch.Generator().manual_seed(0)
    row_ptr, col_idx = row_law_pattern(law, n, n, int(round(density * n * n)), g)
    values = default_values(col_idx.numel(), n, generator=g).to(dtype)
    return SparseWeight(row_ptr, col_idx, values, (n, n), validate=False)


def ours(op: str, W: SparseWeight, X: torch.Tensor, G: torch.Tensor):
    """(the timed callable, a function returning its outputs for the check: "spmm" W X, "spmm_t" W^T G,
    "sddmm" G X^T at W's entries). The forward-only calls run under torch.no_grad(), as the baselines'
    (detached) values do: recording the autograd graph costs tens of microseconds per call, which
    dominates the smallest cells."""
    if op == "fwd+bwd":
        def fwd_bwd(outputs: bool = False):
            x = X.detach().requires_grad_()
            y = ops.spmm(W, x)
            y.backward(G)
            grads = {"spmm": y.detach(), "spmm_t": x.grad, "sddmm": W.values.grad} if outputs else None
            W.values.grad = None
            return grads
        return fwd_bwd, lambda: fwd_bwd(True)
    values_t = ops.transposed_values(W) if op == "spmm_t" else None  # made once, outside the timing
    key, run = {"spmm": ("spmm", lambda: ops.spmm(W, X)), "spmm_t": ("spmm_t", lambda: ops.spmm_t(W, G, values_t)),
                "spmm_t+gather": ("spmm_t", lambda: ops.spmm_t(W, G)),
                "sddmm": ("sddmm", lambda: ops.sddmm(W, G, X))}[op]

    def no_grad():
        with torch.no_grad():
            return run()
    return no_grad, lambda: {key: no_grad()}


def baselines(op: str, W: SparseWeight, X: torch.Tensor, G: torch.Tensor) -> dict:
    """name -> a function building (outside the timing) and returning the timed callable, or None
    where the baseline has no such op. The sparse baselines run in float32 on the same numbers where
    ours stores bfloat16 or float16 (neither MKL's CSR product nor scipy has them on the CPU)."""
    dense_W, dense_X, dense_G = W, X, G
    if W.values.dtype != torch.float32:
        W = SparseWeight(W.row_ptr, W.col_idx, W.values.detach().float(), W.shape, validate=False)
        X, G = X.float(), G.float()

    def torch_sparse():
        csr = W.to_torch_sparse_csr()
        if op == "spmm":
            return lambda: torch.sparse.mm(csr, X)
        if op == "spmm_t":
            csr_t = csr.t().to_sparse_csr()
            return lambda: torch.sparse.mm(csr_t, G)
        if op == "spmm_t+gather":  # our transposed index, the current values gathered through it per call
            _, _, csc_ptr, csc_row, csc_perm = W.index
            rows_t, perm, values = csc_row.long(), csc_perm.long(), W.values.detach()
            return lambda: torch.sparse.mm(torch.sparse_csr_tensor(csc_ptr, rows_t, values[perm], size=W.shape[::-1]),
                                           G)
        if op == "sddmm":
            return lambda: torch.sparse.sampled_addmm(csr, G, X.T, beta=0.0)
        v = W.values.detach().clone().requires_grad_()

        def fwd_bwd():
            w = torch.sparse_csr_tensor(W.row_ptr, W.col_idx.long(), v, size=W.shape)
            torch.sparse.mm(w, X.detach().requires_grad_()).backward(G)
            v.grad = None
        return fwd_bwd

    def scipy():
        sci, Xn, Gn = W.to_scipy(), X.numpy(), G.numpy()
        if op == "spmm":
            return lambda: sci @ Xn
        if op == "spmm_t":
            return lambda: sci.T @ Gn
        if op == "spmm_t+gather":  # as torch.sparse's: the transposed index given, the values gathered per call
            import scipy.sparse as scipy_sparse

            _, _, csc_ptr, csc_row, csc_perm = (t.numpy() for t in W.index)
            csc_ptr = csc_ptr.astype(csc_row.dtype)  # one index dtype: no conversion inside the timing
            values, shape_t = W.values.detach().numpy(), W.shape[::-1]
            return lambda: scipy_sparse.csr_matrix((values[csc_perm], csc_row, csc_ptr), shape=shape_t) @ Gn
        row = sci.tocoo().row
        return lambda: (Gn[row] * Xn[sci.indices]).sum(1)

    def dense(masked: bool):  # in ours' dtype
        W, X, G = dense_W, dense_X, dense_G
        D = W.to_dense()
        mask = D != 0
        row, col, _ = W.coo()
        if op == "spmm":
            return (lambda: (D * mask) @ X) if masked else (lambda: D @ X)
        if op == "spmm_t":
            return (lambda: (D * mask).T @ G) if masked else (lambda: D.T @ G)
        if op == "sddmm":
            return (lambda: (G @ X.T) * mask) if masked else (lambda: (G @ X.T)[row, col])
        P = D.clone().requires_grad_()

        def fwd_bwd():
            x = X.detach().requires_grad_()
            ((P * mask) if masked else P).matmul(x).backward(G)
            P.grad = None
        return fwd_bwd

    impls = {"torch.sparse CSR": torch_sparse, "scipy": scipy if op != "fwd+bwd" else None,
             "dense": lambda: dense(False), "masked-dense": lambda: dense(True)}
    if op == "spmm_t+gather":  # the dense baselines are the spmm_t rows'; no values to gather there
        impls["dense"] = impls["masked-dense"] = None
    if "torch_sparse (PyG)" in BASELINES:
        impls["torch_sparse (PyG)"] = ((lambda: (lambda ts: (lambda: ts @ X))(W.to_torch_sparse()))
                                       if op == "spmm" else None)
    return impls


class Results:
    """The results file, written row by row: the header first, then each row as it comes."""

    def __init__(self, path: Path, title: str, notes: str):
        self.path = write_result(path.absolute(), title, f"{notes}\n| " + " | ".join(HEADER) + " |\n|"
                                 + "---|" * len(HEADER))
        self.rows = 0

    def add(self, row: list) -> None:
        line = "| " + " | ".join(str(c) for c in row) + " |"
        print(line, flush=True)
        self.note(line)
        self.rows += 1

    def note(self, line: str) -> None:
        with self.path.open("a") as f:
            f.write(line + "\n")


def pct(density: float) -> str:
    return f"{density * 100:g}%"


def ms(seconds: float) -> str:
    """Milliseconds with 3 decimals below 10 ms (calls of microseconds), 1 above."""
    x = seconds * 1e3
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def bench_cell(n: int, density: float, law: str, B: int, W: SparseWeight, out: Results, bandwidth: float,
               budget: float, ops_=OPS) -> None:
    """The rows of one cell: each op, ours (checked) and every baseline. Raises CheckFailed after
    writing the row of a wrong result."""
    nnz = W.nnz
    head = [f"{n:,}", law, pct(density), f"{int(W.row_ptr.diff().max()):,}", B]
    load = lambda: f"{os.getloadavg()[0]:.1f}"  # noqa: E731
    g = torch.Generator().manual_seed(1)
    dtype = W.values.dtype
    X, G = torch.randn(n, B, generator=g).to(dtype), torch.randn(n, B, generator=g).to(dtype)
    for op in ops_:
        timed, outputs = ours(op, W, X, G)
        ratio, rows = check(W, X, G, outputs())
        t_ours = timeit(timed)
        times = {}
        for name, build in baselines(op, W, X, G).items():
            if build is None:
                times[name] = "-"
                continue
            need = memory_needed(op, name, n, nnz, B)
            if need > budget:
                times[name] = f"skip ~{need / 2**30:.0f} GiB"
                continue
            fn = build()
            times[name] = timeit(fn)
            del fn
        measured = {k: v for k, v in times.items() if isinstance(v, float)}
        best = min(measured, key=measured.get) if measured else None
        floor = floor_bytes(op, n, nnz, B, dtype.itemsize) / bandwidth
        row = head + [op, ms(t_ours)] + [ms(v) if isinstance(v, float) else v for v in times.values()] + [
            best or "-", f"{measured[best] / t_ours:.2f}x" if best else "-", f"{floor / t_ours:.0%}",
            verdict(ratio, rows), load()]
        out.add(row)
        if not ratio <= 1.0:
            raise CheckFailed(f"ours is wrong at N {n:,}, {law}, density {pct(density)}, B {B}, {op}: "
                              f"error {ratio:.3g}x the rounding bound")


def cells(sizes, densities, laws, batches):
    """The grid in its order: N, then density, then law, then B (one pattern per law, N, density)."""
    return [(n, d, law, B) for n in sizes for d in densities for law in laws for B in batches]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="N 2,048, density 1%%, B 1 and 128, laws uniform and zipf1.0 (checks the script)")
    p.add_argument("--n", type=int, nargs="+", default=None, help=f"default {GRID_N}")
    p.add_argument("--density", type=float, nargs="+", default=None, help=f"default {GRID_DENSITY}")
    p.add_argument("--batch", type=int, nargs="+", default=None, help=f"default {GRID_B}")
    p.add_argument("--laws", nargs="+", default=None, choices=ROW_LAWS, help="row laws; default: all")
    p.add_argument("--ops", nargs="+", default=OPS, choices=OPS, help="default: all")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no new cell after this many seconds (the grid's order puts the small N first)")
    p.add_argument("--memory-gib", type=float, default=None,
                   help="skip what would need more (default: 80%% of this machine's memory)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="storage of the values and the dense operands (bfloat16, float16: float32 accumulation)")
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    grid = QUICK if args.quick else dict(n=GRID_N, density=GRID_DENSITY, batch=GRID_B, laws=list(ROW_LAWS))
    sizes, densities = args.n or grid["n"], args.density or grid["density"]
    batches, laws = args.batch or grid["batch"], args.laws or grid["laws"]
    for name, values in (("--n", sizes), ("--batch", batches)):
        if any(v < 1 for v in values):
            p.error(f"{name} values must be >= 1")
    if any(not 0 < d <= 1 for d in densities):
        p.error("--density values must be in (0, 1]")
    if args.budget_s is not None and not args.budget_s > 0:
        p.error("--budget-s must be > 0")
    budget = (args.memory_gib if args.memory_gib is not None else 0.8 * physical_gib()) * 2**30
    path = results_path(args.out, DEFAULT)
    announce(TITLE, HEADER, path)
    with cell("memcpy bandwidth (256 MiB float32 copy)") as c:
        bandwidth = copy_bandwidth()
        c.result = f"{bandwidth / 1e9:.1f} GB/s"
    stored = ("" if dtype == torch.float32 else
              f"dtype: {args.dtype} (values and dense operands; our kernels accumulate in float32; dense and "
              f"masked-dense in {args.dtype}, torch.sparse and scipy, which have no {args.dtype} CSR product on the "
              "CPU, in float32 on the same numbers).\n\n")
    out = Results(path, TITLE, f"{stored}memcpy bandwidth: {bandwidth / 1e9:.1f} GB/s (a 256 MiB float32 copy, "
                               f"read + write, best of 5, {torch.get_num_threads()} threads).\n\n{NOTES}")
    todo, start, pattern = cells(sizes, densities, laws, batches), time.perf_counter(), (None, None)
    try:
        for i, (n, d, law, B) in enumerate(todo):
            if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
                line = f"budget of {args.budget_s:.0f} s spent: {len(todo) - i} of {len(todo)} cells not run"
                print(line, flush=True)
                out.note(f"\n{line} (the first not run: N {n:,}, {law}, density {pct(d)}, B {B}).")
                break
            with cell(f"N {n:,}, {law}, density {pct(d)}, B {B}") as c:
                before, nnz = out.rows, int(round(d * n * n))
                if memory_needed("fwd+bwd", "ours", n, nnz, B) > budget:
                    need = memory_needed("fwd+bwd", "ours", n, nnz, B) / 2**30
                    out.add([f"{n:,}", law, pct(d), "-", B, "all", f"skipped: needs ~{need:.0f} GiB > "
                             f"{budget / 2**30:.0f} GiB"] + ["-"] * (len(HEADER) - 8) + [f"{os.getloadavg()[0]:.1f}"])
                else:
                    if pattern[0] != (n, d, law):
                        pattern = (None, None)  # the previous weight freed before the next is built
                        pattern = ((n, d, law), make_weight(n, d, law, dtype))
                    bench_cell(n, d, law, B, pattern[1], out, bandwidth, budget, [op for op in OPS if op in args.ops])
                c.result = f"{out.rows - before} rows"
    except CheckFailed as exc:
        print(f"bench_ops: {exc}", file=sys.stderr, flush=True)
        finish(out.path)
        return 1
    finish(out.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
