"""Command line: ``sparse-engine train | bench | analyze``.

* ``train``: a sparse RNN/LSTM/GRU/CT-RNN on a sequence task, with optional dynamic sparse
  training; default: a sparse LSTM reading scikit-learn's bundled digits row by row.
  Tasks on generated or bundled data: ``digits``, ``mackey-glass``; on files you point to
  with ``--data``: ``mnist`` (idx directory), ``sms`` (SMS Spam Collection file),
  ``gesture`` (UCI Gesture Phase Segmentation ``*_va3.csv`` files or their directory),
  ``mackey-glass`` (one value a line). ``--device`` picks the CPU or a CUDA GPU.
* ``bench``: the CPU operators against torch.sparse (MKL) and scipy on one shape.
* ``analyze``: signed triad census and structural balance of a recurrent matrix from a
  checkpoint, a Gephi edge-list CSV or a scipy ``.npz``, with optional null models.
"""
from __future__ import annotations

# The recipes themselves are sparse_engine.runs (callable from Python without argparse); the
# tasks, models and controllers they build live in sparse_engine.data.tasks,
# sparse_engine.models and sparse_engine.training.recipes. This module parses, checks the
# arguments and dispatches.
import argparse
import sys

from .data.tasks import TASKS, load_task  # noqa: F401  (load_task: re-exported, was defined here)
from .models import MODELS
from .runs import AnalyzeConfig, BenchConfig, TrainConfig, analyze, bench, resolve_device, train  # noqa: F401
from .training.recipes import ALGORITHMS

# Names defined here before the recipes moved out, kept so that old imports still work.
from .models import SequenceModel  # noqa: F401,E402
from .runs import evaluate, load_matrix  # noqa: F401,E402
from .training.recipes import make_controller  # noqa: F401,E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparse-engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a sparse recurrent model on a sequence task")
    t.add_argument("--task", choices=TASKS, default=TrainConfig.task)
    t.add_argument("--data", help="dataset file or directory (mnist, sms, gesture; optional for mackey-glass)")
    t.add_argument("--model", choices=MODELS, default=TrainConfig.model)
    t.add_argument("--hidden", type=int, default=TrainConfig.hidden)
    t.add_argument("--layers", type=int, default=TrainConfig.layers)
    t.add_argument("--density", type=float, default=TrainConfig.density, help="density of the sparse matrices")
    t.add_argument("--sparse", choices=("recurrent", "input", "both"), default=TrainConfig.sparse)
    t.add_argument("--algorithm", choices=ALGORITHMS, default=TrainConfig.algorithm, help="dynamic sparse training")
    t.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    t.add_argument("--lr", type=float, default=TrainConfig.lr)
    t.add_argument("--seed", type=int, default=TrainConfig.seed)
    t.add_argument("--save", help="write a checkpoint here (atomically)")
    t.add_argument("--record-balance", metavar="CSV", help="record structural balance after topology updates")
    t.add_argument("--plot", metavar="PNG", help="plot the loss curves")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default=TrainConfig.device,
                   help="auto: a CUDA GPU when available (and built with the CUDA kernels), else the CPU")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--resume", metavar="PATH", help="continue the run saved in this checkpoint bit for bit (same "
                   "options; --epochs may grow); checkpoints then go to --save, or to PATH without it")
    t.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every, metavar="STEPS",
                   help="also write the resumable checkpoint to --save every STEPS training steps inside an "
                   "epoch (it is written after every epoch anyway)")

    b = sub.add_parser("bench", help="quick CPU operator benchmark against torch.sparse and scipy")
    b.add_argument("--n", type=int, default=BenchConfig.n)
    b.add_argument("--density", type=float, default=BenchConfig.density)
    b.add_argument("--batch", type=int, default=BenchConfig.batch)

    a = sub.add_parser("analyze", help="motifs and structural balance of a recurrent matrix")
    a.add_argument("path", help="checkpoint (.pt), Gephi edge list (.csv) or scipy matrix (.npz)")
    a.add_argument("--key", help="which sparse weight of a checkpoint (default: the first recurrent one)")
    a.add_argument("--transpose", action="store_true", help="matrix is used as h @ W (rows presynaptic)")
    a.add_argument("--null", type=int, default=AnalyzeConfig.null, metavar="K",
                   help="compare with K randomised networks")
    a.add_argument("--null-method", default=AnalyzeConfig.null_method)
    a.add_argument("--seed", type=int, default=AnalyzeConfig.seed)
    a.add_argument("--export-csv", metavar="CSV", help="write the graph as a Gephi edge list")
    a.add_argument("--gate", metavar="NAME", help="one gate block of an LSTM (i f g o) or GRU (r z n) W_hh, or sum "
                   "(the blocks added); default: every gate and the sum")
    return p


def run(argv=None):
    """Runs one command and returns its result (the last epoch's metrics, the benchmark rows
    or the balance values)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "epochs", 1) <= 0 or getattr(args, "hidden", 1) <= 0:
        raise SystemExit("--epochs and --hidden must be positive")
    options = {k: v for k, v in vars(args).items() if k != "command"}
    if args.command == "train":
        return train(TrainConfig(**options)).last
    if args.command == "bench":
        return bench(BenchConfig(**options))
    return analyze(AnalyzeConfig(**options))


def main(argv=None) -> int:
    """Console entry point (``sparse-engine``)."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
