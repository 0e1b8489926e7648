"""GPU benchmark of spmm, spmm_t and sddmm: our CUDA kernels against the other options a
PyTorch user has, on the same inputs in the same run, plus the memory-bandwidth floor, on a grid
that cannot hide a loss: the row law is an axis beside N, density and B.

    python3 benchmarks/bench_cuda.py            # the grid, as far as --budget-s allows
    python3 benchmarks/bench_cuda.py --n 16384 65536     # a grid split in two runs ...
    python3 benchmarks/bench_cuda.py --n 262144          # ... under a 10-minute limit
    python3 benchmarks/bench_cuda.py --quick    # the reference cells (uniform and zipf1.0)
    python3 benchmarks/bench_cuda.py --n 65536 --density 0.01 --batch 1 128 --laws zipf1.2 banded
    python3 benchmarks/bench_cuda.py --dtype bfloat16   # 2-byte storage, float32 accumulation
    python3 benchmarks/bench_cuda.py --quick --out benchmarks/results/   # rewrites cuda_ops_<gpu>_quick.md

The grid: row law (sparse_engine.sparse.patterns.row_law_pattern: uniform, zipf0.8, zipf1.0,
zipf1.2 (hub rows, as dynamic sparse training grows them), banded, block) x N {16,384, 65,536,
262,144} x density {0.05%, 0.1%, 1%, 5%} x B {1, 4, 20, 32, 128, 256, 512}, one dtype a run (gpu_all.sh
runs float32 and bfloat16); smallest N first, every law at each N and density before the next
density, so that --budget-s cuts the large sizes, not a law. --laws replaces --pattern, which is
still accepted, as is its old "power_law" (now zipf1.0: row lengths ~ 1/rank, no longer Pareto draws).
Baselines: torch.sparse.mm on CSR (cuSPARSE SpMM; for spmm_t on the explicitly transposed
CSR, and ours with ``values_t``, the values in that order, made beforehand as well, as the issue's
cells had it; the first H200 grid (2026-11-26) gave ours none, so it read them through the
permutation, one more random gather per entry, likely why its spmm_t lost at B = 1 (0.33-0.6x).
spmm_t's table also times that call, "ours, values gathered", what SparseLinear's backward does),
torch.sparse.sampled_addmm (cuSPARSE SDDMM), dense cuBLAS (W @ X; G @ X^T for sddmm)
and masked-dense (W * mask, then the dense product; what masked sparse training does each
step). Dense timings do not depend on the pattern, so they are measured once per (N, B).
"best x" = the fastest baseline's time / ours (< 1: a loss).
floor = bytes that must move (index, values, inputs and outputs once each) / device copy
bandwidth (a 1 GiB tensor copy). Timing: CUDA events, warm-up, median of 5-50 runs; inputs
stay in L2 when they fit, as they would in a training loop.
check: our result against a float64 reference computed on the GPU from the CSR arrays and the
operands as stored (benchmarks/float64_check.py: every output row when cheap, else a sample with
the longest rows), within the op tests' rounding bound in the dtype of our output, so a bfloat16
cell measures our error, not cuSPARSE's; a WRONG cell is recorded, the other cells still run, and
the run ends with status 1.
--dtype float16/bfloat16: values, X and G in that dtype; every baseline runs in the same dtype
where torch supports it (an unsupported one shows its error in the table), and our float32
kernels on the same inputs are timed too ("ours fp32"), so the gain from 2-byte storage shows.
Results: the table cuda_ops_<gpu>[_bf16|_fp16].md (with _quick or _n<sizes> for a partial grid, so
that runs split by --n do not overwrite each other), rewritten after every cell (and into
--copy-to): without --out a fresh file benchmarks/results/local/cuda_ops_<gpu>...-<UTC time>.md
(named at the start and the end); the committed table is rewritten only with --out NAME, or with
--out benchmarks/results/ (that name in that folder, as benchmarks/gpu_all.sh passes). The console
shows the table's header, then a line as each cell starts and one as it ends.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
import zlib
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (announce, cell_ends, cell_starts, copy_bandwidth, cuda_times_of, finish, machine,  # noqa: E402
                    out_help, results_path)
from float64_check import check, verdict  # noqa: E402

from sparse_engine.sparse.patterns import ROW_LAWS, row_law_pattern  # noqa: E402
import torch  # noqa: E402

DEV = "cuda"
GRID_N = [16384, 65536, 262144]
GRID_DENSITY = [0.0005, 0.001, 0.01, 0.05]
GRID_B = [1, 4, 20, 32, 128, 256, 512]  # 20: the recurrent tables' batch, which no other width stands for
OLD_NAMES = {"power_law": "zipf1.0"}  # --pattern's old name
# --quick: the reference cells at B = 32 (the first table's), then B = 1 and 128 at 65,536 / 1%
QUICK = [(65536, 0.01, 32), (16384, 0.01, 32), (131072, 0.01, 32), (65536, 0.01, 1), (65536, 0.01, 128)]
QUICK_LAWS = ["uniform", "zipf1.0"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SUFFIX = {"float32": "", "float16": "_fp16", "bfloat16": "_bf16"}
BYTES_PER_NNZ_PEAK = 68  # pattern drawn in chunks + CSR + transposed index + values_t + baseline copies + check scan


# ---------------------------------------------------------------------------- timing
def time_ms(fn, budget_s: float = 0.4, min_reps: int = 5, max_reps: int = 50) -> float:
    """Median milliseconds of fn() timed with CUDA events (common.cuda_times_of): one call after a
    warm-up says how many calls fill ``budget_s``, within [min_reps, max_reps]."""
    first = 1e3 * cuda_times_of(fn, 1, warmup=1)[0]
    if first > 1e3 * budget_s:  # a slow baseline (seconds per call at 1e9 nnz): 3 runs are enough
        min_reps = min(min_reps, 3)
    reps = int(min(max_reps, max(min_reps, budget_s * 1e3 / max(first, 1e-3))))
    times = sorted(cuda_times_of(fn, reps, warmup=0))
    return 1e3 * times[len(times) // 2]


def try_time(fn) -> float | str:
    try:
        return time_ms(fn)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"
    except (RuntimeError, TypeError, ValueError) as exc:  # an unsupported baseline: say so in the table
        torch.cuda.empty_cache()
        return "error: " + _first_line(exc, 60)


def _first_line(exc: BaseException, n: int) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:n].replace("|", "/")


# ---------------------------------------------------------------------------- a cell
def floor_bytes(op: str, n: int, nnz: int, B: int, es: int = 4) -> int:
    """es: bytes per value / activation element (4 float32, 2 float16/bfloat16)."""
    dense_io = 2 * es * n * B  # one activation read, one written (N x B each)
    if op == "spmm":
        return 8 * (n + 1) + (4 + es) * nnz + dense_io
    if op == "spmm_t":
        return 8 * (n + 1) + (4 + 8 + es) * nnz + dense_io
    return 8 * (n + 1) + (4 + es) * nnz + dense_io  # sddmm: col, out; G and X read


def pattern_for(n: int, density: float, law: str, cache: dict):
    """(row_ptr, col_idx, float32 values, transpose ms) of the cell's pattern, drawn on the device
    (row_law_pattern), kept in ``cache`` for the next cells of the same N, density and law (the
    grid's order runs their B one after the other); the previous pattern is freed first."""
    key = (n, density, law)
    if cache.get("key") != key:
        cache.clear()
        del_cache()
        gen = torch.Generator(device=DEV).manual_seed(zlib.crc32(f"{n}/{density}/{law}".encode()))
        row_ptr, col = row_law_pattern(law, n, n, int(round(density * n * n)), gen, device=DEV)
        values = torch.randn(col.numel(), generator=gen, device=DEV) / math.sqrt(max(1.0, col.numel() / n))
        transpose_ms = time_ms(lambda: torch.ops.sparse_engine.transpose_index(row_ptr, col, n), budget_s=0.2,
                               min_reps=3, max_reps=10)
        cache.update(key=key, pattern=(row_ptr, col, values, transpose_ms))
    return cache["pattern"]


def run_cell(n, density, B, law, args, dense_cache, bw, patterns=None):
    from sparse_engine import SparseWeight
    from sparse_engine import ops as se_ops

    target = int(round(density * n * n))
    free, total = torch.cuda.mem_get_info()
    if target * BYTES_PER_NNZ_PEAK > 0.85 * total:
        return {"skip": f"nnz {target:,} needs ~{target * BYTES_PER_NNZ_PEAK / 2**30:.0f} GiB"}
    row_ptr, col, values32, transpose_ms = pattern_for(n, density, law, {} if patterns is None else patterns)
    nnz = col.numel()
    dtype = DTYPES[args.dtype]
    W = SparseWeight(row_ptr, col, values32.to(dtype), (n, n), validate=False, requires_grad=False)
    torch.cuda.synchronize()
    info = {"nnz": nnz, "max_row": int(W.row_ptr.diff().max()) if n else 0, "transpose_ms": transpose_ms}
    gen = torch.Generator(device=DEV).manual_seed(zlib.crc32(f"{n}/{density}/{law}/{B}".encode()))
    X = torch.randn(n, B, generator=gen, device=DEV).to(dtype)
    G = torch.randn(n, B, generator=gen, device=DEV).to(dtype)
    # our float32 kernels on the same (rounded) inputs, for the 2-byte dtypes
    W32 = X32 = G32 = None
    if dtype != torch.float32:
        W32 = SparseWeight(W.row_ptr, W.col_idx, W.values.float(), (n, n), validate=False, requires_grad=False)
        X32, G32 = X.float(), G.float()
    idx32 = nnz < 2**31
    crow = W.row_ptr.to(torch.int32) if idx32 else W.row_ptr
    A = torch.sparse_csr_tensor(crow, W.col_idx if idx32 else W.col_idx.long(), W.values, (n, n))
    At = torch.sparse_csr_tensor(W.csc_ptr.to(crow.dtype), W.csc_row if idx32 else W.csc_row.long(),
                                 W.values[W.csc_perm], (n, n))
    values_t = se_ops.transposed_values(W)
    res = {}
    ours32 = {
        "spmm": lambda: se_ops.spmm(W32, X32),
        "spmm_t": lambda: se_ops.spmm_t(W32, G32),
        "sddmm": lambda: se_ops.sddmm(W32, G32, X32),
    }
    cases = {
        "spmm": (lambda: se_ops.spmm(W, X), lambda: torch.sparse.mm(A, X), "cuSPARSE SpMM"),
        # both sides get the values in the transposed order made beforehand (cuSPARSE its CSR of W^T,
        # ours values_t), as a training step makes them once for all its products (issue 45's cells)
        "spmm_t": (lambda: se_ops.spmm_t(W, G, values_t), lambda: torch.sparse.mm(At, G), "cuSPARSE SpMM (W^T CSR)"),
        "sddmm": (lambda: se_ops.sddmm(W, G, X),
                  lambda: torch.sparse.sampled_addmm(A, G, X.t(), beta=0.0, alpha=1.0), "cuSPARSE SDDMM"),
    }
    for op in args.ops:
        ours_fn, base_fn, base_name = cases[op]
        r = {"ours": try_time(ours_fn), "base": try_time(base_fn), "base_name": base_name}
        if op == "spmm_t":  # and the values gathered through the permutation on the call (no values_t)
            r["ours_gather"] = try_time(lambda: se_ops.spmm_t(W, G))
        if W32 is not None:
            r["ours32"] = try_time(ours32[op])
        try:  # ours against a float64 reference of the same (stored) inputs: our error, not cuSPARSE's
            r["check"] = check(W, X, G, {op: ours_fn()})
        except (RuntimeError, TypeError, ValueError) as exc:  # OutOfMemoryError is a RuntimeError
            r["check"] = "n/a: " + _first_line(exc, 40)
        del_cache()
        r["floor_ms"] = floor_bytes(op, n, nnz, B, X.element_size()) / bw * 1e3
        res[op] = r
    del A, At
    del_cache()
    key = (n, B)
    if key not in dense_cache and not args.no_dense:
        dense_cache[key] = dense_timings(W, X, G, args.ops)
    for op in args.ops:
        res[op].update(dense_cache.get(key, {}).get(op, {"dense": "-", "masked": "-"}))
    del W, X, G, W32, X32, G32
    del_cache()
    return {"info": info, "ops": res}


def del_cache():
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def dense_timings(W, X, G, ops):
    """Dense cuBLAS and masked-dense timings (pattern-independent), or why not."""
    n = W.shape[0]
    free, _ = torch.cuda.mem_get_info()
    need = 13 * n * n  # W (4) + mask (1) + masked product (4) + sddmm's N x N output (4)
    if need > 0.9 * free:
        why = f"skip: needs ~{need / 2**30:.0f} GiB"
        return {op: {"dense": why, "masked": why} for op in ops}
    out = {op: {} for op in ops}
    try:
        row, col, _ = W.coo()
        Wd = torch.zeros(n, n, device=DEV, dtype=W.values.dtype)
        Wd[row, col] = W.values.detach()
        M = Wd != 0
        del row, col
        if "spmm" in ops:
            out["spmm"]["dense"] = try_time(lambda: Wd @ X)
            out["spmm"]["masked"] = try_time(lambda: (Wd * M) @ X)
        if "spmm_t" in ops:
            out["spmm_t"]["dense"] = try_time(lambda: Wd.t() @ G)
            out["spmm_t"]["masked"] = try_time(lambda: (Wd * M).t() @ G)
        del Wd
        del_cache()
        if "sddmm" in ops:
            out["sddmm"]["dense"] = try_time(lambda: G @ X.t())
            out["sddmm"]["masked"] = try_time(lambda: (G @ X.t()) * M)
        del M
    except torch.cuda.OutOfMemoryError:
        for op in ops:
            out[op].setdefault("dense", "OOM")
            out[op].setdefault("masked", "OOM")
    del_cache()
    return out


# ---------------------------------------------------------------------------- report
def fmt_ms(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def ratio(base, ours) -> str:
    return f"{base / ours:.2f}x" if isinstance(base, float) and isinstance(ours, float) and ours > 0 else "-"


def best(r: dict):
    """The fastest baseline's time of an op's results (cuSPARSE, dense, masked), or None."""
    times = [r.get(k) for k in ("base", "dense", "masked") if isinstance(r.get(k), float)]
    return min(times) if times else None


def check_text(chk) -> str:
    """The check column: ``checked (...)``, ``WRONG: ...`` or why there is no check."""
    return verdict(*chk) if isinstance(chk, tuple) else str(chk)


def wrong(cell: dict) -> list[str]:
    """The ops of a cell whose check failed."""
    return [op for op, r in cell.get("ops", {}).items() if check_text(r["check"]).startswith("WRONG")]


def pct(density: float) -> str:
    return f"{density * 100:g}%"


def machine_header(bw: float) -> str:
    p = torch.cuda.get_device_properties(0)
    return (f"Machine: {machine()}; {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB\n\n"
            f"Measured device copy bandwidth: {bw / 1e9:.0f} GB/s. TF32 matmul: "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} (dense baselines in full fp32).\n")


TITLE = "CUDA operators: ours vs cuSPARSE, dense cuBLAS, masked-dense (same run), by row law"


def op_columns(half: bool, op: str = "spmm") -> list[str]:
    """The columns of each op's table (``half``: the 2-byte dtypes' "ours fp32" columns too; spmm_t:
    ours with the values gathered through the permutation on the call, against the best baseline)."""
    return (["N", "density", "law", "B", "nnz", "max row", "ours ms", "cuSPARSE ms", "x", "dense ms", "x",
             "masked ms", "x", "best x"] + (["ours fp32 ms", "x"] if half else [])
            + (["ours, values gathered ms", "best x"] if op == "spmm_t" else []) + ["floor ms", "% floor", "check"])


def write_report(path: Path, header: str, cells: list, ops: list, dtype: str = "float32") -> None:
    half = dtype != "float32"
    lines = [f"# {TITLE}", "", header,
             f"dtype: {dtype}" + (" (storage; our kernels accumulate in float32; baselines in the same dtype, "
                                  "\"ours fp32\" = our float32 kernels on the same inputs)" if half else ""), "",
             "x = baseline time / our time (> 1: we are faster); best x: against the fastest baseline (< 1: a "
             "loss). floor = bytes that must move / copy bandwidth; % floor = floor time / our time. check: ours "
             "against a float64 reference of the same stored inputs, within the op tests' rounding bound in "
             f"{dtype} (all rows, or a sample of N+ rows with the longest).", ""]
    for op in ops:
        columns = op_columns(half, op)
        lines += [f"## {op}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for (n, d, B, law), cell in cells:
            if "skip" in cell:
                skipped = f"| {n:,} | {pct(d)} | {law} | {B} | skipped: {cell['skip']} |"
                lines.append(skipped + " |" * (len(columns) - 5))
                continue
            i, r = cell["info"], cell["ops"][op]
            ours = r["ours"]
            pf = f"{r['floor_ms'] / ours:.0%}" if isinstance(ours, float) else "-"
            extra = f" {fmt_ms(r.get('ours32', '-'))} | {ratio(r.get('ours32'), ours)} |" if half else ""
            if op == "spmm_t":
                extra += f" {fmt_ms(r.get('ours_gather', '-'))} | {ratio(best(r), r.get('ours_gather'))} |"
            lines.append(
                f"| {n:,} | {pct(d)} | {law} | {B} | {i['nnz']:,} | {i['max_row']:,} | {fmt_ms(ours)} | "
                f"{fmt_ms(r['base'])} | {ratio(r['base'], ours)} | {fmt_ms(r.get('dense', '-'))} | "
                f"{ratio(r.get('dense'), ours)} | {fmt_ms(r.get('masked', '-'))} | {ratio(r.get('masked'), ours)} | "
                f"{ratio(best(r), ours)} |{extra} {r['floor_ms']:.3f} | {pf} | {check_text(r['check'])} |")
        lines.append("")
    lines += ["## transpose_index (building the transposed index on the GPU)", "",
              "| N | density | law | nnz | ms |", "|---|---|---|---|---|"]
    seen = set()
    for (n, d, _, law), cell in cells:
        if "info" in cell and (n, d, law) not in seen:
            seen.add((n, d, law))
            lines.append(f"| {n:,} | {pct(d)} | {law} | {cell['info']['nnz']:,} | {cell['info']['transpose_ms']:.2f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def grid_cells(args) -> list:
    """(N, density, B, law) in the order they run: --quick's reference cells as listed; else N, then
    density, then law, then B (so that one pattern serves a law's B in a row)."""
    if args.quick:
        return [(n, d, B, law) for n, d, B in QUICK for law in args.laws]
    return [(n, d, B, law) for n in args.n for d in args.density for law in args.laws for B in args.batch]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--n", type=int, nargs="+", default=GRID_N)
    ap.add_argument("--density", type=float, nargs="+", default=GRID_DENSITY)
    ap.add_argument("--batch", type=int, nargs="+", default=GRID_B)
    ap.add_argument("--laws", "--pattern", nargs="+", default=None, choices=list(ROW_LAWS) + list(OLD_NAMES),
                    help="row laws (default: all; --quick: uniform and zipf1.0); power_law, the old name, is zipf1.0")
    ap.add_argument("--ops", nargs="+", default=["spmm", "spmm_t", "sddmm"], choices=["spmm", "spmm_t", "sddmm"])
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES),
                    help="storage dtype of values and activations (float16/bfloat16: float32 accumulation)")
    ap.add_argument("--quick", action="store_true",
                    help="the issue's reference cells (N 65,536, 16,384, 131,072 at 1%%, B 32; then B 1 and 128 at "
                         "65,536)")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense and masked-dense baselines")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting new cells after this long")
    ap.add_argument("--copy-to", type=Path, default=None, help="also write the results file into this folder")
    ap.add_argument("--out", default=None, help=out_help("cuda_ops_<gpu>[_bf16|_fp16][_quick|_n<sizes>].md"))
    args = ap.parse_args(argv)
    laws = [OLD_NAMES.get(law, law) for law in args.laws or (QUICK_LAWS if args.quick else ROW_LAWS)]
    args.laws = list(dict.fromkeys(laws))
    for name, values in (("--n", args.n), ("--batch", args.batch)):
        if any(v < 1 for v in values):
            ap.error(f"{name} values must be >= 1")
    if any(not 0 < d <= 1 for d in args.density):
        ap.error("--density values must be in (0, 1]")

    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device (torch.cuda.is_available() is False); nothing to measure. "
              "The CUDA numbers wait for a GPU machine.", file=sys.stderr)
        return 2
    import sparse_engine  # noqa: F401
    from sparse_engine.kernels import HAS_CUDA_KERNELS

    if not HAS_CUDA_KERNELS:
        print("bench_cuda: sparse_engine._C was built without CUDA kernels; rebuild with a CUDA torch "
              "(SPARSE_ENGINE_CUDA=1 pip install --no-build-isolation -e .)", file=sys.stderr)
        return 2

    cells = grid_cells(args)
    gpu = re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(0).lower()).strip("_")
    part = "_quick" if args.quick else ("" if args.n == GRID_N else "_n" + "-".join(map(str, args.n)))
    out = results_path(args.out, f"cuda_ops_{gpu}{SUFFIX[args.dtype]}{part}.md")

    announce(f"{TITLE}, {args.dtype}", op_columns(args.dtype != "float32"), out)
    print(f"(one such table per op: {', '.join(args.ops)})", flush=True)
    c = cell_starts("device copy bandwidth (1 GiB)")
    bw = copy_bandwidth(DEV)
    cell_ends(c, f"{bw / 1e9:.0f} GB/s")
    header = machine_header(bw)
    done, dense_cache, patterns = [], {}, {}

    def report():
        write_report(out, header, done, args.ops, args.dtype)
        if args.copy_to is not None:
            write_report(args.copy_to / out.name, header, done, args.ops, args.dtype)

    t_start = time.perf_counter()
    for n, d, B, law in cells:
        if time.perf_counter() - t_start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: {len(cells) - len(done)} cells not run", flush=True)
            break
        c = cell_starts(f"N={n} d={pct(d)} B={B} {law}")
        try:
            cell = run_cell(n, d, B, law, args, dense_cache, bw, patterns)
        except torch.cuda.OutOfMemoryError:
            patterns.clear()
            del_cache()
            cell = {"skip": "out of memory"}
        except (RuntimeError, TypeError, ValueError) as exc:  # record it; the other cells still run
            patterns.clear()
            cell = {"skip": "error: " + _first_line(exc, 100)}
            print(f"N={n} d={pct(d)} B={B} {law}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            try:
                del_cache()
            except RuntimeError:  # a sticky CUDA error (illegal address ...): every later cell would fail
                cell_ends(c, f"skipped ({cell['skip']})")
                done.append(((n, d, B, law), cell))
                report()
                print("the CUDA context is broken; stopping", file=sys.stderr)
                finish(out)
                return 1
        done.append(((n, d, B, law), cell))
        if "skip" in cell:
            cell_ends(c, f"skipped ({cell['skip']})")
        else:
            summary = "  ".join(
                f"{op} {fmt_ms(r['ours'])} ms ({ratio(best(r), r['ours'])} vs the best baseline, "
                f"{r['floor_ms'] / r['ours']:.0%} of floor, {check_text(r['check'])})"
                if isinstance(r["ours"], float) else f"{op} {r['ours']}"
                for op, r in cell["ops"].items())
            cell_ends(c, f"nnz={cell['info']['nnz']:,}, max row {cell['info']['max_row']:,}: {summary}")
        report()
    finish(out)
    failed = [f"N={n} d={pct(d)} B={B} {law}: {', '.join(wrong(cell))}" for (n, d, B, law), cell in done if wrong(cell)]
    if failed:
        print("bench_cuda: our result is WRONG (past the rounding bound of a float64 reference) in "
              + "; ".join(failed), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
