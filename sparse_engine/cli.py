"""Command line: ``sparse-engine train | bench | analyze``.

* ``train``: a sparse RNN/LSTM/GRU/CT-RNN on a sequence task, with optional dynamic sparse
  training; default: a sparse LSTM reading scikit-learn's bundled digits row by row.
  Tasks on generated or bundled data: ``digits``, ``mackey-glass``; on files you point to
  with ``--data``: ``mnist`` (idx directory), ``sms`` (SMS Spam Collection file),
  ``gesture`` (UCI Gesture Phase Segmentation ``*_va3.csv`` files or their directory),
  ``mackey-glass`` (one value a line). ``--device`` picks the CPU or a CUDA GPU.
  ``--model mlp`` trains a SET-MLP instead (docs/set_mlp.md) on ``digits``, ``mnist`` or
  ``table`` (a CSV/.npz feature matrix with ``--label-column``).
* ``bench``: the CPU operators against torch.sparse (MKL) and scipy on one shape; ``--memory``: the
  predicted memory of a training step of a recurrent model, and the largest that fits a budget.
* ``analyze``: signed triad census and structural balance of a recurrent matrix from a
  checkpoint, a Gephi edge-list CSV or a scipy ``.npz``, with optional null models; or the
  balance of a recorded run (a ``--record-balance`` CSV), or the NNSTD between the networks of a
  directory; ``--plot DIR`` writes the figures.

``sparse-engine COMMAND --help`` lists a command's options and their defaults.
"""
from __future__ import annotations

# The recipes themselves are sparse_engine.runs (callable from Python without argparse); the
# tasks, models and controllers they build live in sparse_engine.data.tasks,
# sparse_engine.models and sparse_engine.training.recipes. This module parses, checks the
# arguments and dispatches, and turns the errors a user can cause into one line and an exit
# code (see EXIT_CODES).
import argparse
import difflib
import os
import sys

import torch

from . import _moved
from .data.tasks import TASK_DATA, TASKS
from .models import MODELS
from .runs import (DEVICES, SPARSE_CHOICES, AnalyzeConfig, BenchConfig, ConfigError, ConfigPathError, TrainConfig,
                   analyze, bench, check_analyze_paths, train)
from .runs.config import MEMORY_OPTIMIZERS
from .training.recipes import ALGORITHMS, RECIPES

PROG = "sparse-engine"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_FAILED}    a file could not be read or written (missing, unwritable, malformed), or the run failed
  {EXIT_USAGE}    bad arguments (unknown option, a value out of range, options that do not go together, a train
       run whose estimated memory exceeds --memory-budget)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
Errors are one line on stderr: '{PROG}: error: argument --OPTION: what was expected, got what'.
Set SPARSE_ENGINE_TRACEBACK=1 to see the full traceback of a runtime error."""

# What the command line calls a config field, when it is not --field-with-dashes.
POSITIONAL = {"path"}


class CommandError(Exception):
    """An error the user can fix, with the exit code it ends the command with."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``sparse-engine: error: ...`` and exit code 2, the usage
    left to ``--help`` (named in the line)."""

    def error(self, message):
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


#: fields whose option turns them off (``--no-evolve-output`` sets evolve_output False)
NEGATED = ("evolve_output",)


def option_name(field: str) -> str:
    """The command line's name for a config field: ``batch_size`` -> ``--batch-size``."""
    if field in POSITIONAL:
        return field
    return "--" + ("no-" if field in NEGATED else "") + field.replace("_", "-")


def _hidden_sizes(text: str):
    """``--hidden``: one int, or comma-separated layer sizes (a tuple) for --model mlp."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or integers separated by commas (1000,1000), "
                                         f"got {text!r}") from None
    return sizes[0] if len(sizes) == 1 else sizes


def _recompute_every(text: str):
    """``--recompute-every``: an integer, ``auto`` or ``none`` (None); the range is the config's check."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, auto or none, got {text!r}") from None


