"""One prune+regrow topology update of a large sparse layer, truly sparse vs masked-dense.

Truly sparse (sparse_engine.training.rewire): drop the 30% smallest |w|, regrow as many at
uniformly random empty positions, remap Adam's state, rebuild the transposed index.
Masked-dense (what sparselearning / Selfish-RNN do): a dense weight and mask, torch.topk over
the dense |w| for the drop and over dense random scores for the regrowth, Adam state zeroed
by the mask. Measured in the same run; the dense baseline only where it fits in memory.
Also RigL growth by gradient: tiled exact top-k vs the dense gradient + torch.topk, and the
sampled mode on the large layer. The table is topology_cpu.md, rewritten after every row.

    PYTHONPATH=. python benchmarks/bench_topology.py [--rows 16384 --cols 16384 --nnz 10000000]
    python benchmarks/bench_topology.py --out topology_cpu.md     # rewrites the committed table
    python3 benchmarks/bench_topology.py --device cuda [--copy-to DIR] [--budget-s 240]

--device cuda: the same updates on the GPU (the topology ops' CUDA kernels, i.e. the torch
primitives of sparse_engine.kernels.topology_torch): the issue's 100M-nnz SET prune+regrow
(goal <= 50 ms on an H100) and smaller layers against masked-dense torch.topk where that fits
in GPU memory, plus RigL growth. The table is topology_<gpu>.md, rewritten after every case (and
into --copy-to), and it stops starting cases after --budget-s.

Without --out the results file is a fresh one, benchmarks/results/local/topology_<cpu|gpu>-<UTC
time>.md (named at the start and the end); the committed table is rewritten only with --out NAME
(or --out benchmarks/results/: the default name there, as benchmarks/gpu_all.sh passes). The
console shows the table's header, then a line as each case starts and one as it ends.

Timing: consecutive updates of one weight, each on the pattern the one before left (an update
keeps the nnz, so nothing is reset or copied; see timed_updates), best of 3 after a warm-up.
"""
from __future__ import annotations

import argparse
import re
import sys
import time


from common import (add_copy_to, announce, announce_columns, cell, finish, machine, out_help,  # (it puts the
                    results_path, write_text)  # checkout's package on the path, installed or not)
from sparse_engine import SparseWeight
from sparse_engine.runtime.timing import available_memory_bytes, best_of  # the same helpers as sparse-engine bench
from sparse_engine.training import gradient_growth, magnitude_keep, random_empty, rewire, set_keep
import torch  # noqa: E402

FRACTION = 0.3
# --device cuda: (mode, rows, cols, nnz) prune+regrow cases and (method, n, nnz, M) RigL cases
CUDA_UPDATE_CASES = [("SET", 100_000, 100_000, 100_000_000), ("magnitude", 100_000, 100_000, 100_000_000),
                     ("magnitude", 32768, 32768, 100_000_000), ("magnitude", 16384, 16384, 10_000_000)]
CUDA_RIGL_CASES = [("exact", 16384, 13_421_773, 64), ("exact", 32768, 10_737_418, 64),
                   ("sample", 100_000, 100_000_000, 64)]
DEV = "cuda"
UPDATE_COLUMNS = ["case", "layer", "nnz", "truly sparse (s)", "masked-dense (s)", "dense / sparse"]
RIGL_COLUMNS = ["mode", "layer", "M", "k", "sparse (s)", "dense G X^T + topk (s)", "dense / sparse"]
CUDA_UPDATE_COLUMNS = ["case", "layer", "nnz", "truly sparse (ms)", "peak GiB (with setup)", "masked-dense (ms)",
                       "dense / sparse"]
CUDA_RIGL_COLUMNS = ["mode", "layer", "nnz", "M", "sparse (ms)", "dense G X^T + topk (ms)", "dense / sparse"]


