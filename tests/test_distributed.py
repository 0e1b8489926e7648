"""Data-parallel training with 2 CPU processes (gloo): DDP averages the sparse values' gradients,
every controller's updates come out identical on both ranks and equal to one process that sees
the whole batch, nnz changes go through rewrap, divergence is caught and repaired.

All scenarios run in ONE pair of spawned processes (module fixture; see _distributed_util.py);
each test checks one scenario's results. A hang fails: collectives time out after 30 s and the
whole run is killed after 150 s."""
import os
import sys
import time

import pytest
import torch
import torch.distributed as dist

from sparse_engine.training import sparse_weights

if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available in this torch build",
                allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

import _distributed_util as du  # noqa: E402

WORLD = 2
DEADLINE_S = 150


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    if sys.platform.startswith("linux") and os.path.exists("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    ctx = mp.start_processes(du.worker, args=(WORLD, str(tmp / "init"), str(tmp)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} gloo processes did not finish within {DEADLINE_S} s (hang?)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def outcome(results, name):
    """The scenario's return value on each rank; fails with the worker's traceback on an error."""
    out = []
    for r, res in enumerate(results):
        status, value = res[name]
        if status != "ok":
            pytest.fail(f"scenario {name} failed on rank {r}:\n{value}")
        out.append(value)
    return out


def assert_same_weights(a, b, exact=True):
    assert a.keys() == b.keys()
    for name in a:
        (rp_a, ci_a, v_a), (rp_b, ci_b, v_b) = a[name], b[name]
        assert torch.equal(rp_a, rp_b) and torch.equal(ci_a, ci_b), f"{name}: patterns differ"
        if exact:
            assert torch.equal(v_a, v_b), f"{name}: values differ"
        else:
            torch.testing.assert_close(v_a, v_b, rtol=1e-9, atol=1e-12, msg=f"{name}: values differ")


CASES = du.TRAINING_CASES


@pytest.mark.parametrize("model,controller", CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_ddp_training_matches_one_process_on_the_whole_batch(results, model, controller):
    """After every step (and update) both ranks hold identical patterns and values (also checked on the
    ranks by check_topology_in_sync(values=True)), equal to one process training on both halves of
    each batch: for RigL and SelfishRNN the grown positions come from the global gradient (exact:
    gathered factors; sample: candidates' gradients summed over the ranks)."""
    r0, r1 = outcome(results, f"{model}-{controller}")
    ref = du.train(model, controller)
    assert len(r0) == len(r1) == len(ref)
    changed = 0
    for t, (a, b, c) in enumerate(zip(r0, r1, ref)):
        assert_same_weights(a, b, exact=True)
        assert_same_weights(a, c, exact=False)
        prev = r0[t - 1] if t else None
        changed += prev is not None and any(not torch.equal(a[n][1], prev[n][1]) for n in a)
    assert changed >= 2, "the controller should have changed the topology during the run"
    if controller in ("gmp", "selfish"):  # nnz changed, so rewrap built new DDPs
        assert any(a[n][1].numel() != r0[0][n][1].numel() for a in r0 for n in a)


def test_plain_torch_ddp_keeps_averaging_after_same_nnz_updates(results):
    """torch's own DDP survives SET updates (same nnz): values stay identical on both ranks."""
    r0, r1 = outcome(results, "torch-ddp-set")
    for a, b in zip(r0, r1):
        assert_same_weights(a, b, exact=True)
    assert not torch.equal(r0[0]["0.weight"][1], r0[-1]["0.weight"][1])


def test_local_gradient_factors_diverge_and_the_check_catches_it(results):
    """Control for the gathered factors: RigL growing from each rank's own batch picks different
    positions, and check_topology_in_sync raises naming the layers."""
    for status, value in (res["local-factors"] for res in results):
        assert status == "error"
        assert "RuntimeError: sparse topology differs across ranks in" in value
        assert "0.weight (pattern differs" in value


def test_gathered_factors_give_the_averaged_gradient(results):
    """G X^T from the gathered factors equals DDP's averaged gradient (uneven batches 8 + 5)."""
    for out in outcome(results, "factors"):
        for name, (m, from_factors, grad) in out.items():
            assert m == du.BATCH + 5
            torch.testing.assert_close(from_factors, grad, rtol=1e-10, atol=1e-13, msg=name)


def test_forgotten_rewrap_raises_a_clear_error(results):
    msgs = outcome(results, "forgotten-rewrap")
    for msg in msgs:
        assert msg is not None and "changed size" in msg and "rewrap" in msg and "0.weight: nnz" in msg


def test_diverged_ranks_are_detected_and_repaired_by_broadcast(results):
    r0, r1 = outcome(results, "diverged")
    for out in (r0, r1):
        assert "0.weight (nnz differs; nnz per rank" in out["error"]
    assert_same_weights(r0["weights"], r1["weights"], exact=True)
    for out in (r0, r1):  # under DDP: found, broadcast, rewrapped, trained on in sync
        assert "2.weight (nnz differs; nnz per rank" in out["error_ddp"] and "0.weight" not in out["error_ddp"]
        assert "2.weight (nnz differs; nnz per rank" in out.get("error_rewrap", "")  # on both ranks, no hang
    assert_same_weights(r0["repaired"], r1["repaired"], exact=True)
    assert r0["weights"]["0.weight"][1].numel() != 0
    for name in r0["state"]:
        s0, s1 = r0["state"][name], r1["state"][name]
        assert s0.keys() == s1.keys() == {"step", "exp_avg", "exp_avg_sq"}
        for k in s0:
            assert torch.equal(torch.as_tensor(s0[k]), torch.as_tensor(s1[k])), f"{name}.{k}"
        assert s0["exp_avg"].shape == r0["weights"][name][2].shape


def test_without_torch_distributed_everything_is_a_no_op():
    from sparse_engine.distributed import broadcast_topology, check_topology_in_sync, topology_fingerprint

    torch.manual_seed(0)
    net = du.mlp()
    before = du.snapshot(net)
    check_topology_in_sync(net)
    broadcast_topology(net)
    assert_same_weights(before, du.snapshot(net))
    fp = topology_fingerprint(net, values=True)
    assert fp.shape == (2, 6) and fp.dtype == torch.int64
    assert fp[:, 3].tolist() == [w.nnz for w in sparse_weights(net).values()]


def test_fingerprint_tells_patterns_and_values_apart():
    """Moving one entry to another column changes the pattern hash; changing one value changes only
    the values hash; the same pattern built twice hashes the same."""
    from sparse_engine import SparseWeight
    from sparse_engine.distributed import topology_fingerprint

    g = torch.Generator().manual_seed(5)
    a = SparseWeight.random(20, 30, 0.2, generator=g)
    b = SparseWeight(a.row_ptr.clone(), a.col_idx.clone(), a.values.detach().clone(), a.shape)
    fa, fb = topology_fingerprint(a, values=True), topology_fingerprint(b, values=True)
    assert torch.equal(fa, fb)
    with torch.no_grad():
        b.values[3] += 1e-6
    fb = topology_fingerprint(b, values=True)
    assert fb[0, 4] == fa[0, 4] and fb[0, 5] != fa[0, 5]
    ci = a.col_idx.clone()
    row0 = set(ci[: int(a.row_ptr[1])].tolist())
    free = next(c for c in range(30) if c not in row0)
    ci[0] = free
    order = torch.argsort(ci[: int(a.row_ptr[1])])
    ci[: int(a.row_ptr[1])] = ci[: int(a.row_ptr[1])][order]
    c = SparseWeight(a.row_ptr.clone(), ci, a.values.detach().clone(), a.shape)
    assert topology_fingerprint(c)[0, 4] != fa[0, 4]


def test_example_runs_under_torchrun():
    """examples/ddp_set.py as documented (torchrun, 2 CPU processes), a short run."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(root / "examples" / "ddp_set.py"), "--epochs", "3"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 120 s:\n{e.stdout}\n{e.stderr}")
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(s for s in done.stdout.splitlines() if "test accuracy" in s)
    assert line.startswith("2 process(es), 3 epochs of SET")
    assert float(line.split("test accuracy ")[1].split(",")[0]) > 0.5  # chance is 0.1
