"""Old import paths of modules that moved, kept working with a ``DeprecationWarning``.

``import sparse_engine.threads`` (or ``from sparse_engine.checkpoint import ...``, or an old pickle
naming ``sparse_engine.resume.TrainProgress``) gets the module at its new path: the same module
object, not a copy, so its state and classes are shared. The finder below is installed by
``sparse_engine/__init__.py`` before anything else; ``sparse_engine.<old name>`` as an attribute
is answered by that file's ``__getattr__`` from the same table.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import warnings

#: old module (under sparse_engine, dotted below a subpackage) -> its home now
MOVED = {
    "_ext": "kernels",
    "library": "kernels.library",
    "constants": "kernels.constants",
    "threads": "runtime.threads",
    "timing": "runtime.timing",
    "checkpoint": "io.checkpoint",
    "resume": "io.resume",
    "serialization": "io.serialization",
    "export": "io.export",
    "training.selfish": "training.controllers.selfish",
    "training.set_mlp": "training.controllers.set_mlp",
}
_PACKAGE = __name__.rpartition(".")[0]


def new_module(old: str, stacklevel: int = 3):
    """The module that ``sparse_engine.<old>`` became, after a warning that names its new path."""
    new = f"{_PACKAGE}.{MOVED[old]}"
    warnings.warn(f"{_PACKAGE}.{old} moved to {new}; the old name will be removed in a future release",
                  DeprecationWarning, stacklevel=stacklevel)
    return importlib.import_module(new)


class _Loader(importlib.abc.Loader):
    def __init__(self, old: str):
        self.old = old

    def create_module(self, spec):
        return new_module(self.old, stacklevel=6)

    def exec_module(self, module):  # the module is already loaded at its new path
        pass


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds ``sparse_engine.<old>`` for every old name in :data:`MOVED`."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(_PACKAGE + ".")
        if old == fullname or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader(old))


def install() -> None:
    import sys

    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
