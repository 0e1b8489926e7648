"""One training step (forward + backward) of a recurrent layer, or one call under ``torch.no_grad``
(``inference``: a sampler's step, an evaluation), ours against what users compare it with: masked-dense
(``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` whose weights are multiplied by a fixed mask before every step,
as sparselearning and Selfish-RNN do; cuDNN on a GPU) and a loop of ``torch.sparse`` CSR products.
``sparse-engine bench --model`` prints one table of the three (:func:`step_bench`);
benchmarks/bench_rnn.py builds its tables from :func:`measure` and :func:`run_child`.

Each method runs in a process of its own (``python -m sparse_engine.runs.step_bench --child ...``),
so its peak memory is its own and a failure (out of memory, cuDNN) is a cell of the table, not the
end of the run. Ours runs first, so a baseline that takes its whole timeout cannot leave ours
unmeasured. On a GPU each step is timed with CUDA events recorded around it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

#: the masked-dense and torch.sparse baselines by cell; ours is SparseLSTM / SparseGRU / SparseRNN
CELLS = ("LSTM", "GRU", "RNN")
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
METHODS = ("sparse_engine", "sparse_engine_composed", "sparse_engine_per_step", "sparse_engine_persistent",
           "sparse_engine_persistent_l2", "sparse_engine_persistent_split", "sparse_engine_dense", "masked_dense",
           "torch_sparse")
LABELS = {"sparse_engine": "ours", "sparse_engine_composed": "ours, composed step",
          "sparse_engine_per_step": "ours, per step",
          "sparse_engine_persistent": "ours, persistent",
          "sparse_engine_persistent_l2": "ours, persistent, W_hh not staged",
          "sparse_engine_persistent_split": "ours, persistent, split rows", "sparse_engine_dense": "ours, dense",
          "masked_dense": "masked-dense",
          "torch_sparse": "torch.sparse CSR"}


# ------------------------------------------------------------------ the torch.sparse loops
def _lstm_torch_sparse(W_ih, W_hh, b, x, H):
    """The LSTM written with torch.sparse CSR products (autograd through torch.sparse.mm)."""
    T, B = x.shape[:2]
    gx = torch.sparse.mm(W_ih, x.reshape(T * B, -1).t()).view(4 * H, T, B)
    h = c = x.new_zeros(H, B)
    outs = []
    for t in range(T):
        g = gx[:, t] + torch.sparse.mm(W_hh, h) + b[:, None]
        i, f, gg, o = g.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs)


def _gru_torch_sparse(W_ih, W_hh, b, x, H):
    """The GRU (torch's gate order r, z, n; b_hn inside r * (...)) with torch.sparse CSR products."""
    T, B = x.shape[:2]
    gx = (torch.sparse.mm(W_ih, x.reshape(T * B, -1).t()) + b[:3 * H, None]).view(3 * H, T, B)
    h = x.new_zeros(H, B)
    outs = []
    for t in range(T):
        gh = torch.sparse.mm(W_hh, h) + b[3 * H:, None]
        xr, xz, xn = gx[:, t].chunk(3)
        hr, hz, hn = gh.chunk(3)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = n + z * (h - n)
        outs.append(h)
    return torch.stack(outs)


def _rnn_torch_sparse(W_ih, W_hh, b, x, H):
    """The tanh RNN with torch.sparse CSR products."""
    T, B = x.shape[:2]
    gx = torch.sparse.mm(W_ih, x.reshape(T * B, -1).t()).view(H, T, B)
    h = x.new_zeros(H, B)
    outs = []
    for t in range(T):
        h = torch.tanh(gx[:, t] + torch.sparse.mm(W_hh, h) + b[:, None])
        outs.append(h)
    return torch.stack(outs)


TORCH_SPARSE_LOOPS = {"LSTM": _lstm_torch_sparse, "GRU": _gru_torch_sparse, "RNN": _rnn_torch_sparse}
#: the bias length of each loop (the GRU keeps b_hn apart)
BIAS_ROWS = {"LSTM": 4, "GRU": 6, "RNN": 1}


# ------------------------------------------------------------------ one measurement
def redraw_on_device(weights, density: float, dev) -> None:
    """Gives each SparseWeight a uniformly random pattern of round(density * rows * cols) entries
    drawn on ``dev``: SparseWeight.random draws on the host, minutes per weight at 100M+ entries,
    which would bound a large layer by host time instead of device memory."""
    from ..sparse.patterns import random_csr_on

    for i, w in enumerate(weights):
        rows, cols = w.shape
        w.set_pattern(*random_csr_on(rows, cols, int(round(density * rows * cols)), dev, seed=i), validate=False)


def compute_path(model, cfg, w_hh) -> str:
    """The path a SparseLSTM/GRU/RNN forward takes: "dense", "persistent" (the whole sequence in one
    op each way) or the sparse recurrent step's kind."""
    from ..recurrent import persistent
    from ..recurrent.cell_steps import fused_steps

    if model._dense_now(w_hh.values, batch=cfg.batch, steps=cfg.steps):
        return "dense"
    if persistent.applies(cfg, w_hh.values):
        return "persistent"
    forward, backward = fused_steps(cfg, w_hh.values)
    if forward == backward:
        return "fused" if forward else "composed"
    return f"{'fused' if forward else 'composed'} fwd, {'fused' if backward else 'composed'} bwd"


def without_cudnn_if_it_fails(step, params):
    """(step, path): the masked-dense step as it is, or, where its first run fails (cuDNN's LSTM at
    hidden 16,384 on torch 2.11: "Storage size calculation overflowed"), the same step with cuDNN
    off (torch's own recurrence, the same dense products), so the size still has a masked-dense
    baseline; the path names it. An error that stays with cuDNN off (out of memory) propagates."""
    try:
        step()
        return step, None
    except RuntimeError as e:
        first = str(e).splitlines()[0][:80]
    finally:
        for p in params:
            p.grad = None

    def without_cudnn():
        with torch.backends.cudnn.flags(enabled=False):
            step()
    without_cudnn()  # fails as the whole cell does if torch's own recurrence cannot run either
    for p in params:
        p.grad = None
    print(f"masked-dense: cuDNN failed ({first}); timed with cuDNN off", file=sys.stderr)
    return without_cudnn, "cuDNN off: it failed"


def _ours(method, cell, H, density, dev, compute, T, B, inference=False):
    import sparse_engine as se
    from ..recurrent.compute_paths import use_persistent
    from ..recurrent.config import Config

    if dev.type == "cuda" and not se.kernels.HAS_CUDA_KERNELS:
        return None
    module = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU, "RNN": se.nn.SparseRNN}[cell]
    fused = method != "sparse_engine_composed"
    if method.startswith("sparse_engine_persistent"):
        compute = "persistent"
    if method == "sparse_engine_dense":  # cuDNN's recurrence on the materialised matrices, within the budget
        compute = "dense"
    if method == "sparse_engine_per_step":  # the sparse kernels one step at a time
        compute = "sparse"
    if method == "sparse_engine_persistent_l2" and dev.type == "cuda":  # W_hh through L2 every step (the
        se._C._set_sequence_stage_bytes(0)                                # cell's own process: no reset)
    if method == "sparse_engine_persistent_split" and dev.type == "cuda":  # a row's entries split across a
        se._C._set_sequence_split(0)                                       # warp's lanes by the rule
    if dev.type == "cuda":  # a placeholder pattern (one entry per 1000 rows), redrawn on the device
        model = module(H, H, density=1e-3 / H, fused=fused, compute=compute).to(dev)
        redraw_on_device([m for m in model.modules() if isinstance(m, se.SparseWeight)], density, dev)
    else:
        model = module(H, H, density=density, fused=fused, compute=compute)
    w_hh = model.weight_hh_l0
    persistent = use_persistent(model.compute, w_hh, T, B, backward=not inference)
    with torch.set_grad_enabled(not inference):  # the module asks its rule with gradient mode's word
        path = compute_path(model, Config("RNN_TANH" if cell == "RNN" else cell, H, B, T, idx_hh=w_hh.index,
                                          fused=model.fused, persistent=persistent), w_hh)
    nnz = sum(m.nnz for m in model.modules() if isinstance(m, se.SparseWeight))
    return model, list(model.parameters()), nnz, path


