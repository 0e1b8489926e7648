"""The rules a config value is checked with: each takes the value and returns what is wrong with
it (``expected ..., got ...``) or None. A config field names its rule where it is declared
(:func:`sparse_engine.runs.options.option`); a config raises
:class:`~sparse_engine.runs.config.ConfigError` with the first rule that fails."""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

from ..memory import parse_size


def or_none(rule):
    """``rule``, with None (the option not given) allowed too."""
    def check(value):
        return None if value is None else rule(value)
    return check


def one_of(choices):
    """One of ``choices`` (a tuple, or a function that returns it when first needed: the analysis
    package's names, which load scipy)."""
    def check(value):
        names = choices() if callable(choices) else choices
        if value not in names:
            return f"expected one of {', '.join(names)}; got {value!r}"
    return check


#: the largest integer an option may be: torch and numpy take sizes and counts as int64
INT64_MAX = 2**63 - 1


def integer(low: int):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            return f"expected an integer >= {low}, got {value!r}"
        if value > INT64_MAX:
            return f"expected an integer >= {low} and at most {INT64_MAX:,}, got {value!r}"
    return check


def fraction(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        return f"expected a number in (0, 1], got {value!r}"


def positive(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < math.inf):
        return f"expected a finite number > 0, got {value!r}"


def non_negative(value):
    """A finite number >= 0 (a learning rate of 0: the untrained control of a test)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 <= value < math.inf):
        return f"expected a finite number >= 0, got {value!r}"


def path(value):
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        return f"expected a path, got {value!r}"


def checkpoint_or_none(value):
    """A checkpoint path ``analyze`` can read back: a checkpoint suffix."""
    if value is None or path(value) is not None:
        return or_none(path)(value)
    from ..analysis.recurrent import CHECKPOINT_SUFFIXES

    if Path(value).suffix.lower() not in CHECKPOINT_SUFFIXES:
        return f"expected a checkpoint file name ending in {', '.join(CHECKPOINT_SUFFIXES)}, got {str(value)!r}"


def string(value):
    if not isinstance(value, str):
        return f"expected a string, got {value!r}"


def flag(value):
    if not isinstance(value, bool):
        return f"expected True or False, got {value!r}"


def hidden(value):
    """Hidden units: one int (per layer), or for --model mlp a list of layer sizes."""
    if isinstance(value, (tuple, list)):
        if not value or any(integer(1)(v) for v in value):
            return f"expected integers >= 1 separated by commas, got {','.join(map(str, value)) or 'nothing'}"
        return None
    return integer(1)(value)


def fraction_below_one(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        return f"expected a number in [0, 1), got {value!r}"


def unit(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        return f"expected a number in [0, 1], got {value!r}"


def recompute_every(value):
    """``--recompute-every``: None (store every step), a positive integer, or 'auto' (the budget picks)."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        return f"expected an integer >= 1, auto or none, got {value!r}"


def size_or_none(value):
    """A memory size: bytes (an int), or text such as 16G or 512M; None: the default."""
    if value is None:
        return None
    try:
        parse_size(value)
    except ValueError as exc:
        return str(exc)
