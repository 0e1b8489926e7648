"""A config field declared once as an option: its default, the rule its value is checked with
(:mod:`.validators`) and what the command line shows for it (help, metavar, choices, other flags,
its group), all in the field's metadata (:func:`option`). The configs (:mod:`.config`) check
their values with it and :func:`sparse_engine.cli.build_parser` builds the parser from it
(:func:`argument`), so an option added to a config is on the command line with no other edit."""
from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields

from .validators import flag, one_of, or_none


def option(default=MISSING, *, help: str, check=None, choices=None, type=None, metavar: str | None = None,
           flags: tuple[str, ...] = (), group: str | None = None, may_change: bool = False):
    """A config field: ``default`` (none: a positional argument), ``help`` (argparse's, with
    ``%(default)s``), ``check`` (a rule of :mod:`.validators`; by default one of ``choices``, or
    True/False for a bool), ``choices`` (a tuple, or a function returning it), ``type`` (what reads
    the typed text; by default ``int`` or ``float`` as the default is), ``metavar``, ``flags``
    (more names of the option), ``group`` (the title of its group in ``--help``). A bool is a
    switch: ``--name`` sets True, or ``--no-name`` False where the default is True.
    ``may_change``: a ``train --resume`` may give another value than the checkpoint's (the
    others must match it: :data:`sparse_engine.runs.resume.MUST_MATCH`)."""
    if check is None and isinstance(default, bool):
        check = flag
    elif check is None and choices is not None:
        check = or_none(one_of(choices)) if default is None else one_of(choices)
    metadata = dict(help=help, check=check, choices=choices, type=type, metavar=metavar, flags=flags, group=group,
                    may_change=may_change)
    return field(default=default, metadata=metadata)


def shared_option(config, name: str, **changes):
    """``config``'s option ``name`` declared again for another config (the same default, rule and
    help), with ``changes`` to its metadata (another ``group``)."""
    f = next(f for f in fields(config) if f.name == name)
    return field(default=f.default, metadata={**f.metadata, **changes})


def check_value(f: Field, value):
    """What is wrong with ``value`` for the field ``f`` (its rule's answer), or None."""
    rule = f.metadata.get("check")
    return None if rule is None else rule(value)


def is_positional(f: Field) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def is_negated(f: Field) -> bool:
    """A switch that turns its field off (``--no-evolve-output``)."""
    return f.default is True


def argument(f: Field) -> tuple[tuple[str, ...], dict]:
    """(names, keywords) of ``argparse.ArgumentParser.add_argument`` for the config field ``f``,
    with the config's default."""
    meta = f.metadata
    if is_positional(f):
        return (f.name,), dict(help=meta["help"])
    name = "--" + ("no-" if is_negated(f) else "") + f.name.replace("_", "-")
    keywords = dict(dest=f.name, default=f.default, help=meta["help"])
    if isinstance(f.default, bool):
        return (name,), dict(keywords, action="store_false" if is_negated(f) else "store_true")
    choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
    read = meta["type"] or next((t for t in (int, float) if type(f.default) is t), None)
    return (name, *meta["flags"]), dict(keywords, type=read, choices=choices, metavar=meta["metavar"])


# What reads the typed text of the options whose value is not one int, float or string.
def hidden_sizes(text: str):
    """``--hidden``: one int, or comma-separated layer sizes (a tuple) for --model mlp."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or integers separated by commas (1000,1000), "
                                         f"got {text!r}") from None
    return sizes[0] if len(sizes) == 1 else sizes


def recompute_interval(text: str):
    """``--recompute-every``: an integer, ``auto`` or ``none`` (None); the range is the config's check."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, auto or none, got {text!r}") from None
