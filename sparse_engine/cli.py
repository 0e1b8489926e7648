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
import re
import sys
from dataclasses import fields

import torch

from ._moved import old_name
from .runs import (AnalyzeConfig, BenchConfig, ConfigError, ConfigPathError, TrainConfig, analyze, bench,
                   check_analyze_paths, train)
from .runs.options import argument, is_negated, is_positional
from .training.recipes import RECIPES

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

#: each command: the config whose fields are its options, and its help line
COMMANDS = {"train": (TrainConfig, "train a sparse recurrent model on a sequence task"),
            "bench": (BenchConfig, "quick CPU operator benchmark against torch.sparse and scipy; with --memory the "
                                   "predicted memory of a training step"),
            "analyze": (AnalyzeConfig, "motifs and structural balance of a recurrent matrix")}


class CommandError(Exception):
    """An error the user can fix, with the exit code it ends the command with."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``sparse-engine: error: ...`` and exit code 2, the usage
    left to ``--help`` (named in the line). A value that starts with a minus and a digit is a
    value, not an option (``--memory-budget -1G`` reaches its check, which names what was expected;
    argparse alone takes only plain negative numbers)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message):
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


#: what the command line calls a config field when it is not ``--field-with-dashes``: the fields
#: without a default are positional, a switch whose default is True turns its field off
#: (``--no-evolve-output`` sets evolve_output False)
POSITIONAL = {f.name for config, _ in COMMANDS.values() for f in fields(config) if is_positional(f)}
NEGATED = tuple(dict.fromkeys(f.name for config, _ in COMMANDS.values() for f in fields(config) if is_negated(f)))


def option_name(field: str) -> str:
    """The command line's name for a config field: ``batch_size`` -> ``--batch-size``."""
    if field in POSITIONAL:
        return field
    return "--" + ("no-" if field in NEGATED else "") + field.replace("_", "-")


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def add_options(parser, config) -> None:
    """The options of ``config``'s fields (:func:`~sparse_engine.runs.options.argument`), in their
    order: those of no group first, then each group under its title."""
    groups = {}
    for f in sorted(fields(config), key=lambda f: f.metadata["group"] is not None):
        title = f.metadata["group"]
        if title is not None and title not in groups:
            groups[title] = parser.add_argument_group(title)
        names, keywords = argument(f)
        groups.get(title, parser).add_argument(*names, **keywords)


def build_parser(recipe: str | None = None) -> argparse.ArgumentParser:
    """The parser, built from the configs (:data:`COMMANDS`); with ``recipe``, ``train``'s defaults
    are that recipe's settings (so options given on the command line override the recipe)."""
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EXIT_CODES, formatter_class=_formatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    for name, (config, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                                 epilog=EXIT_CODES, formatter_class=_formatter)
        add_options(command, config)
    if recipe is not None:
        _commands(p)["train"].set_defaults(**RECIPES[recipe].train)
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
    return run_handled(lambda: run(argv))


def run_handled(job, prog: str = PROG) -> int:
    """Calls ``job()`` and returns the exit code, with the errors a user can cause as one line on stderr
    (``prog: error: ...``; ``SPARSE_ENGINE_TRACEBACK=1`` keeps the traceback): the command line's
    handling, which the example scripts share (``sys.exit(run_handled(main, "train_digits.py"))``)."""
    try:
        code = job()  # an int: the job's own exit code (a script's main may return one)
    except CommandError as exc:
        _say(f"{prog}: error: {_one_line(exc)}")
        return exc.code
    except KeyboardInterrupt as exc:
        checkpoint = getattr(exc, "resume_from", None)
        _say(f"{prog}: interrupted" + (f"; continue with: {PROG} train --resume {checkpoint}" if checkpoint else ""))
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help (0), or user code that exits with a message
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        _say(f"{prog}: error: {_one_line(exc.code)}")
        return EXIT_FAILED
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        if os.environ.get("SPARSE_ENGINE_TRACEBACK"):
            raise
        _say(f"{prog}: error: out of memory ({_one_line(exc)[:200]}); try a smaller --hidden, --density or "
             f"--batch-size")
        return EXIT_FAILED
    except (ValueError, TypeError, OSError, EOFError) as exc:  # a bad file, or a run that cannot go on
        if os.environ.get("SPARSE_ENGINE_TRACEBACK"):
            raise
        _say(f"{prog}: error: {_one_line(exc)}")
        return EXIT_FAILED
    return code if isinstance(code, int) and not isinstance(code, bool) else EXIT_OK


def checked(rule, read=float):
    """An argparse ``type`` for a script's option: the text read with ``read``, then checked by a rule of
    :mod:`sparse_engine.runs.validators` (``checked(validators.fraction)``,
    ``checked(validators.integer(1), int)``);
    a bad value is argparse's one-line usage error in the rule's words (exit 2)."""
    def parse(text: str):
        try:
            value = read(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if read is int else 'a number'}, "
                                             f"got {text!r}") from None
        problem = rule(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value
    return parse


if __name__ == "__main__":
    sys.exit(main())

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