#: The options more than one command takes, defined once: (flags, argparse keywords); each command
#: adds them with its config's default (:func:`_option`).
OPTIONS = {
    "model": (("--model",), dict(choices=MODELS, help="recurrent layer (default: %(default)s)")),
    "hidden": (("--hidden",), dict(type=_hidden_sizes, metavar="UNITS",
                                   help="hidden units per layer, >= 1; for --model mlp also a list of layer sizes such "
                                        "as 1000,1000,1000 (default: %(default)s)")),
    "layers": (("--layers",), dict(type=int, metavar="N",
                                   help="stacked recurrent layers, >= 1; ctrnn has one (default: %(default)s)")),
    "density": (("--density",), dict(type=float, metavar="FRACTION",
                                     help="fraction of nonzero weights in the sparse matrices, in (0, 1] "
                                          "(default: %(default)s)")),
    "sparse": (("--sparse",), dict(choices=SPARSE_CHOICES, help="which matrices are sparse: the recurrent, the input "
                                                                 "or both (default: %(default)s)")),
    "device": (("--device",), dict(choices=DEVICES, help="auto: a CUDA GPU when available (and built with the CUDA "
                                                         "kernels), else the CPU (default: %(default)s)")),
    "recompute_every": (("--recompute-every",), dict(
        type=_recompute_every, metavar="{K,auto,none}",
        help="keep the recurrent state every K steps and recompute the rest in the backward (same gradients, one "
             "more forward, activations O(T/K + K) steps instead of O(T)); auto: the K with the least memory when "
             "storing every step does not fit the budget (default: none)")),
}