def training_step(method: str, cell: str, H: int, density: float, device: str, compute: str | None = None,
                  T: int = 35, B: int = 20, inference: bool = False):
    """One (method, cell, size)'s training step (forward + backward of ``y.sum()``, one layer, input
    size = hidden, both matrices at ``density``; with ``inference`` the forward alone, under
    ``torch.no_grad`` and in eval mode): ``(step, clear_grads, nnz, path)``, or None where
    our CUDA kernels are not built. :func:`measure` times it; ``benchmarks/profile_rnn_step.py``
    profiles it."""
    torch.manual_seed(0)
    dev = torch.device(device)
    x = torch.randn(T, B, H, device=dev)
    path = None
    if method.startswith("sparse_engine"):
        built = _ours(method, cell, H, density, dev, compute, T, B, inference)
        if built is None:
            return None
        model, params, nnz, path = built

        def forward():
            return model(x)[0]
    elif method == "masked_dense":
        model = getattr(torch.nn, cell)(H, H, device=dev)  # initialised on the device: no host copy of G*H x H
        masks = [(torch.rand(w.shape, device=dev) < density) for w in (model.weight_ih_l0, model.weight_hh_l0)]
        params = list(model.parameters())

        def forward():
            with torch.no_grad():
                for w, m in zip((model.weight_ih_l0, model.weight_hh_l0), masks):
                    w.mul_(m)
            return model(x)[0]
        nnz = sum(int(m.sum()) for m in masks)
    elif method == "torch_sparse":
        from ..sparse import SparseWeight

        ws = [SparseWeight.random(GATES[cell] * H, H, nnz=1 if dev.type == "cuda" else None,
                                  density=None if dev.type == "cuda" else density).to(dev) for _ in range(2)]
        if dev.type == "cuda":
            redraw_on_device(ws, density, dev)
        w_ih, w_hh = (w.to_torch_sparse_csr().detach().requires_grad_(True) for w in ws)
        del ws
        b = torch.zeros(BIAS_ROWS[cell] * H, device=dev, requires_grad=True)
        params = [w_ih, w_hh, b]
        loop = TORCH_SPARSE_LOOPS[cell]

        def forward():
            return loop(w_ih, w_hh, b, x, H)
        nnz = int(w_ih._nnz() + w_hh._nnz())
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")

    def clear_grads():
        for p in params:
            p.grad = None
    if inference:
        if method != "torch_sparse":
            model.eval()

        def step():
            with torch.no_grad():
                forward()
    else:
        def step():
            forward().sum().backward()
    if method == "masked_dense" and dev.type == "cuda":
        step, path = without_cudnn_if_it_fails(step, params)
    return step, clear_grads, nnz, path


