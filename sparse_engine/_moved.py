"""Every old import path of sparse-engine, in one place: they keep working, with a
``DeprecationWarning`` naming the new home, until they are removed in release 0.2.0 (README,
"Old import paths").

Two kinds:

* :data:`MOVED`, modules that moved: ``import sparse_engine.threads`` (or ``from
  sparse_engine.checkpoint import ...``, or an old pickle naming ``sparse_engine.resume.TrainProgress``)
  gets the module at its new path: the same module object, not a copy, so its state and classes are
  shared. The finder below is installed by ``sparse_engine/__init__.py`` before anything else.
* :data:`OLD_NAMES`, names that left a module (or a package's submodules that moved):
  ``from sparse_engine.cli import SequenceModel`` or ``sparse_engine.training.selfish``. Each module
  named there answers them from its ``__getattr__``, which is :func:`old_name` bound to it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import warnings

_PACKAGE = __name__.rpartition(".")[0]

#: old module (under sparse_engine, dotted below a subpackage) -> its home now
MOVED = {
    "_ext": "kernels",
    "library": "kernels.library",
    "constants": "kernels.constants",
    "threads": "runtime.threads",
    "timing": "runtime.timing",
    "checkpoint": "io.checkpoint",
    "resume": "runs.resume",
    "io.resume": "runs.resume",
    "serialization": "io.serialization",
    "export": "io.export",
    "training.selfish": "training.controllers.selfish",
    "training.set_mlp": "training.controllers.set_mlp",
    "training.topology_torch": "kernels.topology_torch",
    "kernels.topology_cuda": "kernels.topology_torch",
    "kernels.densify_cuda": "kernels.densify_torch",
    "sparse.csr": "kernels.checks",
    "nn.recurrence": "recurrent.sequence",
    "nn.cell_table": "recurrent.cell_steps",
    "nn.products": "recurrent.products",
    "nn.compute": "recurrent.compute_paths",
    "nn.dense_rnn": "recurrent.dense_gru",
    "nn.functional": "nn.blocks",
    "nn.memory": "memory",
    "nn.memory_step": "memory.step_replay",
    "nn.memory_recurrence": "memory.recurrence_replay",
}

#: the Python kernels' functions were ``<op>_cuda``; training.topology_torch also named them ``<op>``
_TORCH_KERNELS = {
    "kernels.topology_torch": ("select_smallest", "set_prune", "compact", "random_empty", "merge", "remap_index",
                               "gather_or_zero", "coo_dot", "grad_topk", "rewire"),
    "kernels.densify_torch": ("scatter_csr", "gather_csr"),
}

#: module (as its ``__name__`` says) -> {old name: "module" or "module:name" (both under sparse_engine)}
OLD_NAMES = {
    f"{_PACKAGE}": {name: new for name, new in MOVED.items() if "." not in name},
    f"{_PACKAGE}.training": {"selfish": "training.controllers.selfish", "set_mlp": "training.controllers.set_mlp",
                             "topology_torch": "kernels.topology_torch"},
    f"{_PACKAGE}.kernels": {"topology_cuda": "kernels.topology_torch", "densify_cuda": "kernels.densify_torch"},
    f"{_PACKAGE}.sparse": {"csr": "kernels.checks"},
    f"{_PACKAGE}.nn": {old.partition(".")[2]: new for old, new in MOVED.items() if old.startswith("nn.")},
    f"{_PACKAGE}.cli": {"load_task": "data.tasks:load_task", "SequenceModel": "models:SequenceModel",
                        "check_paths": "runs:check_paths", "evaluate": "runs:evaluate", "load_matrix": "runs:load_matrix",
                        "plot_dir_problem": "runs:plot_dir_problem", "make_controller": "training.recipes:make_controller",
                        "resolve_device": "runs:resolve_device", "DEVICES": "runs.config:DEVICES",
                        "SPARSE_CHOICES": "runs.config:SPARSE_CHOICES", "MODELS": "models:MODELS",
                        "TASKS": "data.tasks:TASKS", "TASK_DATA": "data.tasks:TASK_DATA",
                        "ALGORITHMS": "training.recipes:ALGORITHMS", "MEMORY_OPTIMIZERS": "memory:OPTIMIZERS"},
    f"{_PACKAGE}.io": {"resume": "runs.resume"},
    f"{_PACKAGE}.runs.config": {"resume_config": "runs.resume:resume_config"},
    f"{_PACKAGE}.nn.rnn": {"weight_args": "recurrent.products:weight_args",
                           **{n: f"nn.weights:{n}" for n in ("EMPTY", "SELECTIONS", "fill_dense", "load_dense",
                                                             "nonzero_masks", "resolve_density", "sparsify")}},
    f"{_PACKAGE}.recurrent.sequence": {"batch_rows": "recurrent.layout:batch_rows",
                                       "RecordsGradFactors": "recurrent.factor_sink:RecordsGradFactors",
                                       "fused_ok": "recurrent.cell_steps:fused_ok",
                                       "check_input_dtype": "nn.sequences:check_input_dtype"},
    f"{_PACKAGE}.runs": {**{n: f"data.files:{n}" for n in ("input_path_problem", "output_path_problem")},
                         **{n: f"data.tasks:{n}" for n in ("TASK_DATA", "TASKS", "load_task", "task_data_problem")},
                         "TrainProgress": "runs.resume:TrainProgress", "HAS_CUDA_KERNELS": "kernels:HAS_CUDA_KERNELS",
                         "MODELS": "models:MODELS", "SequenceModel": "models:SequenceModel",
                         "best_of": "runtime.timing:best_of", "SparseWeight": "sparse:SparseWeight",
                         "sparse_weights": "sparse:sparse_weights",
                         **{n: f"training.recipes:{n}" for n in ("ALGORITHMS", "RECIPES", "get_recipe", "make_controller",
                                                                 "make_recipe_controller", "zhang_init")}},
    **{f"{_PACKAGE}.{module}": {f"{op}_cuda": f"{module}:{op}_torch" for op in ops} for module, ops in _TORCH_KERNELS.items()},
}
OLD_NAMES[f"{_PACKAGE}.kernels.topology_torch"].update({op: f"kernels.topology_torch:{op}_torch"
                                                        for op in _TORCH_KERNELS["kernels.topology_torch"]})
OLD_NAMES[f"{_PACKAGE}.kernels.topology_torch"].update({name: f"kernels.densify_torch:{op}_torch"
                                                        for op in _TORCH_KERNELS["kernels.densify_torch"]
                                                        for name in (op, f"{op}_cuda")})


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(f"{old} moved to {new}; the old name will be removed in release 0.2.0", DeprecationWarning,
                  stacklevel=stacklevel)


def new_module(old: str, stacklevel: int = 3):
    """The module that ``sparse_engine.<old>`` became, after a warning that names its new path."""
    new = f"{_PACKAGE}.{MOVED[old]}"
    _warn(f"{_PACKAGE}.{old}", new, stacklevel + 1)
    return importlib.import_module(new)


def old_name(module: str, stacklevel: int = 3):
    """The ``__getattr__`` of ``module``: its old names (:data:`OLD_NAMES`) answered from their new
    homes with a warning; any other name an AttributeError, as without it. ``stacklevel``: 3 when it
    is the module's ``__getattr__`` itself, one more per function that calls it."""
    table = OLD_NAMES[module]

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, _, new_name = table[name].partition(":")
        _warn(f"{module}.{name}", f"{_PACKAGE}.{where}" + (f".{new_name}" if new_name else ""), stacklevel)
        found = importlib.import_module(f"{_PACKAGE}.{where}")
        return getattr(found, new_name) if new_name else found

    return __getattr__


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
