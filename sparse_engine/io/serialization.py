"""Loading whole pickled models with ``torch.load(..., weights_only=True)``.

``torch.load`` unpickles only allowlisted classes when ``weights_only=True`` (its default since
PyTorch 2.6). A model pickled whole (``torch.save(model, f)``, as PyTorch's word-language-model
example does) names the class of every submodule, so every module class of sparse-engine must be
allowed. :func:`safe_globals` lists them; it finds them generically (every ``nn.Module`` subclass
defined under ``sparse_engine``, after importing :mod:`sparse_engine.nn` and
:mod:`sparse_engine.models`), so a module added later is listed without editing this file.

Allowing these classes is safe: unpickling one only creates the object and restores its
``__dict__`` (``nn.Module.__setstate__``; a class that overrides it is left out), so it runs no
code of the file's choosing. A real model also names its own classes and torch.nn's
(``torch.nn.Embedding``, ``torch.nn.Dropout``, ...; torch allows no module class by default):
:func:`safe_globals_for` lists all three, given the model's own classes (or the Python modules
that define them)::

    with torch.serialization.safe_globals(sparse_engine.io.serialization.safe_globals_for(MyModel)):
        model = torch.load(path, weights_only=True)

or once per process: ``torch.serialization.add_safe_globals(safe_globals_for(MyModel))``. torch.nn's
module classes are torch's own code: the few that override ``__setstate__`` (the RNNs, convolutions,
attention, softmax) only restore and complete their attributes.

Why ``import sparse_engine`` does not register them itself: torch's ``safe_globals`` context
manager removes its whole list on exit, including entries that were registered before it, so the
first ``with torch.serialization.safe_globals([..., SparseLSTM])`` anywhere (the example's way)
would silently undo an import-time registration and later loads would fail or not depending on
the order of calls. Since every caller lists its own classes anyway, one explicit list is simpler.
Nothing else is needed: a SparseWeight's extra state is a dict holding a tuple of ints.
"""
from __future__ import annotations

import importlib
import pkgutil
import types

from torch import nn

__all__ = ["safe_globals", "safe_globals_for"]

_PACKAGE = __name__.partition(".")[0]  # "sparse_engine"


def _import_module_packages() -> None:
    """Imports every module that defines our nn.Modules: all of sparse_engine.nn, the models
    and the SparseWeight storage (not the analysis, CLI or training code: they define none)."""
    from .. import models, nn as snn, sparse  # noqa: F401

    for info in pkgutil.iter_modules(snn.__path__, snn.__name__ + "."):
        importlib.import_module(info.name)


def _subclasses(cls: type):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def safe_globals() -> list[type]:
    """Every ``nn.Module`` subclass defined in sparse_engine whose unpickling is
    ``nn.Module.__setstate__`` (so not :class:`sparse_engine.distributed.DistributedDataParallel`,
    whose torch base class reconnects to a process group when unpickled), sorted by qualified name.
    Base classes that a pickle never names are listed too; that is harmless."""
    _import_module_packages()
    found = {c for c in _subclasses(nn.Module)
             if (c.__module__ == _PACKAGE or c.__module__.startswith(_PACKAGE + "."))
             and c.__setstate__ is nn.Module.__setstate__}
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _torch_nn_classes() -> list[type]:
    """Every module class torch.nn exports (``torch.nn.Linear``, ``torch.nn.Dropout``, ...)."""
    return [c for c in vars(nn).values() if isinstance(c, type) and issubclass(c, nn.Module)]


def safe_globals_for(*classes) -> list[type]:
    """What ``torch.load(..., weights_only=True)`` must allow to load a whole pickled model built of
    torch.nn's layers, ours and the caller's: ``classes`` (the model's own ``nn.Module`` classes, or
    Python modules, of which every ``nn.Module`` class defined there is taken), every module class
    of torch.nn, and :func:`safe_globals`. TypeError for anything else."""
    own = []
    for c in classes:
        if isinstance(c, type) and issubclass(c, nn.Module):
            own.append(c)
        elif isinstance(c, types.ModuleType):
            own += [v for v in vars(c).values()
                    if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == c.__name__]
        else:
            raise TypeError(f"classes must be nn.Module classes or Python modules, got {c!r}")
    return list(dict.fromkeys([*own, *_torch_nn_classes(), *safe_globals()]))