def measure(method: str, cell: str, H: int, density: float, device: str, repeats: int, warmup: int,
            compute: str | None = None, T: int = 35, B: int = 20, inference: bool = False) -> dict:
    """One (method, cell, size): the median of ``repeats`` training steps (:func:`training_step`; calls
    without a gradient with ``inference``) after ``warmup``: ``{"status": "ok", "ms", "peak_bytes", "nnz",
    "path", "load"}`` or ``{"status": why not}``."""
    from ..runtime.timing import cuda_times_of, peak_rss_bytes, times_of

    dev = torch.device(device)
    built = training_step(method, cell, H, density, device, compute, T, B, inference)
    if built is None:
        return {"status": "no CUDA kernels"}
    step, clear_grads, nnz, path = built
    for _ in range(warmup):
        step()
        clear_grads()
    if dev.type == "cuda":
        # CUDA events around each step on the current stream, after a synchronize (nothing earlier counts)
        torch.cuda.reset_peak_memory_stats()
        times = cuda_times_of(step, repeats, warmup=0, setup=clear_grads, sync_each=True)
    else:
        times = times_of(step, repeats, setup=clear_grads)
    times.sort()
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else peak_rss_bytes()
    return {"status": "ok", "ms": 1e3 * times[len(times) // 2], "peak_bytes": peak, "nnz": nnz, "path": path,
            "load": os.getloadavg()[0]}


def run_child(method, cell, H, density, device, repeats, warmup, timeout, compute=None, T: int = 35,
              B: int = 20, inference: bool = False) -> dict:
    """:func:`measure` in a fresh interpreter (its peak memory its own, a crash a status)."""
    cmd = [sys.executable, "-m", __name__, "--child", method, cell, str(H), str(density), device, str(repeats),
           str(warmup), compute or "default", str(T), str(B), "inference" if inference else "training"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout > {timeout}s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        err = (out.stderr.strip().splitlines() or ["killed"])[-1]
        return {"status": "fails", "error": err[:160]}
    return json.loads(lines[-1])


def run_order(methods) -> list[str]:
    """The methods in the order they run: ours (sparse_engine, then its composed step) before the
    baselines."""
    ours = [m for m in methods if m.startswith("sparse_engine")]
    return ours + [m for m in methods if m not in ours]


def cell_text(r: dict) -> str:
    """A measurement as a table cell: "12.3 ms, 0.45 GiB (fused)", or why there is none."""
    if r.get("status") != "ok":
        return r.get("status", "fails")
    path = f" ({r['path']})" if r.get("path") else ""
    return f"{r['ms']:.1f} ms, {r['peak_bytes'] / 2**30:.2f} GiB{path}"


def speedup(base: dict, ours: dict) -> str:
    """Baseline time over ours ("2.50x": ours is faster), or "-" where either has no time."""
    if base.get("status") != "ok" or ours.get("status") != "ok":
        return "-"
    return f"{base['ms'] / ours['ms']:.2f}x"


# ------------------------------------------------------------------ sparse-engine bench --model
def step_bench(cell: str, hidden: int, density: float, device: str, T: int, B: int, repeats: int,
               timeout: int = 900) -> dict:
    """``sparse-engine bench --model``: ours (the path it took), masked-dense and torch.sparse on one
    size, each line printed as it ends, then a table with the ratios; returns {method: measurement}."""
    from rich.console import Console
    from rich.table import Table

    methods = ["sparse_engine", "masked_dense", "torch_sparse"]
    title = (f"{cell} training step (forward + backward), hidden {hidden:,}, density {density:g}, T={T}, B={B}, "
             f"{device}, {torch.get_num_threads()} threads")
    print(title, flush=True)
    results = {}
    for method in run_order(methods):
        print(f"  {LABELS[method]} ...", flush=True)
        results[method] = run_child(method, cell, hidden, density, device, repeats, 1, timeout, T=T, B=B)
        r = results[method]
        print(f"  {LABELS[method]}: {cell_text(r)}" + (f" ({r['error']})" if r.get("error") else ""), flush=True)
    ours = results["sparse_engine"]
    table = Table(title=title)
    for col in ("method", "time, peak memory (path)", "ours faster by"):
        table.add_column(col, justify="right")
    for method in methods:
        table.add_row(LABELS[method], cell_text(results[method]),
                      "" if method == "sparse_engine" else speedup(results[method], ours))
    Console().print(table)
    print("Median of the steps; peak memory of each method's own process; ratios: baseline time / ours. "
          "The full tables: python benchmarks/bench_rnn.py.")
    return results


def main(argv=None) -> None:
    """The child process of :func:`run_child`: one :func:`measure`, printed as JSON."""
    import argparse

    p = argparse.ArgumentParser(description="one measurement of sparse_engine.runs.step_bench (run by run_child)")
    p.add_argument("--child", nargs=11, required=True,
                   metavar=("METHOD", "CELL", "H", "DENSITY", "DEVICE", "REPEATS", "WARMUP", "COMPUTE", "T", "B",
                            "CASE"))
    m, cell, H, d, dev, rep, warm, comp, T, B, case = p.parse_args(argv).child
    print(json.dumps(measure(m, cell, int(H), float(d), dev, int(rep), int(warm),
                             None if comp == "default" else comp, int(T), int(B), case == "inference")))


if __name__ == "__main__":
    main()