def _option(parser, field: str, config, **overrides) -> None:
    """Adds the option of config field ``field`` as :data:`OPTIONS` defines it, with ``config``'s default."""
    flags, keywords = OPTIONS[field]
    parser.add_argument(*flags, **{**keywords, "default": getattr(config, field), **overrides})


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def build_parser(recipe: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``recipe``, ``train``'s defaults are that recipe's settings (so options
    given on the command line override the recipe)."""
    from .analysis.balance import CONVENTIONS
    from .analysis.nulls import METHODS as NULL_METHODS  # here: the analysis package loads scipy

    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EXIT_CODES, formatter_class=_formatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=ArgumentParser)

    def command(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                              epilog=EXIT_CODES, formatter_class=_formatter)

    data_help = "; ".join(f"{task}: {what}{'' if required else ' (optional)'}"
                          for task, (_, what, required) in TASK_DATA.items())
    t = command("train", "train a sparse recurrent model on a sequence task")
    t.add_argument("--task", choices=TASKS, default=TrainConfig.task,
                   help="sequence task (default: %(default)s, scikit-learn's 8x8 digits read row by row)")
    t.add_argument("--data", "--data-dir", "--data-file", dest="data", metavar="PATH", help=f"dataset file or directory ({data_help}); default: none")
    for field in ("model", "hidden", "layers", "density", "sparse"):
        _option(t, field, TrainConfig)
    t.add_argument("--algorithm", choices=ALGORITHMS, default=TrainConfig.algorithm,
                   help="dynamic sparse training: none (fixed topology), SET, gradual magnitude pruning, "
                        "DEEP R, Selfish-RNN or RigL (default: %(default)s)")
    t.add_argument("--epochs", type=int, default=TrainConfig.epochs, metavar="N",
                   help="passes over the training set, >= 1 (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, metavar="N",
                   help="sequences per optimizer step, >= 1 (default: %(default)s)")
    t.add_argument("--lr", type=float, default=TrainConfig.lr, metavar="RATE",
                   help="Adam learning rate, > 0 (default: %(default)s)")
    t.add_argument("--seed", type=int, default=TrainConfig.seed, metavar="N",
                   help="seed of the split, the initial weights and the topology updates, >= 0 "
                        "(default: %(default)s)")
    t.add_argument("--save", metavar="PATH",
                   help="write the (resumable) checkpoint here, atomically, after every epoch: a .pt, .pth or "
                        ".ckpt file; missing directories are created (default: none)")
    t.add_argument("--record-balance", metavar="CSV",
                   help="write structural balance after each topology update and each epoch to this CSV "
                        "(default: none)")
    t.add_argument("--plot", metavar="IMAGE",
                   help="plot the train and test loss per epoch to this image, e.g. loss.png; needs "
                        "matplotlib (default: none)")
    _option(t, "device", TrainConfig)
    t.add_argument("--quiet", action="store_true",
                   help="no progress bar and no per-epoch results lines (default: off)")
    t.add_argument("--resume", metavar="PATH",
                   help="continue the run saved in this checkpoint bit for bit, with the options it was saved with "
                        "(options given must agree with them; --epochs may grow; --save, --plot, --record-balance, "
                        "--device, --quiet, --checkpoint-every, --recompute-every, --memory-budget may change); "
                        "checkpoints then go to --save, or to PATH without it (default: none)")
    t.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every, metavar="STEPS",
                   help="also write the resumable checkpoint every STEPS training steps inside an epoch, >= 0; "
                        "needs --save or --resume (default: %(default)s: after every epoch only)")
    t.add_argument("--recipe", choices=tuple(RECIPES), metavar="NAME",
                   help="a published set-up: its task, model, sizes, epochs, batch, lr and sparsification "
                        "schedule; other options given override it; ends with the published number beside ours. "
                        f"One of: {', '.join(RECIPES)} (default: none; see docs/papers.md)")
    _option(t, "recompute_every", TrainConfig)
    t.add_argument("--memory-budget", metavar="SIZE",
                   help="memory a training step (and an evaluation batch) may take, e.g. 16G or 512M: the run is "
                        "refused before it starts when the memory model (docs/memory.md) estimates more, and "
                        "--recompute-every auto picks its K for it (default: the memory available now; on a GPU its "
                        "free memory)")
    if recipe is not None:
        t.set_defaults(**RECIPES[recipe].train)

    m = t.add_argument_group("--model mlp (SET-MLP, docs/set_mlp.md; SET implementation 2 also uses --lr 0.05 "
                             "--batch-size 40 --algorithm set)")
    m.add_argument("--epsilon", type=float, default=TrainConfig.epsilon, metavar="E",
                   help="Erdos-Renyi sparsity: about E*(in+out) connections per layer, > 0 (default: %(default)s)")
    m.add_argument("--zeta", type=float, default=TrainConfig.zeta, metavar="FRACTION",
                   help="fraction of the positive and of the negative weights SET replaces after each epoch but "
                        "the last, in [0, 1] (default: %(default)s)")
    m.add_argument("--dropout", type=float, default=TrainConfig.dropout, metavar="P",
                   help="dropout of the hidden activations, in [0, 1) (default: %(default)s)")
    m.add_argument("--momentum", type=float, default=TrainConfig.momentum, metavar="M",
                   help="SGD momentum, in [0, 1) (default: %(default)s)")
    m.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, metavar="D",
                   help="w -= D*w every step, outside the momentum, in [0, 1) (default: %(default)s)")
    m.add_argument("--faithful", action="store_true",
                   help="SET implementation 2's quirks: sigmoid output with its MSE error, dropout without "
                        "rescaling, duplicate connections collapsed (default: off)")
    m.add_argument("--importance", type=float, default=TrainConfig.importance, metavar="FRACTION",
                   help="importance pruning: drop this fraction of each hidden layer's neurons after each "
                        "epoch but the last, in [0, 1) (default: %(default)s, off)")
    m.add_argument("--no-evolve-output", dest="evolve_output", action="store_false",
                   help="SET leaves the output layer's connections alone, as later SET code does; use it "
                        "for wide last hidden layers, where the dense output layer's redrawn weights cost "
                        "accuracy (default: evolve it, evolve_output=%(default)s, as implementation 2)")
    m.add_argument("--label-column", metavar="NAME",
                   help="task table: the name of the label column (default: none)")

    b = command("bench", "quick CPU operator benchmark against torch.sparse and scipy; with --memory the predicted "
                         "memory of a training step")
    b.add_argument("--n", type=int, default=BenchConfig.n, metavar="N",
                   help="rows and columns of the square sparse matrix, >= 1 (default: %(default)s)")
    b.add_argument("--density", type=float, default=BenchConfig.density, metavar="FRACTION",
                   help="fraction of nonzero entries, in (0, 1] (default: %(default)s)")
    b.add_argument("--batch", type=int, default=BenchConfig.batch, metavar="N",
                   help="columns of the dense operand, >= 1; with --memory the batch size (default: %(default)s)")
    mem = b.add_argument_group("--memory: the predicted memory of a training step of a recurrent model, from its "
                               "sizes alone (nothing is built; docs/memory.md)")
    mem.add_argument("--memory", action="store_true",
                     help="print the step's peak by kind and phase instead of timing operators; with --budget also "
                          "the largest hidden size that fits (same nonzeros per row: --density x --hidden) "
                          "(default: off)")
    for field in ("model", "hidden", "layers", "sparse"):
        _option(mem, field, BenchConfig)
    mem.add_argument("--seq-len", type=int, default=BenchConfig.seq_len, metavar="T",
                     help="steps per sequence, >= 1 (default: %(default)s)")
    mem.add_argument("--input-size", type=int, default=BenchConfig.input_size, metavar="N",
                     help="input features per step, >= 1 (default: %(default)s)")
    mem.add_argument("--optimizer", choices=MEMORY_OPTIMIZERS, default=BenchConfig.optimizer,
                     help="its state and temporaries (default: %(default)s)")
    _option(mem, "recompute_every", BenchConfig)
    _option(mem, "device", BenchConfig)
    mem.add_argument("--budget", metavar="SIZE",
                     help="memory a step may take, e.g. 16G or 80G for an 80 GB GPU (default: none)")

    a = command("analyze", "motifs and structural balance of a recurrent matrix")
    a.add_argument("path", help="checkpoint (.pt, .pth, .ckpt), Gephi edge list (.csv: Id,Source,Target,Weight), "
                                "scipy sparse matrix (.npz), a --record-balance CSV (balance over training), or a "
                                "directory of networks as NNSTD layers (weight_l<i>.npz: the NNSTD between them)")
    a.add_argument("--key", help="which matrix of a checkpoint, e.g. rnn.weight_hh_l1 (default: the first "
                                 "hidden-to-hidden weight, weight_hh_l0)")
    a.add_argument("--transpose", action="store_true",
                   help="the matrix is used as h @ W, rows presynaptic (default: off, W @ h)")
    a.add_argument("--null", type=int, default=AnalyzeConfig.null, metavar="K",
                   help="compare with K randomised networks, >= 0 (default: %(default)s, none)")
    a.add_argument("--null-method", choices=NULL_METHODS, default=AnalyzeConfig.null_method,
                   help="how the null networks are randomised: shuffle the signs, degree-preserving swaps, "
                        "or both (default: %(default)s)")
    a.add_argument("--seed", type=int, default=AnalyzeConfig.seed, metavar="N",
                   help="seed of the null models, >= 0 (default: %(default)s)")
    a.add_argument("--export-csv", metavar="CSV", help="also write the graph as a Gephi edge list (default: none)")
    a.add_argument("--gate", metavar="NAME",
                   help="one gate block of an LSTM (i f g o) or GRU (r z n) W_hh, or sum (the blocks added) "
                        "(default: every gate and the sum)")
    a.add_argument("--plot", metavar="DIR",
                   help="write the figures (PNG and SVG) into this directory, created with its parents if missing: census against "
                        "the null model (with --null) and degree/weight distributions; for a recorded run "
                        "(a --record-balance CSV as PATH) the balance over epochs; for a directory the NNSTD heat "
                        "map; needs matplotlib (default: none)")
    a.add_argument("--lesion", type=int, default=AnalyzeConfig.lesion, metavar="N",
                   help="for a checkpoint of train with a sparse rnn/ctrnn: cut up to N motifs (balanced, unbalanced, "
                        "any; and N edge triples) from the recurrent matrix as the paper (one shuffled list, "
                        "cumulative, 10 runs) and score the test set after each cut; with --plot the lesion "
                        "curves, >= 0 (default: %(default)s, none)")
    a.add_argument("--convention", choices=CONVENTIONS, default=AnalyzeConfig.convention,
                   help="default, or seed: the paper's code's (balance mean without types that have no balanced "
                        "semicycle; census over the nodes that have edges) (default: %(default)s)")
    return p


def _commands(parser) -> dict:
    """The subcommands' parsers by name."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _parse(argv):
    """``build_parser().parse_args(argv)``, an unknown option named with the closest option of its
    command and that command's ``--help``."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = _commands(parser)[args.command]
        options = [o for a in sub._actions for o in a.option_strings]
        first = next((u.split("=", 1)[0] for u in unknown if u.startswith("-")), "")
        close = difflib.get_close_matches(first, options, n=1, cutoff=0.6) if first else []
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CommandError(f"unrecognized arguments: {' '.join(unknown)}{hint} (see '{sub.prog} --help')", EXIT_USAGE)
    return args


def given_options(argv, command: str) -> dict:
    """The options of ``command`` typed in ``argv``, without argparse's defaults: what ``train
    --resume`` takes from the command line rather than from the checkpoint."""
    parser = build_parser()
    sub = _commands(parser)[command]
    for action in sub._actions:
        action.default = argparse.SUPPRESS
    sub._defaults.clear()
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if k != "command"}


def run(argv=None):
    """Runs one command and returns its result (the last epoch's metrics, the benchmark rows
    or the balance values). Bad arguments raise :class:`CommandError` (code 2), bad paths
    CommandError (code 1); other errors propagate (:func:`main` turns them into exit codes).
    ``train --resume PATH`` takes the options not typed from the checkpoint."""
    args = _parse(argv)
    if args.command == "train" and args.recipe is not None:  # again, with the recipe's settings as defaults
        args = build_parser(args.recipe).parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        if args.command == "train" and args.resume is not None:
            return train(**given_options(argv, "train")).last
        if args.command == "train":
            return train(TrainConfig(**options)).last
        if args.command == "bench":
            return bench(BenchConfig(**options))
        cfg = AnalyzeConfig(**options)
        check_analyze_paths(cfg)  # before the census starts (train() checks its paths itself)
        return analyze(cfg)
    except ConfigError as exc:  # a value (2) or a path (1) the recipe cannot use, named as on the command line
        code = EXIT_FAILED if isinstance(exc, ConfigPathError) else EXIT_USAGE
        hint = "" if code == EXIT_FAILED else f" (see '{PROG} {args.command} --help')"
        raise CommandError(f"argument {option_name(exc.field)}: {exc.reason}{hint}", code) from exc


def _one_line(message) -> str:
    return " ".join(str(message).split()) or "unknown error"


def _say(line: str) -> None:
    """``line`` on stderr, on a line of its own even when a progress bar was drawn there."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")  # back to the start of the line and clear it
    print(line, file=sys.stderr)


def main(argv=None) -> int:
    """Console entry point (``sparse-engine``): runs one command and returns the exit code
    (see :data:`EXIT_CODES`). Errors a user can cause are one line on stderr; an unexpected
    exception keeps its traceback."""
    try:
        run(argv)
    except CommandError as exc:
        _say(f"{PROG}: error: {_one_line(exc)}")
        return exc.code
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help (0), or user code that exits with a message
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        _say(f"{PROG}: error: {_one_line(exc.code)}")
        return EXIT_FAILED
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        if os.environ.get("SPARSE_ENGINE_TRACEBACK"):
            raise
        _say(f"{PROG}: error: out of memory ({_one_line(exc)[:200]}); try a smaller --hidden, --density or "
             f"--batch-size")
        return EXIT_FAILED
    except (ValueError, TypeError, OSError, EOFError) as exc:  # a bad file, or a run that cannot go on
        if os.environ.get("SPARSE_ENGINE_TRACEBACK"):
            raise
        _say(f"{PROG}: error: {_one_line(exc)}")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

__getattr__ = _moved.old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