def timed_updates(w: SparseWeight, opt, mode: str, sync=lambda: None, repeat: int = 3):
    """(seconds, phases) of the fastest of ``repeat`` consecutive prune + regrow updates of ``w``
    after one warm-up update. Each update starts from the pattern the one before left (the nnz is
    the same after every update), so nothing is reset and no copy is made. Before each update,
    untimed, the values are redrawn in place, as training would have moved them (else the entries
    regrown at zero would be the next ones pruned): a fill that keeps the pattern, the gradient and
    the optimizer state. Timed, with ``sync()`` between the phases: select (the keep mask:
    magnitude or SET), rewire (compact, random regrow, merge, gradient and Adam state remap) and
    transpose (the transposed index for the next backward, which a weight builds at first use)."""
    nnz, cols = w.nnz, w.shape[1]
    gen = torch.Generator(device=w.values.device).manual_seed(1)
    best = None
    for r in range(repeat + 1):
        with torch.no_grad():
            w.values.normal_(generator=gen)
        sync()
        t0 = time.perf_counter()
        keep = magnitude_keep(w.values, int(FRACTION * nnz)) if mode == "magnitude" else set_keep(w.values, FRACTION)
        sync()
        t1 = time.perf_counter()
        n = nnz - int(keep.sum())
        rewire(w, keep, lambda rp, ci: random_empty(rp, ci, cols, n, seed=r + 1), optimizer=opt)
        sync()
        t2 = time.perf_counter()
        _ = w.index  # builds the transposed index
        sync()
        t3 = time.perf_counter()
        assert w.nnz == nnz
        if r and (best is None or t3 - t0 < best[0]):
            best = (t3 - t0, dict(select=t1 - t0, rewire=t2 - t1, transpose=t3 - t2))
    return best


def with_adam_state(w: SparseWeight):
    """An Adam optimizer over w.values with its two moments filled, and a gradient (rewire remaps both)."""
    opt = torch.optim.Adam([w.values], lr=1e-3)
    g = torch.Generator(device=w.values.device).manual_seed(2)
    w.values.grad = torch.randn(w.values.shape, generator=g, device=w.values.device)
    opt.step()  # the gradient stays: rewire remaps it too
    return opt


def sparse_update(rows, cols, nnz, mode="magnitude"):
    g = torch.Generator().manual_seed(0)
    w = SparseWeight.random(rows, cols, nnz=nnz, generator=g)
    return timed_updates(w, with_adam_state(w), mode)


