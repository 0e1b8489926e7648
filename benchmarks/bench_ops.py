"""CPU benchmark of spmm, spmm_t, sddmm and spmm forward+backward.

Same inputs, same run: ours vs torch.sparse.mm on CSR (MKL), scipy.sparse, dense and
masked-dense (W * mask then matmul; only where N x N fits), plus PyG's torch_sparse when it
is installed. Prints a table of milliseconds and speed-up ratios (baseline / ours) and
writes benchmarks/results/cpu_ops.md.

    python benchmarks/bench_ops.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, ms, ratio, timeit, write_result  # noqa: E402

from sparse_engine import SparseWeight, ops  # noqa: E402

CASES = [(4096, 0.05), (16384, 0.01), (65536, 0.001), (65536, 0.01)]
DENSE_LIMIT = 16384  # N x N float32 dense/masked-dense baselines only up to this size


def bench_case(n: int, density: float, B: int) -> list[list]:
    g = torch.Generator().manual_seed(0)
    W = SparseWeight.random(n, n, density, generator=g)
    X = torch.randn(n, B, generator=g)
    G = torch.randn(n, B, generator=g)
    csr = W.to_torch_sparse_csr()
    csr_t = csr.t().to_sparse_csr()
    sci = W.to_scipy()
    Xn, Gn = X.numpy(), G.numpy()
    dense = W.to_dense() if n <= DENSE_LIMIT else None
    mask = dense != 0 if dense is not None else None
    row, col, _ = W.coo()

    def ours_fwd_bwd():
        v = W.values
        x = X.requires_grad_()
        y = ops.spmm(W, x)
        y.backward(G)
        v.grad = None
        x.grad = None

    csr_v = W.values.detach().clone().requires_grad_()

    def torch_sparse_fwd_bwd():
        w = torch.sparse_csr_tensor(W.row_ptr, W.col_idx.long(), csr_v, size=W.shape)
        x = X.detach().requires_grad_()
        torch.sparse.mm(w, x).backward(G)
        csr_v.grad = None

    dense_param = dense.clone().requires_grad_() if dense is not None else None

    def masked_dense_fwd_bwd():
        x = X.detach().requires_grad_()
        ((dense_param * mask) @ x).backward(G)
        dense_param.grad = None

    results = {
        "spmm": {
            "ours": lambda: ops.spmm(W, X),
            "torch.sparse CSR": lambda: torch.sparse.mm(csr, X),
            "scipy": lambda: sci @ Xn,
            "dense": (lambda: dense @ X) if dense is not None else None,
            "masked-dense": (lambda: (dense * mask) @ X) if dense is not None else None,
        },
        "spmm_t": {
            "ours": lambda: ops.spmm_t(W, G),
            "torch.sparse CSR": lambda: torch.sparse.mm(csr_t, G),
            "scipy": lambda: sci.T @ Gn,
            "dense": (lambda: dense.T @ G) if dense is not None else None,
            "masked-dense": (lambda: (dense * mask).T @ G) if dense is not None else None,
        },
        "sddmm": {
            "ours": lambda: ops.sddmm(W, G, X),
            "torch.sparse CSR": lambda: torch.sparse.sampled_addmm(csr, G, X.T, beta=0.0),
            "scipy": lambda: (Gn[sci.tocoo().row] * Xn[sci.indices]).sum(1),
            "dense": (lambda: (G @ X.T)[row, col]) if dense is not None else None,
            "masked-dense": (lambda: (G @ X.T) * mask) if dense is not None else None,
        },
        "fwd+bwd": {
            "ours": ours_fwd_bwd,
            # torch.sparse's backward through a CSR weight takes O(N^2) memory: at N=65,536 and
            # 1% it was killed for lack of memory on a 24 GiB machine, so only up to DENSE_LIMIT
            "torch.sparse CSR": torch_sparse_fwd_bwd if n <= DENSE_LIMIT else None,
            "scipy": None,
            "dense": None,
            "masked-dense": masked_dense_fwd_bwd if dense is not None else None,
        },
    }
    try:
        import torch_sparse  # noqa: F401

        ts = W.to_torch_sparse()
        results["spmm"]["torch_sparse (PyG)"] = lambda: ts @ X
    except ImportError:
        pass
    rows = []
    for op, impls in results.items():
        times = {name: (timeit(fn) if fn is not None else None) for name, fn in impls.items()}
        ours = times.pop("ours")
        for name, t in times.items():
            if t is not None:
                rows.append([f"{n:,}", f"{density:.1%}", B, op, ms(ours), name, ms(t), ratio(t, ours)])
                print(*rows[-1], sep="\t", flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="only the two smaller shapes")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    cases = CASES[:2] if args.quick else CASES
    rows = []
    for n, d in cases:
        rows += bench_case(n, d, args.batch)
    header = ["N", "density", "B", "op", "ours ms", "baseline", "baseline ms", "speed-up"]
    notes = ("speed-up = baseline time / our time; > 1 means we are faster. Dense and masked-dense "
             f"run only up to N={DENSE_LIMIT:,}, and so does torch.sparse forward+backward (its backward "
             "through a CSR weight needs O(N^2) memory and is killed at N=65,536, 1%). The spmm_t "
             "baseline gets a transposed CSR built once outside the timing, values included; our "
             "spmm_t reads the current values through the transposed index on every call, as "
             "training needs.\n\n")
    path = write_result("cpu_ops.md", "CPU operators: ours vs baselines (same run)",
                        notes + markdown_table(header, rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
