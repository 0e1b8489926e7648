"""Bit-equality of the CPU kernels across builds and thread counts: runs every CPU op family
(spmm, spmm_t by gather and by scatter, sddmm, transpose_index, the fused recurrent steps forward
and backward, the topology ops, the densify ops, the dense GRU sequence, the analysis kernels,
relu_dropout and sgd_step) on fixed inputs at 1 and at 2 threads, and saves every output; a
second call compares two such files bit for bit. Written for the move of the kernels from OpenMP
to the library's thread pool (csrc/cpu/thread_pool.h): run it on the build before the change
(PYTHONPATH=<its checkout>) and after, then compare.

    python benchmarks/check_bits_pool.py save /tmp/after.pt
    PYTHONPATH=/tmp/base_pool python benchmarks/check_bits_pool.py save /tmp/before.pt
    python benchmarks/check_bits_pool.py compare /tmp/before.pt /tmp/after.pt

``save --torch-first`` imports torch before sparse_engine (before the pool that changed the
OpenMP wait policy and so the old kernels' parallel bound, 2^15 instead of 2^19).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def outputs(threads: int) -> dict:
    """name -> output tensor of every case, on ``threads`` threads."""
    import torch
    from sparse_engine import SparseWeight, ops
    from sparse_engine.testing import random_weight

    sp = torch.ops.sparse_engine
    torch.set_num_threads(threads)
    out: dict = {}

    def put(name, value):
        if isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                put(f"{name}[{i}]", v)
        elif isinstance(value, torch.Tensor):
            out[name] = value.detach().clone()
        else:
            out[name] = torch.tensor(value)

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    # the products: small (one thread below any bound), mid (2^15..2^19 work) and large shapes
    shapes = [(300, 200, 0.05), (700, 500, 0.1), (4096, 4096, 0.01), (2200, 1100, 0.9)]
    for si, (rows, cols, density) in enumerate(shapes):
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            if si == 3 and dtype != torch.float32:
                continue  # the scatter shape: float32 is enough (2.2M entries)
            W = random_weight(rows, cols, density, empty_rows=5, dtype=dtype, generator=gen(si))
            for B in (1, 20, 33):
                g = gen(100 * si + B)
                X = torch.randn(cols, B, generator=g).to(dtype)
                G = torch.randn(rows, B, generator=g).to(dtype)
                key = f"{rows}x{cols}/{density}/{dtype}/B{B}"
                with torch.no_grad():
                    put(f"spmm {key}", ops.spmm(W, X))
                    put(f"spmm_t {key}", ops.spmm_t(W, G))
                    put(f"spmm_t values_t {key}", ops.spmm_t(W, G, ops.transposed_values(W)))
                    put(f"sddmm {key}", ops.sddmm(W, G, X))
            put(f"transpose_index {rows}x{cols}", sp.transpose_index(W.row_ptr, W.col_idx, cols))

    # spmm_t's scatter at B = 1 between 2^15 and 2^19 work (one part now; the old torch-first build split it)
    W = random_weight(3000, 3000, 0.01, dtype=torch.float32, generator=gen(7))
    put("spmm_t scatter B1 mid", ops.spmm_t(W, torch.randn(3000, 1, generator=gen(8))))

    # fused recurrent steps, forward and backward (test_rnn_step.py's cases, at two sizes)
    for H, B, density in ((300, 20, 0.1), (300, 1, 0.1), (2048, 32, 0.02)):
        g = gen(H + B)
        rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float32)  # noqa: E731
        h, c, dh, dc = rnd(H, B), rnd(H, B), rnd(H, B), rnd(H, B)
        lstm = SparseWeight.random(4 * H, H, density, generator=gen(1))
        gru = SparseWeight.random(3 * H, H, density, generator=gen(2))
        rnn = SparseWeight.random(H, H, density, generator=gen(3))
        acts4 = torch.rand(4 * H, B, generator=g)
        key = f"H{H} B{B}"
        put(f"lstm_step {key}", sp.lstm_step(*lstm.index, lstm.values.detach(), rnd(4 * H, B), h, c))
        put(f"lstm_step_backward {key}", sp.lstm_step_backward(*lstm.index, lstm.values.detach(), acts4, c, c, dh, dc))
        put(f"gru_step {key}", sp.gru_step(*gru.index, gru.values.detach(), rnd(3 * H, B), h, rnd(3 * H)))
        put(f"gru_step_backward {key}", sp.gru_step_backward(*gru.index, gru.values.detach(), acts4, h, dh))
        put(f"rnn_step {key}", sp.rnn_step(*rnn.index, rnn.values.detach(), rnd(H, B), h, False))
        put(f"rnn_step_backward {key}", sp.rnn_step_backward(*rnn.index, rnn.values.detach(), torch.tanh(h), dh, True))
        put(f"ctrnn_step {key}", sp.ctrnn_step(*rnn.index, rnn.values.detach(), rnd(H, B), h, 0.1, 1.0))
        put(f"ctrnn_step_backward {key}", sp.ctrnn_step_backward(*rnn.index, rnn.values.detach(), acts4[:H], dh, 0.1,
                                                                1.0))

    # topology (test_topology.py's case)
    g = gen(3)
    n = 200_000
    scores = torch.randn(n, generator=g)
    W = random_weight(1000, 800, 0.1, empty_rows=10, dtype=torch.float32, generator=g)
    keep = torch.rand(W.nnz, generator=g) < 0.7
    G, X = torch.randn(1000, 16, generator=g), torch.randn(800, 16, generator=g)
    put("select_smallest", sp.select_smallest(scores, n // 3))
    put("set_prune", sp.set_prune(scores, 0.3))
    put("set_prune ties", sp.set_prune((scores * 4).round(), 0.3))
    row_ptr, col_idx, values, kept_pos = sp.compact(W.row_ptr, W.col_idx, W.values.detach(), keep)
    put("compact", (row_ptr, col_idx, values, kept_pos))
    new_row, new_col = sp.random_empty(row_ptr, col_idx, 800, 20_000, 7)
    put("random_empty", (new_row, new_col))
    merged = sp.merge(row_ptr, col_idx, values, 800, new_row, new_col, torch.randn(new_row.numel(), generator=g))
    put("merge", merged)
    origin = sp.remap_index(kept_pos, merged[3], merged[1].numel())
    put("remap_index", origin)
    state = torch.randn(W.nnz, 3, generator=g)
    put("gather_or_zero", sp.gather_or_zero(state, origin))
    rew = sp.rewire(W.row_ptr, W.col_idx, W.values.detach(), 800, keep, None, None, None, None, 20_000, 7, 0, 0, 0,
                    False, [state, state[:, 0]])
    put("rewire", (*rew[:8], *rew[8]))
    rew = sp.rewire(W.row_ptr, W.col_idx, W.values.detach(), 800, keep, None, None, G, X, 20_000, 7, 128, 128, 0,
                    True, [state])
    put("rewire by gradient", (*rew[:8], *rew[8]))
    rows = torch.repeat_interleave(torch.arange(1000), W.row_ptr.diff())
    put("coo_dot", sp.coo_dot(rows, W.col_idx, G, X))
    put("grad_topk", sp.grad_topk(W.row_ptr, W.col_idx, G, X, 5000, 256, 256))

    # densify
    W = random_weight(1500, 1200, 0.3, dtype=torch.float32, generator=gen(11))
    bits = sp.pattern_bits(W.row_ptr, W.col_idx, 1200)
    put("pattern_bits", bits)
    dense = torch.zeros(1500, 1200)
    sp.expand_bits(W.row_ptr, bits, W.values.detach(), dense)
    put("expand_bits", dense)
    put("compress_bits", sp.compress_bits(W.row_ptr, bits, dense * 2))
    dense2 = torch.zeros(1500, 1200)
    sp.scatter_csr(W.row_ptr, W.col_idx, W.values.detach(), dense2)
    put("scatter_csr", dense2)
    put("gather_csr", sp.gather_csr(W.row_ptr, W.col_idx, dense2 * 3))

    # the dense GRU sequence, forward and backward
    T, B, H = 6, 64, 256
    g = gen(12)
    gx, h0 = torch.randn(T, B, 3 * H, generator=g), torch.randn(B, H, generator=g)
    w_hh, b_hh = torch.randn(3 * H, H, generator=g) * 0.1, torch.randn(3 * H, generator=g)
    y, acts = sp.gru_sequence(gx, h0, w_hh, b_hh, False)
    put("gru_sequence", (y, acts))
    put("gru_sequence_backward", sp.gru_sequence_backward(torch.randn(T, B, H, generator=g), acts, y, h0, w_hh, False,
                                                          True))

    # analysis
    A = random_weight(3000, 3000, 0.01, dtype=torch.float32, generator=gen(13))
    keep_off_diag = A.col_idx.long() != torch.repeat_interleave(torch.arange(3000), A.row_ptr.diff())
    put("signed_triad_census", sp.signed_triad_census(A.row_ptr, A.col_idx, A.values.detach()))
    nodes, pos, types = sp.transitive_semicycles(A.row_ptr, A.col_idx, A.values.detach(), 1 << 9)
    order = torch.argsort(nodes[:, 0] * 9e12 + nodes[:, 1] * 3e6 + nodes[:, 2].double(), stable=True)
    put("transitive_semicycles (sorted)", (nodes[order], pos[order], types[order]))
    src = torch.repeat_interleave(torch.arange(3000, dtype=torch.int32), A.row_ptr.diff())[keep_off_diag]
    dst = A.col_idx[keep_off_diag]
    put("degree_preserving_swaps", sp.degree_preserving_swaps(src, dst, 3000, 200_000, torch.tensor([1, 2, 3])))

    # SET-MLP's elementwise passes
    z = torch.randn(3_000_000, generator=gen(14))
    sp.relu_dropout(z, 0.3, 5)
    put("relu_dropout", z)
    p, buf, grad = (torch.randn(3_000_000, generator=gen(15 + i)) for i in range(3))
    sp.sgd_step(p, buf, grad, 0.01, 0.9, 1e-4)
    put("sgd_step", (p, buf))
    return out


def save(path: str, torch_first: bool) -> None:
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.append(root)  # after PYTHONPATH: a build given there comes first
    if torch_first:
        import torch  # noqa: F401
    import sparse_engine  # noqa: F401
    import torch

    from sparse_engine import _C
    import sparse_engine as se
    result = {"meta": {"package": se.__file__, "parallel_work": _C._parallel_work(),
                       "torch_first": torch_first},
              1: outputs(1), 2: outputs(2)}
    torch.save(result, path)
    print(f"{path}: {len(result[1])} outputs, from {se.__file__}, parallel_work {_C._parallel_work()}")


def compare(paths: list[str]) -> int:
    import sparse_engine  # noqa: F401
    import torch

    runs = [torch.load(p, weights_only=False) for p in paths]
    for p, r in zip(paths, runs):
        print(f"{p}: {r['meta']}")
    ref = runs[0][1]
    bad = 0
    for name in ref:
        for ri, run in enumerate(runs):
            for threads in (1, 2):
                if ri == 0 and threads == 1:
                    continue
                t = run[threads].get(name)
                same = t is not None and t.dtype == ref[name].dtype and t.shape == ref[name].shape and \
                    torch.equal(t.view(torch.uint8) if t.dtype.is_floating_point and t.numel() and t.is_contiguous()
                                else t, ref[name].view(torch.uint8) if t.dtype.is_floating_point and t.numel()
                                and ref[name].is_contiguous() else ref[name])
                if not same:
                    bad += 1
                    print(f"DIFFERENT: {name} ({paths[ri]}, {threads} threads)")
    total = len(ref) * (2 * len(runs) - 1)
    print(f"{total - bad} of {total} comparisons bitwise equal ({len(ref)} outputs; each file at 1 and 2 threads "
          f"against {paths[0]} at 1 thread)")
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("path")
    s.add_argument("--torch-first", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.cmd == "save":
        save(args.path, args.torch_first)
    else:
        sys.exit(compare(args.paths))


if __name__ == "__main__":
    main()
