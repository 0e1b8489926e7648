"""The process around a test: a thread count for a block, and memory probes (the tensor allocations
of a step, the resident peak of a step in a fresh process)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch



# ---------------------------------------------------------------------------- threads
@contextlib.contextmanager
def num_threads(n: int):
    """torch's intra-op threads (the kernels' OpenMP team) set to ``n`` for the block, restored
    after: for tests that compare results on 1 and 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- memory
class TensorMemoryTrace:
    """The CPU tensor memory of a block of code, byte for byte, from torch's own allocator: the
    allocations and frees that ``torch.profiler`` records with ``profile_memory=True`` (every
    tensor of the CPU allocator, the kernels' temporaries included), summed in time order. It does
    not depend on glibc's malloc (which keeps freed blocks and maps large ones afresh, so the
    resident size says as much about malloc as about the tensors). Only tensors made inside the
    trace count (a free is matched to its allocation by address), so build what you measure
    inside it::

        with TensorMemoryTrace() as trace:
            model, opt = build()
            step()                          # warm-up: transposed index, optimizer state
            with trace.phase("forward"):
                ...
        trace.peak("forward")               # bytes live at the phase's high-water mark

    (:mod:`sparse_engine.memory` is checked against it: tests/memory/test_memory_model.py)."""

    def __init__(self):
        self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        self._timeline: list[tuple[int, int]] = []   # (ns, live bytes after the event)
        self._phases: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> "TensorMemoryTrace":
        self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._prof.__exit__(*exc)
        allocs, todo = [], list(self._prof.profiler.kineto_results.experimental_event_tree())
        allocation = torch._C._profiler._EventType.Allocation
        while todo:
            e = todo.pop()
            todo.extend(e.children)
            if e.tag == allocation:
                f = e.extra_fields
                if f.device.type == "cpu":
                    allocs.append((e.start_time_ns, f.ptr, f.alloc_size))
            elif e.name.startswith("trace:"):
                self._phases[e.name[len("trace:"):]] = (e.start_time_ns, e.end_time_ns)
        live, sizes, timeline = 0, {}, []
        for t, ptr, nbytes in sorted(allocs):
            if nbytes > 0:
                sizes[ptr] = nbytes
            elif sizes.pop(ptr, None) is None:
                continue  # made before the trace
            live += nbytes
            timeline.append((t, live))
        self._timeline = timeline

    def phase(self, name: str):
        """A block whose peak :meth:`peak` reports under ``name``."""
        return torch.profiler.record_function("trace:" + name)

    def peak(self, name: str | None = None) -> int:
        """Bytes live at the high-water mark of phase ``name`` (None: of the whole trace), counted
        from the trace's start."""
        if name is None:
            return max((live for _, live in self._timeline), default=0)
        if name not in self._phases:
            raise KeyError(f"no phase {name!r} was traced; phases: {sorted(self._phases)}")
        start, end = self._phases[name]
        before = [live for t, live in self._timeline if t < start]
        inside = [live for t, live in self._timeline if start <= t <= end]
        return max(before[-1:] + inside, default=0)


_PEAK_PROBE = """
from sparse_engine.runtime.timing import peak_rss_bytes, rss_bytes
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) from here on
_before = rss_bytes()
{step}
print(peak_rss_bytes() - _before)
"""


def peak_rss_growth(setup: str, step: str, *, env: dict | None = None, timeout: float = 300) -> int:
    """Bytes by which the resident peak of a fresh Python process rises while it runs the code
    ``step`` after the code ``setup`` (build there what the step needs, and run the step once
    there on small inputs, so the allocator and the kernels are warm). Linux (``/proc/self``).
    The process imports this sparse_engine; ``env`` adds environment variables: ``OMP_NUM_THREADS``,
    ``GLIBC_TUNABLES`` (with ``glibc.malloc.mmap_threshold`` low, the peak is that of live tensors)."""
    root = str(Path(__file__).resolve().parents[1])
    script = textwrap.dedent(setup) + _PEAK_PROBE.format(step=textwrap.dedent(step).strip())
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root, **(env or {})}, timeout=timeout)
    return int(out.stdout.split()[-1])