def best_update_time(update, refresh, sync=None, repeat: int = 3) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``update()`` after a warm-up call, each
    preceded by an untimed ``refresh()``."""
    return best_of(update, repeat, warmup=1, setup=refresh, sync=sync)


def masked_dense(rows, cols, nnz, device="cpu"):
    """(update, refresh) of the masked-dense way: a dense weight, a mask and two Adam moments;
    an update drops the n smallest |w| (torch.topk over the dense |W|, pruned positions at +inf)
    and regrows n at the top of dense random scores, zeroing W and the moments off the mask. Like
    the sparse updates it runs on the mask the one before left (no reset); refresh redraws W on the
    mask, untimed."""
    g = torch.Generator(device=device).manual_seed(0)
    W = torch.empty(rows, cols, device=device)
    mask = torch.rand(rows, cols, generator=g, device=device) < nnz / (rows * cols)
    exp_avg, exp_avg_sq = torch.zeros_like(W), torch.zeros_like(W)
    n = int(FRACTION * int(mask.sum()))

    def update():
        drop = torch.topk(W.abs().masked_fill_(~mask, float("inf")).view(-1), n, largest=False, sorted=False).indices
        mask.view(-1)[drop] = False
        score = torch.rand(rows, cols, generator=g, device=device).masked_fill_(mask, -1.0)
        grow = torch.topk(score.view(-1), n, sorted=False).indices
        mask.view(-1)[grow] = True
        W.view(-1)[grow] = 0.0
        W.mul_(mask)
        exp_avg.mul_(mask)
        exp_avg_sq.mul_(mask)

    def refresh():
        W.normal_(generator=g).mul_(mask)

    return update, refresh


def dense_update(rows, cols, nnz):
    update, refresh = masked_dense(rows, cols, nnz)
    return best_update_time(update, refresh, repeat=2)


def rigl_exact(rows, cols, density, M):
    g = torch.Generator().manual_seed(0)
    w = SparseWeight.random(rows, cols, density, generator=g)
    G, X = torch.randn(rows, M, generator=g), torch.randn(cols, M, generator=g)
    k = int(FRACTION * w.nnz)
    t_sparse = best_of(lambda: gradient_growth(w.row_ptr, w.col_idx, G, X, k, method="exact"))
    mask = w.to_dense() != 0

    def dense():
        D = (G @ X.t()).abs_().masked_fill_(mask, -1.0)
        return torch.topk(D.view(-1), k).indices

    t_dense = best_of(dense)
    return t_sparse, t_dense, k


def rigl_sampled(rows, cols, nnz, M):
    g = torch.Generator().manual_seed(0)
    w = SparseWeight.random(rows, cols, nnz=nnz, generator=g)
    G, X = torch.randn(rows, M, generator=g), torch.randn(cols, M, generator=g)
    k = int(FRACTION * nnz)
    return best_of(lambda: gradient_growth(w.row_ptr, w.col_idx, G, X, k, method="sample"), repeat=1), k


def phases(ph: dict, scale: float = 1.0) -> str:
    return ", ".join(f"{k} {v * scale:.{1 if scale > 1 else 3}f}" for k, v in ph.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--cols", type=int, default=16384)
    ap.add_argument("--nnz", type=int, default=10_000_000)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=None, help=out_help("topology_<cpu|gpu>.md"))
    add_copy_to(ap)
    ap.add_argument("--budget-s", type=float, default=240.0, help="cuda: stop starting new cases after this long")
    args = ap.parse_args()
    if args.device == "cuda":
        return main_cuda(args)
    out = results_path(args.out, "topology_cpu.md")
    rows, cols, nnz = args.rows, args.cols, args.nnz
    title = "Topology update benchmark (CPU)"
    announce(title, UPDATE_COLUMNS, out)
    lines = [
        f"# {title}", "",
        (f"- machine at the start: {machine()} (shared machine: numbers are noisy when the load is above the core "
         "count)"),
        (f"- one update drops {FRACTION:.0%} of the weights and regrows as many at random empty positions; "
         "sparse times include Adam state remap and the transposed-index rebuild; consecutive updates, each on the "
         "pattern the one before left (no reset; values redrawn in place between them, untimed); best of 3 after a "
         "warm-up (masked-dense: best of 2)"), "",
        "| " + " | ".join(UPDATE_COLUMNS) + " |",
        "| --- | --- | ---: | ---: | ---: | ---: |"]

    def add(row: str) -> None:  # the file is rewritten after every row
        lines.append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")

    for r, c, z in ((4096, 4096, 1_000_000), (rows, cols, nnz), (100_000, 100_000, nnz)):
        with cell(f"magnitude prune + random regrow, {r} x {c}, nnz {z:,}") as progress:
            t, ph = sparse_update(r, c, z)
            need = r * c * 14
            if need < 0.6 * (available_memory_bytes() or 0):
                td = dense_update(r, c, z)
                dense_s, ratio = f"{td:.3f}", f"{td / t:.1f}x"
            else:
                dense_s, ratio = f"n/a (needs ~{need / 2**30:.0f} GiB)", "-"
            progress.result = (f"| magnitude prune + random regrow | {r} x {c} | {z:,} | {t:.3f} ({phases(ph)}) | "
                               f"{dense_s} | {ratio} |")
        add(progress.result)
    with cell(f"SET prune + random regrow, {rows} x {cols}, nnz {nnz:,}") as progress:
        t, ph = sparse_update(rows, cols, nnz, mode="SET")
        progress.result = f"| SET prune + random regrow | {rows} x {cols} | {nnz:,} | {t:.3f} ({phases(ph)}) | - | - |"
    add(progress.result)
    lines += ["", "RigL growth (top-k |G X^T| at empty positions), M = batch columns:", ""]
    announce_columns(RIGL_COLUMNS)
    lines += ["| " + " | ".join(RIGL_COLUMNS) + " |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r, d, M in ((2048, 0.05, 64), (4096, 0.05, 64)):
        with cell(f"RigL exact, tiled, {r} x {r}, density {d:g}") as progress:
            ts, td, k = rigl_exact(r, r, d, M)
            progress.result = f"| exact, tiled | {r} x {r} | {M} | {k:,} | {ts:.3f} | {td:.3f} | {td / ts:.1f}x |"
        add(progress.result)
    with cell(f"RigL sampled, {rows} x {cols}, nnz {nnz:,}") as progress:
        ts, k = rigl_sampled(rows, cols, nnz, 64)
        progress.result = f"| sampled (8k candidates) | {rows} x {cols} | 64 | {k:,} | {ts:.3f} | - | - |"
    add(progress.result)
    lines.append("")
    add("GPU: `--device cuda` (benchmarks/gpu_all.sh runs it) measures the 100M-nnz case (goal < 50 ms on an H100).")
    finish(out)


# =============================================================================== GPU
def cuda_sync_time(fn, repeat=3):
    """Best of ``repeat`` after one warm-up run (allocator and cub workspaces), synchronized."""
    return best_of(fn, repeat, warmup=1, sync=torch.cuda.synchronize)


def free_bytes() -> int:
    return torch.cuda.mem_get_info()[0]


def cuda_weight(rows, cols, nnz, seed=0):
    """A uniformly random rows x cols pattern of exactly nnz entries, built on the device."""
    from common import random_csr_on

    return SparseWeight(*random_csr_on(rows, cols, nnz, DEV, seed), (rows, cols), validate=False)


def cuda_sparse_update(rows, cols, nnz, mode="magnitude"):
    """Consecutive prune + random regrow + Adam remap + transposed-index rebuilds, all on the GPU
    (timed_updates: no reset between them)."""
    w = cuda_weight(rows, cols, nnz)
    t, ph = timed_updates(w, with_adam_state(w), mode, sync=torch.cuda.synchronize)
    assert w.values.is_cuda and w.row_ptr.is_cuda
    w.validate()
    peak = torch.cuda.max_memory_allocated()
    del w
    torch.cuda.empty_cache()
    return t, ph, peak


def cuda_dense_update(rows, cols, nnz):
    """Masked-dense on the GPU (masked_dense: torch.topk over the dense |W| and dense random scores,
    Adam state masked), best of 2 after a warm-up."""
    update, refresh = masked_dense(rows, cols, nnz, device=DEV)
    t = best_update_time(update, refresh, sync=torch.cuda.synchronize, repeat=2)
    del update, refresh
    torch.cuda.empty_cache()
    return t


def cuda_rigl(rows, cols, nnz, M, dense=True, method="exact"):
    w = cuda_weight(rows, cols, nnz)
    g = torch.Generator(device=DEV).manual_seed(0)
    G = torch.randn(rows, M, generator=g, device=DEV)
    X = torch.randn(cols, M, generator=g, device=DEV)
    k = int(FRACTION * nnz)
    out = {}
    t_sparse = cuda_sync_time(lambda: out.update(r=gradient_growth(w.row_ptr, w.col_idx, G, X, k, method=method)),
                              repeat=2)
    assert out["r"][0].numel() == k and out["r"][0].is_cuda
    t_dense = None
    if dense:
        row, col, _ = w.coo()

        def dense_fn():
            D = (G @ X.t()).abs_()
            D[row, col] = -1.0
            return torch.topk(D.view(-1), k, sorted=False).indices

        t_dense = cuda_sync_time(dense_fn, repeat=2)
    del w, G, X, out
    torch.cuda.empty_cache()
    return t_sparse, t_dense, k


def main_cuda(args):
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA device")
    name = torch.cuda.get_device_name(0)
    gpu = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    out = results_path(args.out, f"topology_{gpu}.md")
    announce(f"Topology update benchmark ({name})", CUDA_UPDATE_COLUMNS, out)
    header = [
        f"# Topology update benchmark ({name})", "",
        f"- machine: {machine()}; {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB of GPU memory",
        f"- one update drops {FRACTION:.0%} of the weights and regrows as many at uniformly random empty positions, "
        "remaps the gradient and Adam's two moments and rebuilds the transposed index, all on the device (topology ops: torch "
        "primitives of sparse_engine.kernels.topology_torch); consecutive updates, each on the pattern the one before "
        "left (no reset, no copy; the values are redrawn in place between them, untimed); best of 3 after a warm-up, "
        "synchronized between phases. Masked-dense: torch.topk over the dense |W| and dense random scores, Adam state "
        "masked, on its own evolving mask; best of 2 after a warm-up. "
        "Goal (issue 11): SET prune + regrow of 100M nnz <= 50 ms on an H100.", ""]
    rows_out = []

    def write():
        write_text(out, "\n".join(header + rows_out) + "\n", args.copy_to)

    t_start = time.perf_counter()
    status = 0

    def failed(what, exc) -> str:
        nonlocal status
        status = 1
        print(f"{what}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        torch.cuda.empty_cache()
        return f"fails: {type(exc).__name__}: " + (str(exc).splitlines() or [""])[0][:80].replace("|", "/")

    rows_out += ["| " + " | ".join(CUDA_UPDATE_COLUMNS) + " |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for mode, r, c, z in CUDA_UPDATE_CASES:
        if time.perf_counter() - t_start > args.budget_s:
            rows_out.append(f"| {mode} | {r} x {c} | {z:,} | not run (budget of {args.budget_s:.0f} s spent) ||||")
            print(rows_out[-1], flush=True)
            continue
        with cell(f"{mode} prune + random regrow, {r:,} x {c:,}, nnz {z:,}") as progress:
            torch.cuda.reset_peak_memory_stats()
            try:
                t, ph, peak = cuda_sparse_update(r, c, z, mode)
            except (RuntimeError, ValueError, TypeError, AssertionError) as exc:  # OOM is a RuntimeError
                progress.result = (f"| {mode} prune + random regrow | {r:,} x {c:,} | {z:,} | "
                                   f"{failed(f'{mode} {r}x{c}', exc)} | | | |")
            else:
                need = r * c * 4 * 6  # W, |W|, scores, two Adam moments, topk work
                dense_s, ratio = (f"n/a (needs ~{need / 2**30:.0f} GiB)", "-") if mode == "magnitude" else ("-", "-")
                if mode == "magnitude" and need < 0.8 * free_bytes():
                    try:
                        td = cuda_dense_update(r, c, z)
                        dense_s, ratio = f"{td * 1e3:.1f}", f"{td / t:.1f}x"
                    except RuntimeError as exc:
                        dense_s = failed(f"masked-dense {r}x{c}", exc)
                progress.result = (f"| {mode} prune + random regrow | {r:,} x {c:,} | {z:,} | {t * 1e3:.1f} "
                                   f"({phases(ph, 1e3)}) | {peak / 2**30:.1f} | {dense_s} | {ratio} |")
        rows_out.append(progress.result)
        write()
    rows_out += ["", "RigL growth (top-k |G X^T| at empty positions, k = 30% of nnz), M = batch columns:", "",
                 "| " + " | ".join(CUDA_RIGL_COLUMNS) + " |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    announce_columns(CUDA_RIGL_COLUMNS)
    for method, r, z, M in CUDA_RIGL_CASES:
        if time.perf_counter() - t_start > args.budget_s:
            rows_out.append(f"| {method} | {r} x {r} | {z:,} | {M} | not run (budget spent) |||")
            print(rows_out[-1], flush=True)
            continue
        dense = method == "exact" and r * r * 4 * 2 < 0.8 * free_bytes()
        label = "exact, tiled" if method == "exact" else "sampled (8k candidates)"
        with cell(f"RigL {label}, {r:,} x {r:,}, nnz {z:,}") as progress:
            try:
                ts, td, k = cuda_rigl(r, r, z, M, dense=dense, method=method)
            except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
                progress.result = (f"| {label} | {r:,} x {r:,} | {z:,} | {M} | {failed(f'RigL {method} {r}', exc)} "
                                   "| | |")
            else:
                progress.result = (f"| {label} | {r:,} x {r:,} | {z:,} | {M} | {ts * 1e3:.1f} | "
                                   f"{'-' if td is None else f'{td * 1e3:.1f}'} | "
                                   f"{'-' if td is None else f'{td / ts:.1f}x'} |")
        rows_out.append(progress.result)
        write()
    write()
    finish(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
