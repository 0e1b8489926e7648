"""GPU benchmark of spmm, spmm_t and sddmm: our CUDA kernels against the other options a
PyTorch user has, on the same inputs in the same run, plus the memory-bandwidth floor.

    python3 benchmarks/bench_cuda.py            # the issue's grid, as far as --budget-s allows
    python3 benchmarks/bench_cuda.py --n 4096 16384 65536    # a grid split in two runs ...
    python3 benchmarks/bench_cuda.py --n 131072              # ... under a 10-minute limit
    python3 benchmarks/bench_cuda.py --quick    # the three reference cells, B=32
    python3 benchmarks/bench_cuda.py --n 65536 --density 0.01 --batch 32 --pattern uniform
    python3 benchmarks/bench_cuda.py --dtype bfloat16   # 2-byte storage, float32 accumulation
    python3 benchmarks/bench_cuda.py --quick --out benchmarks/results/   # rewrites cuda_ops_<gpu>_quick.md

Baselines: torch.sparse.mm on CSR (cuSPARSE SpMM; for spmm_t on the explicitly transposed
CSR), torch.sparse.sampled_addmm (cuSPARSE SDDMM), dense cuBLAS (W @ X; G @ X^T for sddmm)
and masked-dense (W * mask, then the dense product; what masked sparse training does each
step). Dense timings do not depend on the pattern, so they are measured once per (N, B).
floor = bytes that must move (index, values, inputs and outputs once each) / device copy
bandwidth (a 1 GiB tensor copy). Timing: CUDA events, warm-up, median of 5-50 runs; inputs
stay in L2 when they fit, as they would in a training loop.
Patterns: "uniform" (positions uniformly random) and "power_law" (row lengths from a Pareto
tail, degree exponent 2.5, capped at N; columns uniform). Actual nnz is reported.
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


from common import announce, cell_ends, cell_starts, cuda_times_of, finish, machine, out_help, results_path
import torch  # noqa: E402

DEV = "cuda"
GRID_N = [4096, 16384, 65536, 131072]
GRID_DENSITY = [0.001, 0.01, 0.05, 0.2]
GRID_B = [32, 256]
PATTERNS = ["uniform", "power_law"]
REFERENCE = [(65536, 0.01, 32), (16384, 0.01, 32), (131072, 0.01, 32)]  # the cells first
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SUFFIX = {"float32": "", "float16": "_fp16", "bfloat16": "_bf16"}
BYTES_PER_NNZ_PEAK = 64  # generation sort + CSR + transposed index + baseline copies


# ----------------------------------------------------------------------------- inputs
def _keys_to_csr(keys: torch.Tensor, n: int):
    row = torch.div(keys, n, rounding_mode="floor")
    col = (keys - row * n).to(torch.int32)
    counts = torch.bincount(row, minlength=n)
    del row
    row_ptr = torch.zeros(n + 1, dtype=torch.int64, device=keys.device)
    torch.cumsum(counts, 0, out=row_ptr[1:])
    return row_ptr, col


def uniform_pattern(n: int, nnz: int, gen: torch.Generator):
    """Exactly nnz distinct uniformly random positions (draw, deduplicate, top up)."""
    total = n * n
    keys = torch.empty(0, dtype=torch.int64, device=DEV)
    while keys.numel() < nnz:
        need = nnz - keys.numel()
        draw = torch.randint(total, (need + need // 8 + 1024,), generator=gen, device=DEV)
        keys = torch.unique(torch.cat([keys, draw]))
        del draw
    if keys.numel() > nnz:
        keep = torch.randperm(keys.numel(), generator=gen, device=DEV)[:nnz]
        keys = keys[keep].sort().values
    return _keys_to_csr(keys, n)


def power_law_pattern(n: int, nnz: int, gen: torch.Generator, gamma: float = 2.5):
    """Row lengths proportional to Pareto weights (tail exponent gamma - 1), scaled so that
    sum(min(n, length)) ~= nnz; columns uniform, duplicates dropped (so long rows come out
    somewhat shorter; the actual nnz is reported)."""
    u = torch.rand(n, generator=gen, device=DEV, dtype=torch.float64)
    w = (1.0 - u).pow(-1.0 / (gamma - 1.0))
    lo, hi = 0.0, float(nnz) / float(w.min()) + 1.0
    for _ in range(60):  # bisection on the scale: the cap at n makes it nonlinear
        mid = 0.5 * (lo + hi)
        if float(torch.clamp(w * mid, max=n).sum()) < nnz: lo = mid
        else: hi = mid
    lengths = torch.clamp((w * hi).round(), max=n).long()
    rows = torch.repeat_interleave(torch.arange(n, device=DEV), lengths)
    cols = torch.randint(n, (rows.numel(),), generator=gen, device=DEV)
    keys = torch.unique(rows * n + cols)
    del rows, cols
    return _keys_to_csr(keys, n)


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


def copy_bandwidth() -> float:
    """Device memory bandwidth in bytes/s from a 1 GiB device-to-device copy (read + write)."""
    n = 1 << 28
    a = torch.empty(n, dtype=torch.float32, device=DEV).fill_(1.0)
    b = torch.empty_like(a)
    ms = time_ms(lambda: b.copy_(a), budget_s=0.5)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 4 / (ms * 1e-3)


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


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    scale = float(b.abs().max()) if b.numel() else 0.0
    return float((a - b).abs().max()) / scale if scale > 0 else float((a - b).abs().max() if a.numel() else 0.0)


# ---------------------------------------------------------------------------- a cell
def floor_bytes(op: str, n: int, nnz: int, B: int, es: int = 4) -> int:
    """es: bytes per value / activation element (4 float32, 2 float16/bfloat16)."""
    dense_io = 2 * es * n * B  # one activation read, one written (N x B each)
    if op == "spmm":
        return 8 * (n + 1) + (4 + es) * nnz + dense_io
    if op == "spmm_t":
        return 8 * (n + 1) + (4 + 8 + es) * nnz + dense_io
    return 8 * (n + 1) + (4 + es) * nnz + dense_io  # sddmm: col, out; G and X read


def run_cell(n, density, B, pattern, args, dense_cache, bw):
    from sparse_engine import SparseWeight
    from sparse_engine import ops as se_ops

    target = int(round(density * n * n))
    free, total = torch.cuda.mem_get_info()
    if target * BYTES_PER_NNZ_PEAK > 0.85 * total:
        return {"skip": f"nnz {target:,} needs ~{target * BYTES_PER_NNZ_PEAK / 2**30:.0f} GiB"}
    gen = torch.Generator(device=DEV).manual_seed(zlib.crc32(f"{n}/{density}/{pattern}".encode()))
    row_ptr, col = (uniform_pattern if pattern == "uniform" else power_law_pattern)(n, target, gen)
    nnz = col.numel()
    dtype = DTYPES[args.dtype]
    values = (torch.randn(nnz, generator=gen, device=DEV) / math.sqrt(max(1.0, nnz / n))).to(dtype)
    W = SparseWeight(row_ptr, col, values, (n, n), validate=False, requires_grad=False)
    torch.cuda.synchronize()
    transpose_ms = time_ms(lambda: torch.ops.sparse_engine.transpose_index(W.row_ptr, W.col_idx, n), budget_s=0.2,
                           min_reps=3, max_reps=10)
    lengths = W.row_ptr.diff()
    info = {"nnz": nnz, "density": nnz / (n * n), "max_row": int(lengths.max()), "mean_row": nnz / n,
            "transpose_ms": transpose_ms}
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
    res = {}
    ours32 = {
        "spmm": lambda: se_ops.spmm(W32, X32),
        "spmm_t": lambda: se_ops.spmm_t(W32, G32),
        "sddmm": lambda: se_ops.sddmm(W32, G32, X32),
    }
    cases = {
        "spmm": (lambda: se_ops.spmm(W, X), lambda: torch.sparse.mm(A, X), "cuSPARSE SpMM"),
        "spmm_t": (lambda: se_ops.spmm_t(W, G), lambda: torch.sparse.mm(At, G), "cuSPARSE SpMM (W^T CSR)"),
        "sddmm": (lambda: se_ops.sddmm(W, G, X),
                  lambda: torch.sparse.sampled_addmm(A, G, X.t(), beta=0.0, alpha=1.0), "cuSPARSE SDDMM"),
    }
    for op in args.ops:
        ours_fn, base_fn, base_name = cases[op]
        r = {"ours": try_time(ours_fn), "base": try_time(base_fn), "base_name": base_name}
        if W32 is not None:
            r["ours32"] = try_time(ours32[op])
        try:  # does ours agree with cuSPARSE on this input?
            o, b = ours_fn(), base_fn()
            r["check"] = rel_err(o, b.values() if b.layout == torch.sparse_csr else b)
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


def machine_header(bw: float) -> str:
    p = torch.cuda.get_device_properties(0)
    return (f"Machine: {machine()}; {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB\n\n"
            f"Measured device copy bandwidth: {bw / 1e9:.0f} GB/s. TF32 matmul: "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} (dense baselines in full fp32).\n")


TITLE = "CUDA operators: ours vs cuSPARSE, dense cuBLAS, masked-dense (same run)"


def op_columns(half: bool) -> list[str]:
    """The columns of each op's table (``half``: the 2-byte dtypes' "ours fp32" columns too)."""
    return (["N", "density", "pattern", "B", "nnz", "max row", "ours ms", "cuSPARSE ms", "x", "dense ms", "x",
             "masked ms", "x"] + (["ours fp32 ms", "x"] if half else []) + ["floor ms", "% floor", "check"])


def write_report(path: Path, header: str, cells: list, ops: list, dtype: str = "float32") -> None:
    half = dtype != "float32"
    # ours and cuSPARSE each round to the storage type once: a few units of its epsilon apart
    check_ok = 4 * torch.finfo(DTYPES[dtype]).eps if half else 1e-3
    lines = [f"# {TITLE}", "", header,
             f"dtype: {dtype}" + (" (storage; our kernels accumulate in float32; baselines in the same dtype, "
                                  "\"ours fp32\" = our float32 kernels on the same inputs)" if half else ""), "",
             "x = baseline time / our time (> 1: we are faster). floor = bytes that must move / copy bandwidth; "
             "% floor = floor time / our time. check = max |ours - cuSPARSE| / max |cuSPARSE| "
             f"(ok below {check_ok:.1e}).", ""]
    columns = op_columns(half)
    for op in ops:
        lines += [f"## {op}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for (n, d, B, pat), cell in cells:
            if "skip" in cell:
                lines.append(f"| {n:,} | {d:.1%} | {pat} | {B} | skipped: {cell['skip']} |||||||||||")
                continue
            i, r = cell["info"], cell["ops"][op]
            ours = r["ours"]
            pf = f"{r['floor_ms'] / ours:.0%}" if isinstance(ours, float) else "-"
            chk = r["check"]
            chk = ("ok" if chk < check_ok else f"{chk:.1e} !") if isinstance(chk, float) else chk
            extra = f" {fmt_ms(r.get('ours32', '-'))} | {ratio(r.get('ours32'), ours)} |" if half else ""
            lines.append(
                f"| {n:,} | {i['density']:.2%} | {pat} | {B} | {i['nnz']:,} | {i['max_row']:,} | {fmt_ms(ours)} | "
                f"{fmt_ms(r['base'])} | {ratio(r['base'], ours)} | {fmt_ms(r.get('dense', '-'))} | "
                f"{ratio(r.get('dense'), ours)} | {fmt_ms(r.get('masked', '-'))} | {ratio(r.get('masked'), ours)} |"
                f"{extra} {r['floor_ms']:.3f} | {pf} | {chk} |")
        lines.append("")
    lines += ["## transpose_index (building the transposed index on the GPU)", "",
              "| N | density | pattern | nnz | ms |", "|---|---|---|---|---|"]
    seen = set()
    for (n, d, B, pat), cell in cells:
        if "info" in cell and (n, d, pat) not in seen:
            seen.add((n, d, pat))
            lines.append(f"| {n:,} | {cell['info']['density']:.2%} | {pat} | {cell['info']['nnz']:,} | "
                         f"{cell['info']['transpose_ms']:.2f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=GRID_N)
    ap.add_argument("--density", type=float, nargs="+", default=GRID_DENSITY)
    ap.add_argument("--batch", type=int, nargs="+", default=GRID_B)
    ap.add_argument("--pattern", nargs="+", default=PATTERNS, choices=PATTERNS)
    ap.add_argument("--ops", nargs="+", default=["spmm", "spmm_t", "sddmm"], choices=["spmm", "spmm_t", "sddmm"])
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES),
                    help="storage dtype of values and activations (float16/bfloat16: float32 accumulation)")
    ap.add_argument("--quick", action="store_true", help="only the issue's three reference cells at B=32")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense and masked-dense baselines")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting new cells after this long")
    ap.add_argument("--copy-to", type=Path, default=None, help="also write the results file into this folder")
    ap.add_argument("--out", default=None, help=out_help("cuda_ops_<gpu>[_bf16|_fp16][_quick|_n<sizes>].md"))
    args = ap.parse_args(argv)

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

    cells = [(n, d, B, p) for n in args.n for d in args.density for B in args.batch for p in args.pattern]
    if args.quick:
        cells = [(n, d, 32, p) for n, d, _ in REFERENCE for p in args.pattern]
    ref = {(n, d, B): i for i, (n, d, B) in enumerate(REFERENCE)}
    cells.sort(key=lambda c: (ref.get(c[:3], len(ref)), c[0], c[1], c[2], c[3]))
    gpu = re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(0).lower()).strip("_")
    part = "_quick" if args.quick else ("" if args.n == GRID_N else "_n" + "-".join(map(str, args.n)))
    out = results_path(args.out, f"cuda_ops_{gpu}{SUFFIX[args.dtype]}{part}.md")

    announce(f"{TITLE}, {args.dtype}", op_columns(args.dtype != "float32"), out)
    print(f"(one such table per op: {', '.join(args.ops)})", flush=True)
    c = cell_starts("device copy bandwidth (1 GiB)")
    bw = copy_bandwidth()
    cell_ends(c, f"{bw / 1e9:.0f} GB/s")
    header = machine_header(bw)
    done, dense_cache = [], {}
    t_start = time.perf_counter()
    for n, d, B, pat in cells:
        if time.perf_counter() - t_start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: {len(cells) - len(done)} cells not run", flush=True)
            break
        c = cell_starts(f"N={n} d={d} B={B} {pat}")
        try:
            cell = run_cell(n, d, B, pat, args, dense_cache, bw)
        except torch.cuda.OutOfMemoryError:
            del_cache()
            cell = {"skip": "out of memory"}
        except (RuntimeError, TypeError, ValueError) as exc:  # record it; the other cells still run
            cell = {"skip": "error: " + _first_line(exc, 100)}
            print(f"N={n} d={d} B={B} {pat}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            try:
                del_cache()
            except RuntimeError:  # a sticky CUDA error (illegal address ...): every later cell would fail
                cell_ends(c, f"skipped ({cell['skip']})")
                done.append(((n, d, B, pat), cell))
                write_report(out, header, done, args.ops, args.dtype)
                if args.copy_to is not None:
                    write_report(args.copy_to / out.name, header, done, args.ops, args.dtype)
                print("the CUDA context is broken; stopping", file=sys.stderr)
                finish(out)
                return 1
        done.append(((n, d, B, pat), cell))
        if "skip" in cell:
            cell_ends(c, f"skipped ({cell['skip']})")
        else:
            summary = "  ".join(
                f"{op} {fmt_ms(r['ours'])} ms ({ratio(r['base'], r['ours'])} vs cuSPARSE, "
                f"{r['floor_ms'] / r['ours']:.0%} of floor)" if isinstance(r["ours"], float) else f"{op} {r['ours']}"
                for op, r in cell["ops"].items())
            cell_ends(c, f"nnz={cell['info']['nnz']:,}: {summary}")
        write_report(out, header, done, args.ops, args.dtype)
        if args.copy_to is not None:
            write_report(args.copy_to / out.name, header, done, args.ops, args.dtype)
    finish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
