"""SET-MLP against SET implementation 2 itself, in one run: the same network (784-H-H-H-10,
epsilon 13), the same 8,000 MNIST training images, batch 40, the same recipe, one size after the
other, each implementation in a process of its own.

SET implementation 2 is the authors' public scipy + Cython code
(https://github.com/dcmocanu/sparse-evolutionary-artificial-neural-networks). Its tutorial folder
``Tutorial-ECMLPKDD-2019-Scalable-Deep-Learning`` (``set_mlp.py``) is implementation 2 with dropout,
run with the settings this library's ``SET_MLP_SETTINGS`` and ``--faithful`` follow: ReLU, sigmoid
output with MSE, dropout 0.2, SGD lr 0.05, momentum 0.9, weight decay 2e-4, zeta 0.3. Nothing of it
is part of this project: fetch it, and install Cython to build its kernel:

    pip install cython
    git clone https://github.com/dcmocanu/sparse-evolutionary-artificial-neural-networks impl2
    python benchmarks/bench_set_impl2.py --impl2 impl2/Tutorial-ECMLPKDD-2019-Scalable-Deep-Learning \\
        --hidden 1000,10000,100000

Its kernel (``sparseoperations.pyx``) is compiled into ``--build`` (default: a folder under the
system's temporary directory), never into the checkout. Two shims give the code the library
behaviour it was written for, in the child process only: NumPy 2.4 removed ``np.in1d``, given back
as NumPy defined it (``np.isin(a, b).ravel()``); and today's scipy makes ``coo_matrix(csr)`` share
the CSR's values where the scipy of 2018 copied them, so the kernel, which writes each batch's
weight gradient into ``coo_matrix(w).data``, would overwrite the weights themselves (unshimmed,
the network stays at one class's 10.7% test accuracy for ten epochs at H = 1,000; shimmed it
reaches 90%, as ours does).

Per size and implementation: the network's build time (not in the epoch: implementation 2 fills a
``lil_matrix`` one entry at a time), one training epoch (forward, backward, update over the 8,000
images in batches of 40), one SET evolution of every layer, and the test accuracy on the 2,000
held-out images after that epoch (before the evolution). Ours: ``SparseMLP(..., faithful=True)`` in
float32 on ``--threads`` threads (``--ours float32,bfloat16,float32+keep`` gives a row per size to each
of our configurations: bfloat16 activations, the forward under ``torch.autocast`` with the
weights and their update in float32; ``+keep``, freed memory kept for reuse,
``sparse_engine.runtime.threads.keep_freed_memory``); implementation 2 computes in float64 on one
thread (scipy's sparse products and its Cython loop do not use more). The ratio is ours /
implementation 2 per epoch (training + evolution). The markdown table is rewritten after every
run: without --out a fresh file benchmarks/results/local/set_impl2_cpu-<UTC time>.md (named at the
start and the end); the committed table is rewritten only with --out set_impl2_cpu.md. The console
shows the table's header, then a line as each run (size, implementation) starts and as it ends.

``--curve EPOCHS`` measures accuracy instead of time: the test accuracy after every epoch of both
sides at the first ``--hidden`` size, for ``--seeds`` seeds, implementation 2 in its own ``fit``
loop (the table set_impl2_curve_H.md: without --out a fresh file under benchmarks/results/local/,
the committed one only with --out set_impl2_curve_H.md).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sparse_engine  # noqa: E402,F401  (before torch: its OpenMP waiting policy, see common.py)
from common import (announce, cell, finish, markdown_table, out_help, parse_hidden, results_path,  # noqa: E402
                    write_result)
from sparse_engine.training import SET_MLP_SETTINGS as SETTINGS  # noqa: E402  (both sides run these)

MNIST = ROOT / ".." / "shared" / "data" / "mnist_test"
HEADER = ["H", "sizes", "ours: activations (+keep: freed memory kept)", "nnz (ours / impl 2)",
          "ours: train + evolution s", "impl 2: train + evolution s", "epoch ratio ours / impl 2",
          "us per connection (ours / impl 2)", "test acc (ours / impl 2)",
          "build s (ours / impl 2)", "load avg"]


def mnist(path: Path, train: int):
    """(Xtr, ytr, Xte, yte) as float32 / int64 tensors: the split every SET-MLP benchmark uses."""
    from sparse_engine.data.tasks import load_task

    (Xtr, ytr), (Xte, yte), _ = load_task("mnist", str(path), 0)
    return Xtr.reshape(len(Xtr), -1)[:train], ytr[:train], Xte.reshape(len(Xte), -1), yte


def ours(args) -> dict:
    import torch

    from sparse_engine.nn import SparseMLP
    from sparse_engine.runtime.threads import keep_freed_memory
    from sparse_engine.training import SETMLP, SETSGD

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    Xtr, ytr, Xte, yte = mnist(Path(args.data), args.train)
    s = SETTINGS
    t = time.perf_counter()
    model = SparseMLP((784, args.child, args.child, args.child, 10), epsilon=s["epsilon"], dropout=s["dropout"],
                      faithful=True)
    build = time.perf_counter() - t
    opt = SETSGD(model.parameters(), lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
    epochs = args.curve or 2  # timing: the end of epoch 1 evolves
    ctl = SETMLP(model, opt, epochs=epochs, zeta=s["zeta"], seed=args.seed)
    nnz, accs, times = model.nnz, [], []
    # bfloat16 activations: torch.autocast, under which the sparse products run in bfloat16 (the values
    # cast for each product, the float32 values updated), the loss in float32
    activation, _, memory = args.config.partition("+")
    if memory == "keep" and not keep_freed_memory():
        sys.exit("bench_set_impl2: +keep needs glibc's malloc and no GLIBC_TUNABLES")
    half = dict(device_type="cpu", dtype=torch.bfloat16, enabled=activation == "bfloat16")
    for _ in range(args.curve or 1):
        t = time.perf_counter()
        for idx in torch.randperm(len(Xtr)).split(s["batch_size"]):
            opt.zero_grad(set_to_none=False)
            with torch.autocast(**half):
                logits = model(Xtr[idx])
            model.loss(logits.float(), ytr[idx]).backward()
            opt.step()
        times.append(time.perf_counter() - t)
        model.eval()
        with torch.no_grad(), torch.autocast(**half):
            accs.append(float((model(Xte).argmax(1) == yte).float().mean()))
        model.train()
        t = time.perf_counter()
        ctl.end_epoch()
        times.append(time.perf_counter() - t)
    return dict(nnz=nnz, build=build, train=times[0], evolution=times[1], acc=accs[0], accs=accs)


def build_impl2(folder: Path, build: Path) -> None:
    """Compile implementation 2's Cython kernel into ``build`` (once)."""
    if any(build.glob("sparseoperations*.so")):
        return
    try:
        import Cython  # noqa: F401
    except ImportError:
        sys.exit("bench_set_impl2: --impl2 needs Cython to build its kernel (pip install cython)")
    build.mkdir(parents=True, exist_ok=True)
    src = build / "sparseoperations.pyx"
    src.write_bytes((folder / "sparseoperations.pyx").read_bytes())
    setup = ("import numpy\nfrom setuptools import setup, Extension\nfrom Cython.Build import cythonize\n"
             "setup(ext_modules=cythonize([Extension('sparseoperations', ['sparseoperations.pyx'], "
             "include_dirs=[numpy.get_include()])], language_level=3), script_args=['build_ext', '--inplace'])\n")
    done = subprocess.run([sys.executable, "-c", setup], cwd=build, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench_set_impl2: building {src} failed:\n{done.stderr[-2000:]}")


def _copying_coo_matrix(arg1, shape=None, dtype=None, copy=False):
    """scipy's coo_matrix as implementation 2 knew it: built from a sparse matrix, a copy."""
    from scipy.sparse import coo_matrix, issparse

    return coo_matrix(arg1, shape, dtype, copy=copy or issparse(arg1))


def impl2(args) -> dict:
    import numpy as np

    if not hasattr(np, "in1d"):
        np.in1d = lambda a, b, **kw: np.isin(a, b, **kw).ravel()  # removed in NumPy 2.4: in1d was this
    sys.path[:0] = [args.build, args.impl2]
    mod = __import__(args.module)
    mod.coo_matrix = _copying_coo_matrix
    Xtr, ytr, Xte, yte = mnist(Path(args.data), args.train)
    X, Xt = Xtr.double().numpy(), Xte.double().numpy()
    Y, Yt = np.eye(10)[ytr.numpy()], np.eye(10)[yte.numpy()]
    s = SETTINGS
    np.random.seed(args.seed)
    t = time.perf_counter()
    net = mod.SET_MLP((784, args.child, args.child, args.child, 10), (mod.Relu, mod.Relu, mod.Relu, mod.Sigmoid),
                      epsilon=int(s["epsilon"]))  # its range(epsilon * (rows + cols))
    build = time.perf_counter() - t
    nnz = sum(w.nnz for w in net.w.values())
    fit = dict(loss=mod.MSE, epochs=1, batch_size=s["batch_size"], learning_rate=s["lr"], momentum=s["momentum"],
               weight_decay=s["weight_decay"], zeta=s["zeta"], testing=False)
    if "dropoutrate" in inspect.signature(net.fit).parameters:  # the tutorial's version
        fit["dropoutrate"] = s["dropout"]
    os.chdir(tempfile.mkdtemp())  # fit writes its input-connection file into the working directory
    if args.curve:  # its own loop: test accuracy after every epoch, evolution after all but the last
        mod.batchSize = s["batch_size"]  # fit's testing reads this global of its script's __main__
        metrics = net.fit(X, Y, Xt, Yt, **{**fit, "epochs": args.curve, "testing": True})
        return dict(nnz=nnz, accs=[float(a) for a in metrics[:, 3]])
    t = time.perf_counter()
    net.fit(X, Y, Xt, Yt, **fit)  # one epoch: training only (no evolution after the last epoch)
    train = time.perf_counter() - t
    acc, _ = net.predict(Xt, Yt, batch_size=s["batch_size"])
    evolve = next(getattr(net, m) for m in ("weightsEvolution_II", "weightsEvolution_Amar", "weightsEvolution")
                  if hasattr(net, m))
    t = time.perf_counter()
    evolve()
    return dict(nnz=nnz, build=build, train=train, evolution=time.perf_counter() - t, acc=acc)


def command(args, options: str) -> str:
    """The command line a results file names: --impl2 (when given) as the checkout's own folder name,
    not this machine's path, then ``options``."""
    impl2 = f" --impl2 impl2/{Path(args.impl2).name}" if args.impl2 else ""
    return f"python benchmarks/bench_set_impl2.py{impl2}{options}"


def row_of(H: int, a: dict, b: dict | None, load: float, config: str = "float32") -> list:
    """One table row: ours (``a``, run as ``config``: one of --ours) beside implementation 2 (``b``;
    None: not run, '-' in its cells)."""
    ea = a["train"] + a["evolution"]
    eb = b["train"] + b["evolution"] if b else None
    both = lambda ours, theirs: f"{ours} / {theirs if b else '-'}"  # noqa: E731  (theirs only read when b)
    return [f"{H:,}", f"784-{H}-{H}-{H}-10", config, both(f"{a['nnz']:,}", b and f"{b['nnz']:,}"),
            f"{a['train']:.2f} + {a['evolution']:.2f} = {ea:.2f}",
            f"{b['train']:.1f} + {b['evolution']:.1f} = {eb:.1f}" if b else "-", f"{ea / eb:.3f}x" if b else "-",
            both(f"{ea / a['nnz'] * 1e6:.2f}", b and f"{eb / b['nnz'] * 1e6:.2f}"),
            both(f"{a['acc']:.4f}", b and f"{b['acc']:.4f}"), both(f"{a['build']:.1f}", b and f"{b['build']:.1f}"),
            f"{load:.2f}"]


def child_run(args, which: str, H: int, seed: int = 0, config: str = "float32") -> dict | None:
    cmd = [sys.executable, __file__, "--child", str(H), "--which", which, "--threads", str(args.threads),
           "--config", config,
           "--train", str(args.train), "--data", args.data, "--module", args.module, "--build", args.build,
           "--seed", str(seed), "--curve", str(args.curve)]
    if args.impl2:
        cmd += ["--impl2", args.impl2]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads if which == "ours" else 1))
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        print(f"H={H:,} {which} ({config}): exit {done.returncode}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl2", help="folder of SET implementation 2 holding --module and sparseoperations.pyx "
                                   "(without it: our side only)")
    p.add_argument("--module", default="set_mlp", help="implementation 2's module in --impl2 (default set_mlp)")
    p.add_argument("--hidden", default="1000,10000,100000", help="neurons per hidden layer, comma-separated")
    p.add_argument("--threads", type=int, default=2, help="our threads (implementation 2 runs on one)")
    p.add_argument("--train", type=int, default=8000, help="training images (of the 8,000 of the split)")
    p.add_argument("--data", default=str(MNIST), help="the mnist_test folder (python -m sparse_engine.data.fetch "
                                                      "mnist_test writes one)")
    p.add_argument("--build", default=str(Path(tempfile.gettempdir()) / "sparse_engine_impl2_build"),
                   help="where implementation 2's kernel is compiled")
    p.add_argument("--out", help=out_help("set_impl2_cpu.md, with --curve set_impl2_curve_H.md"))
    p.add_argument("--curve", type=int, default=0, metavar="EPOCHS",
                   help="instead of timing: test accuracy after each of EPOCHS epochs, both sides, at the first "
                        "--hidden size, for --seeds seeds (implementation 2's own fit loop)")
    p.add_argument("--seeds", type=int, default=2, help="--curve: seeds 0..N-1 per side (default 2)")
    p.add_argument("--ours", default="float32",
                   help="our configurations, comma-separated, a row each: float32 or bfloat16 activations (bfloat16: "
                        "torch.autocast, the products gather and store bfloat16, the values stay float32), each "
                        "optionally +keep (freed memory kept for reuse: runtime.threads.keep_freed_memory)")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--config", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--which", choices=("ours", "impl2"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.ours = args.ours.split(",")
    if args.child:
        print(json.dumps((ours if args.which == "ours" else impl2)(args)), flush=True)
        return
    if not set(args.ours) <= {"float32", "bfloat16", "float32+keep", "bfloat16+keep"}:
        sys.exit(f"bench_set_impl2: --ours must list float32 or bfloat16, each optionally +keep, "
                 f"got {','.join(args.ours)}")
    if not Path(args.data).exists():
        sys.exit(f"bench_set_impl2: --data {args.data} does not exist (a folder holding MNIST's test set; "
                 "python -m sparse_engine.data.fetch mnist_test --root DIR downloads DIR/mnist_test)")
    if args.impl2:
        folder = Path(args.impl2)
        if not (folder / f"{args.module}.py").exists() or not (folder / "sparseoperations.pyx").exists():
            sys.exit(f"bench_set_impl2: --impl2 {folder} holds no {args.module}.py and sparseoperations.pyx")
        build_impl2(folder, Path(args.build))
    if args.curve:
        return curves(args)
    rows = []
    out = results_path(args.out, "set_impl2_cpu.md")
    title = "SET-MLP against SET implementation 2, same run"
    announce(title, HEADER, out)
    for H in [parse_hidden(h) for h in args.hidden.split(",")]:
        runs = {}
        for config in args.ours:
            with cell(f"H {H:,}, ours ({config})") as c:
                a = runs[config] = child_run(args, "ours", H, config=config)
                c.result = ("failed" if a is None else
                            f"{a['train']:.2f} + {a['evolution']:.2f} s, accuracy {a['acc']:.4f}")
        if None in runs.values():
            break
        b = None
        if args.impl2:
            with cell(f"H {H:,}, implementation 2") as c:
                b = child_run(args, "impl2", H)
                c.result = ("failed" if b is None else
                            f"{b['train']:.1f} + {b['evolution']:.1f} s, accuracy {b['acc']:.4f}")
        for config, a in runs.items():
            rows.append(row_of(H, a, b, os.getloadavg()[0], config))
            print(" | ".join(rows[-1]), flush=True)
        write_result(
            out, title,
            "784-H-H-H-10, epsilon 13, 8,000 MNIST training images (the shipped test set's 80/20 split), batch 40, "
            "SGD lr 0.05, momentum 0.9, weight decay 2e-4, dropout 0.2, zeta 0.3; per size each implementation in a "
            "process of its own, ours first. Seconds: one training epoch + one SET evolution of every layer; "
            f"ours on {args.threads} threads in float32 (bfloat16 activations: under torch.autocast, the "
            "weights kept in float32; +keep: glibc's malloc keeps freed memory for reuse), implementation 2 on "
            "one thread in float64 (its code does not use more); test accuracy after the one epoch. Load avg: "
            "1-minute, after the size.\n\n"
            f"Command: `{command(args, f' --hidden {args.hidden} --threads {args.threads}')}{configs(args)}`\n\n"
            + markdown_table(HEADER, rows))
    finish(out)


def curves(args) -> None:
    """Test accuracy per epoch of each side (ours in each configuration, implementation 2) at one
    size, seed by seed; the file is rewritten after every run."""
    H = parse_hidden(args.hidden.split(",")[0])
    out = results_path(args.out, f"set_impl2_curve_{H}.md")
    sides = {("ours", c): [] for c in args.ours} | ({("impl2", "float32"): []} if args.impl2 else {})
    names = [f"ours ({c})" if which == "ours" else "implementation 2" for which, c in sides]
    if args.ours == ["float32"]:
        names = ["ours" if n == "ours (float32)" else n for n in names]  # the committed tables' header
    title = "SET-MLP against SET implementation 2: test accuracy per epoch"
    announce(title, ["epoch", *names], out)
    for seed in range(args.seeds):
        for ((which, config), runs), name in zip(sides.items(), names):
            with cell(f"{name}, H {H:,}, seed {seed}, {args.curve} epochs") as c:
                r = child_run(args, which, H, seed, config)  # (implementation 2 ignores config)
                c.result = "failed" if r is None else "accuracy " + " ".join(f"{a:.3f}" for a in r["accs"])
            if r is None:
                finish(out)
                return
            runs.append(r["accs"])
            rows = [[e + 1] + [f"{sum(a[e] for a in rs) / len(rs):.4f} ({len(rs)})" if rs else "-"
                               for rs in sides.values()] for e in range(args.curve)]
            write_result(
                out, title,
                f"784-{H}-{H}-{H}-10, the recipe of `set_impl2_cpu.md` (ours with `faithful=True`), {args.curve} "
                "epochs, SET evolution after each but the last; test accuracy on the 2,000 held-out images after "
                "each epoch, mean over the seeds run so far (their number in brackets). Implementation 2 runs its "
                "own `fit` loop (its shuffles, dropout and draws from NumPy's generator seeded with the seed); ours "
                "from torch's (the same seed gives each of our configurations the same initial weights, batches "
                "and dropout masks).\n\n"
                f"Command: `{command(args, f' --hidden {H} --curve {args.curve} --seeds {args.seeds}')}"
                f"{configs(args)}`"
                "\n\n" + markdown_table(["epoch", *names], rows)
                + "\n\nLast epoch, each seed: " + "; ".join(
                    f"{name} " + ", ".join(f"{a[-1]:.4f}" for a in rs) for name, rs in zip(names, sides.values())))
    finish(out)


def configs(args) -> str:
    """The --ours option of a results file's command line (none for the default)."""
    return "" if args.ours == ["float32"] else f" --ours {','.join(args.ours)}"


if __name__ == "__main__":
    main()
