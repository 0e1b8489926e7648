"""Small recurrences on one thread, forward and backward.

torch's recurrence on the CPU (``torch.lstm`` and its kin, our fused GRU) is a run of small parallel regions,
and records a few autograd nodes per layer-direction (oneDNN's LSTM layer one; our fused GRU its input
product, its steps and some views) whose backward is such a run too. On a machine whose torch threads
sleep between parallel regions (what ``import sparse_engine`` sets: :mod:`.threads`) each region wakes a
thread, and a small recurrence runs several times faster on one (docs/compute_paths.md, "Training on
several threads"). :func:`backward_on_one_thread` hooks the nodes that one call recorded: a pre-hook enters
:func:`~sparse_engine.runtime.threads.one_thread_here` for the thread running the backward and a post-hook
leaves it, so exactly those nodes run on one thread and every other node of the graph on torch's threads.
The graph itself is unchanged (double backward, ``retain_graph``, the memory it holds: all as without
the hooks). The dense compute path of our recurrent modules does this for small layers by itself;
:func:`on_one_thread` does it for a module of the user's (a ``torch.nn.LSTM`` beside ours).

A node whose backward raises never reaches its post-hook: the scope it left open is closed by
:func:`close_left_scopes` (at the next forward of our dense path or of a module under :func:`on_one_thread`
on that thread). Nothing here imports torch.
"""
from __future__ import annotations

import threading

from .threads import one_thread_here

__all__ = ["on_one_thread", "backward_on_one_thread", "close_left_scopes", "MAX_NODES"]

#: the most nodes a call may record for its backward to be hooked: oneDNN's LSTM and our fused GRU
#: record a few per layer-direction; torch's recurrences made of one op per gate and step (float64
#: LSTMs, packed sequences) record thousands, whose hooks would cost more than the wake-ups.
MAX_NODES = 64

_open = threading.local()


def _scopes() -> list:
    if not hasattr(_open, "scopes"):
        _open.scopes = []
    return _open.scopes


def close_left_scopes() -> int:
    """Closes the one-thread scopes this thread's backward hooks left open (a hooked backward that raised:
    its post-hook never ran); returns how many. Inside a backward pass (a forward recomputed by a
    checkpoint, a hook) it closes none: the scope of a node still running is not left open."""
    scopes, n = _scopes(), 0
    if not scopes or scopes[-1][0] != "backward" or _in_backward():  # the common case first: none open
        return 0
    while scopes and scopes[-1][0] == "backward":
        scopes.pop()[1].__exit__(None, None, None)
        n += 1
    return n


def _in_backward() -> bool:
    import torch

    task = getattr(torch._C, "_current_graph_task_id", None)  # -1 outside a backward pass
    return task is not None and task() != -1


def _push(kind: str) -> None:
    scope = one_thread_here()
    scope.__enter__()
    _scopes().append((kind, scope))


def _pop(kind: str) -> None:
    """Leaves the innermost scope of this ``kind`` and any left open inside it."""
    scopes = _scopes()
    if any(k == kind for k, _ in scopes):
        while True:
            k, scope = scopes.pop()
            scope.__exit__(None, None, None)
            if k == kind:
                return


def _enter(*_):
    _push("backward")


def _leave(*_):
    _pop("backward")


def recorded_nodes(outputs, inputs) -> list | None:
    """The autograd nodes between ``outputs`` and ``inputs`` (tensors; those of one call), or None if more
    than :data:`MAX_NODES`."""
    stop = {t.grad_fn for t in inputs if t is not None and t.grad_fn is not None}
    todo = [o.grad_fn for o in outputs if o is not None and o.grad_fn is not None]
    seen, nodes = set(), []
    while todo:
        node = todo.pop()
        if node in seen or node in stop or type(node).__name__ == "AccumulateGrad":
            continue
        seen.add(node)
        nodes.append(node)
        if len(nodes) > MAX_NODES:
            return None
        todo.extend(f for f, _ in node.next_functions if f is not None)
    return nodes


def backward_on_one_thread(outputs, inputs) -> bool:
    """Hooks the nodes recorded between ``outputs`` and ``inputs`` (tensors; None skipped) to run their
    backward on one thread. False (nothing hooked) where there are more than :data:`MAX_NODES`."""
    nodes = recorded_nodes(outputs, inputs)
    if nodes is None:
        return False
    for node in nodes:
        node.register_prehook(_enter)
        node.register_hook(_leave)
    return True


def _tensors(obj) -> list:
    """The tensors in ``obj`` (nested tuples, lists and dicts: a module's arguments, a PackedSequence)."""
    if hasattr(obj, "grad_fn"):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    return []


def on_one_thread(module):
    """Runs ``module``'s forward, and the backward of the nodes it records, on one thread (the thread that
    calls it; see the module's docstring): for a small recurrent module of torch's (``nn.LSTM``, ``nn.GRU``)
    in a process whose torch threads sleep between parallel regions, where each of its many small regions
    wakes a thread. Returns the hooks' handles (``.remove()`` each to undo). Only for small modules: a large
    product wants every thread (our dense path's bounds: W_hh up to 2^21 entries, a training step's product
    up to 11 x 2^19 multiply-adds)."""
    import torch

    def after(mod, args, kwargs, output):
        _pop("forward")  # also when the forward raised: always_call
        if output is not None and torch.is_grad_enabled():
            backward_on_one_thread(_tensors(output), _tensors((args, kwargs)))

    def before(mod, args, kwargs):
        close_left_scopes()
        _push("forward")

    return (module.register_forward_pre_hook(before, with_kwargs=True),
            module.register_forward_hook(after, with_kwargs=True, always_call=True))
