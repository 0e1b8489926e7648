"""The fixture both files of tests/distributed share: ``spawn_ranks``, which runs a worker in one
spawned process per rank and collects what each rank saved."""
from __future__ import annotations

import os
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp


@pytest.fixture(scope="session")
def spawn_ranks():
    """``spawn_ranks(worker, world, folder, deadline_s=150, prefix="rank")``: runs
    ``worker(rank, world, init_file, folder)`` in ``world`` spawned processes (each writes
    ``folder/<prefix><rank>.pt``) and returns the ranks' saved objects in rank order. A run that
    outlives the deadline (a hang) fails the test; its processes are killed."""
    def run(worker, world: int, folder, deadline_s: float = 150, prefix: str = "rank") -> list:
        if sys.platform.startswith("linux") and os.path.exists("/sys/class/net/lo"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        ctx = mp.start_processes(worker, args=(world, str(folder / "init"), str(folder)), nprocs=world, join=False,
                                 start_method="spawn")
        deadline = time.monotonic() + deadline_s
        try:
            while not ctx.join(timeout=5):
                if time.monotonic() > deadline:
                    pytest.fail(f"the {world} processes did not finish within {deadline_s} s (hang?)")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
        return [torch.load(folder / f"{prefix}{r}.pt", weights_only=False) for r in range(world)]
    return run
