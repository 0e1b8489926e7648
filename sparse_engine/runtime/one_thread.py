"""The backward of the dense path's recurrence on one thread, where its forward ran on one.

torch's recurrence on the CPU records a few autograd nodes per layer-direction (oneDNN's LSTM layer one;
our fused GRU its input product, its steps and some views). Its backward, like its forward, is a run of
small parallel regions, each of which wakes a sleeping thread on a machine whose torch threads wait
briefly (what ``import sparse_engine`` sets). :func:`on_one_thread` hooks the nodes that one call of the
recurrence recorded: a pre-hook enters :func:`~sparse_engine.runtime.threads.one_thread_here` for the
thread running the backward and a post-hook leaves it, so exactly those nodes run on one thread and
every other node of the user's graph on torch's threads. The graph itself is unchanged (double backward,
``retain_graph``, the memory it holds: all as without the hooks).

A node whose backward raises never reaches its post-hook: the scope it left open is closed at the
next forward of the dense path on that thread (:func:`close_left_scopes`), or by hand.
"""
from __future__ import annotations

import threading

from ..runtime.threads import one_thread_here

__all__ = ["on_one_thread", "close_left_scopes", "MAX_NODES"]

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
    """Closes the one-thread scopes this thread's hooks left open (a hooked backward that raised);
    returns how many."""
    scopes = _scopes()
    n = len(scopes)
    while scopes:
        scopes.pop().__exit__(None, None, None)
    return n


def _enter(grad_outputs):
    scope = one_thread_here()
    scope.__enter__()
    _scopes().append(scope)


def _leave(grad_inputs, grad_outputs):
    scopes = _scopes()
    if scopes:
        scopes.pop().__exit__(None, None, None)


def recorded_nodes(outputs, inputs) -> list | None:
    """The autograd nodes between ``outputs`` and ``inputs`` (those of one call), or None if more than
    :data:`MAX_NODES`."""
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


def on_one_thread(outputs, inputs) -> bool:
    """Hooks the nodes recorded between ``outputs`` and ``inputs`` (tensors; None skipped) to run their
    backward on one thread. False (nothing hooked) where there are more than :data:`MAX_NODES`."""
    nodes = recorded_nodes(outputs, inputs)
    if nodes is None:
        return False
    for node in nodes:
        node.register_prehook(_enter)
        node.register_hook(_leave)
    return True
