"""Two builds of the extension timed against each other on the same cells, in processes of their own,
alternating (before, after, before, after, ...), so that a busy machine's drift falls on both.

A kernel change is judged by this, not by two runs of bench_ops at different times: this VM drifts
+-20% between processes. Each build is a copy of ``sparse_engine/_C*.so`` (made with
``python setup.py build_ext --inplace`` and copied aside); the script installs each in turn into the
package for its child process and puts the original back at the end.

Cells (``--cells``), each ``KIND:N:B``:

* ``sddmm:N:B``, ``spmm:N:B``, ``spmm_t:N:B``: a (4N x N) uniform pattern, 32 entries a row on average, an LSTM's
  W_ih or W_hh at N units (the recurrent modules' per-step products), float32; spmm_t given the values in
  column order; sddmm also times ``torch.sparse.sampled_addmm`` (MKL) in the "after" processes;
* ``lstm:N:B``, ``gru:N:B``: a SparseLSTM / SparseGRU of N units, input N, 32 entries a row, T = 10,
  forward and backward (the training step's recurrence, no optimizer).

Every cell's time is the median of the rounds' best-of-``--repeat`` calls. Correctness is not measured
here: the op tests check both builds' paths against float64.

    python benchmarks/ab_builds.py --before /tmp/before.so --after /tmp/after.so \\
        --cells sddmm:65536:20 lstm:65536:20 --out cpu_x_ab.md

``--out``: the results file (common.results_path's rule: a bare name is written in benchmarks/results/;
without it a fresh file under benchmarks/results/local/).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import announce, cell, finish, machine, markdown_table, ms, out_help, results_path, write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = "ab_builds.md"
KINDS = ("spmm", "spmm_t", "sddmm", "lstm", "gru")
PER_ROW = 32  # entries a row
STEPS = 10  # the models' T


def parse_cell(text: str) -> tuple[str, int, int]:
    kind, n, b = text.split(":")
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"cell kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if int(n) < 1 or int(b) < 1:
        raise argparse.ArgumentTypeError(f"N and B must be positive, got {n} and {b}")
    return kind, int(n), int(b)


def child(cells: list[str], repeat: int, threads: int, mkl: bool) -> dict:
    """Times of each cell in this process (the build installed now), seconds."""
    import sparse_engine  # noqa: F401  (before torch: the library's thread settings)
    import torch
    from sparse_engine import SparseWeight
    from sparse_engine.nn import SparseGRU, SparseLSTM
    from sparse_engine.recurrent.products import mm, mm_t, transposed, wgrad
    from sparse_engine.runtime.timing import best_of
    torch.set_num_threads(threads)
    out = {}
    for text in cells:
        kind, n, b = parse_cell(text)
        gen = torch.Generator().manual_seed(0)
        if kind in ("lstm", "gru"):
            torch.manual_seed(0)
            m = (SparseLSTM if kind == "lstm" else SparseGRU)(n, n, density=PER_ROW / n)
            x = torch.randn(STEPS, b, n, generator=gen)

            def step(m=m, x=x):
                m.zero_grad(set_to_none=True)
                m(x)[0].sum().backward()
            out[text] = best_of(step, repeat, warmup=1)
            continue
        w = SparseWeight.random(4 * n, n, nnz=4 * n * PER_ROW, generator=gen)
        idx, v = w.index, w.values.detach()
        x = torch.randn(n, b, generator=gen)
        g = torch.randn(4 * n, b, generator=gen)
        if kind == "spmm":
            out[text] = best_of(lambda: mm(v, idx, x), repeat, warmup=1)
        elif kind == "spmm_t":
            vt = transposed(v, idx)
            out[text] = best_of(lambda: mm_t(v, idx, g, vt), repeat, warmup=1)
        else:
            out[text] = best_of(lambda: wgrad(idx, g, x), repeat, warmup=1)
            if mkl:
                csr = w.to_torch_sparse_csr().detach()
                out[text + ":mkl"] = best_of(lambda: torch.sparse.sampled_addmm(csr, g, x.t(), beta=0.0), repeat,
                                             warmup=1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, help="the extension before the change (a copy of sparse_engine/_C*.so)")
    p.add_argument("--after", type=Path, help="the extension after it")
    p.add_argument("--cells", nargs="+", required=True, help="KIND:N:B, KIND one of " + ", ".join(KINDS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5, help="calls a cell per process (the best is kept)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    p.add_argument("--title", default="Two builds, before / after", help="the results file's title")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mkl", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for c in a.cells:
        try:
            parse_cell(c)
        except (ValueError, argparse.ArgumentTypeError) as e:
            p.error(f"--cells: {c!r}: {e} (expected KIND:N:B)")
    if a.child:
        print(json.dumps(child(a.cells, a.repeat, a.threads, a.mkl)))
        return 0
    for name in ("before", "after"):
        path = getattr(a, name)
        if path is None or not path.is_file():
            p.error(f"--{name}: expected a built extension file, got {path}")
    path = results_path(a.out, DEFAULT)
    columns = ["cell (KIND:N:B)", "before ms", "after ms", "before / after", "MKL ms", "x MKL (after)"]
    announce(a.title, columns, path)
    installed = next((ROOT / "sparse_engine").glob("_C*.so"))
    keep = installed.with_suffix(".so.ab-keep")
    shutil.copy2(installed, keep)

    def install(build: Path) -> None:
        """``build`` in the package, by a rename: a process that has the old file mapped (this one)
        keeps it intact."""
        part = installed.with_suffix(".so.ab-part")
        shutil.copy2(build, part)
        os.replace(part, installed)

    times = {"before": {}, "after": {}}
    loads = []
    try:
        for r in range(a.rounds):
            for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
                install(getattr(a, name))
                cmd = [sys.executable, __file__, "--child", "--cells", *a.cells, "--repeat", str(a.repeat),
                       "--threads", str(a.threads)] + (["--mkl"] if name == "after" else [])
                with cell(f"round {r + 1}, {name}") as c:
                    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                    c.result = ", ".join(f"{k} {t * 1e3:.2f} ms" for k, t in res.items())
                loads.append(os.getloadavg()[0])
                for k, t in res.items():
                    times[name].setdefault(k, []).append(t)
    finally:
        os.replace(keep, installed)
    rows = []
    for c in a.cells:
        before = statistics.median(times["before"][c])
        after = statistics.median(times["after"][c])
        mkl = times["after"].get(c + ":mkl")
        mkl_ms = statistics.median(mkl) if mkl else None
        rows.append([c, ms(before), ms(after), f"{before / after:.2f}x",
                     ms(mkl_ms) if mkl_ms else "-", f"{mkl_ms / after:.2f}x" if mkl_ms else "-"])
    text = (f"# {a.title}\n\nMachine: {machine()}\n\nbefore: {a.before}; after: {a.after}. {a.rounds} rounds, "
            f"builds alternating, {a.threads} threads, best of {a.repeat} calls a process, the median of the "
            f"rounds; 1-minute load average {min(loads):.1f}-{max(loads):.1f}.\n\n{markdown_table(columns, rows)}\n")
    write_text(path, text)
    print(markdown_table(columns, rows))
    finish(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
