"""Data-parallel training with 2 CPU processes (gloo): DDP averages the sparse values' gradients,
every controller's updates come out identical on both ranks and equal to one process that sees
the whole batch, nnz changes go through rewrap, divergence is caught and repaired.

All scenarios run in ONE pair of spawned processes (the module fixture ``results``: each process
runs ``worker``, which runs every scenario of the first half of this file); each test checks one
scenario's results. A hang fails: collectives time out after 30 s and the whole run is killed
after 150 s."""
import os
import sys
import traceback
from datetime import timedelta

import pytest
import torch
import torch._dynamo  # noqa: F401  (before any process group, as init_from_env: see end_process_group)
import torch.distributed as dist

from sparse_engine.training import sparse_weights

if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available in this torch build",
                allow_module_level=True)

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from sparse_engine.distributed import (DistributedDataParallel, broadcast_topology,  # noqa: E402
                                       check_topology_in_sync, end_process_group, rewrap)
from sparse_engine.nn import SparseLinear, SparseLSTM  # noqa: E402
from sparse_engine.training import SET, DeepR, GradualMagnitudePruning, RigL, SelfishRNN  # noqa: E402

# ======================================================= the scenarios (run in the spawned processes)
# Each runs on every rank of a 2-process gloo group (and, with ``world=1``, in the test process
# itself as the single-process reference on the whole batch).
BATCH = 8  # per rank


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = SparseLSTM(5, 16, density=0.3)
        self.head = SparseLinear(16, 3, density=0.5)

    def forward(self, x):  # x: (T, B, 5)
        y, _ = self.lstm(x)
        return self.head(y[-1])


def mlp():
    return nn.Sequential(SparseLinear(12, 24, density=0.3), nn.Tanh(), SparseLinear(24, 6, density=0.3))


MODELS = {"mlp": mlp, "lstm": LSTMNet}
CONTROLLERS = {
    "set": lambda net, opt: SET(net, opt, zeta=0.3, init="normal", seed=1),
    "rigl": lambda net, opt: RigL(net, opt, end_step=12, update_every=2, update_fraction=0.3, grad_method="exact",
                                  seed=2),
    "rigl_sample": lambda net, opt: RigL(net, opt, end_step=12, update_every=2, update_fraction=0.3,
                                         grad_method="sample", sample_factor=2, seed=5),
    "gmp": lambda net, opt: GradualMagnitudePruning(net, opt, final_density=0.1, end_step=8, frequency=2),
    "selfish": lambda net, opt: SelfishRNN(net, opt, total_steps=12, growth="gradient", grad_method="exact",
                                           redistribution="magnitude", seed=3),
    "deepr": lambda net, opt: DeepR(net, opt, l1=1e-3, temperature=1e-3, rewire_every=2, seed=4),
}


def batch(model: str, t: int, rank: int, world: int):
    """Step t's global batch of 2 * BATCH samples; rank r of ``world`` ranks gets its share."""
    g = torch.Generator().manual_seed(1000 + t)
    n = 2 * BATCH
    if model == "lstm":
        x, y = torch.randn(4, n, 5, generator=g), torch.randn(n, 3, generator=g)
    else:
        x, y = torch.randn(n, 12, generator=g), torch.randn(n, 6, generator=g)
    if world == 1:
        return x, y
    share = slice(rank * n // world, (rank + 1) * n // world)
    return (x[:, share] if model == "lstm" else x[share]), y[share]


def snapshot(net):
    return {n: (w.row_ptr.clone(), w.col_idx.clone(), w.values.detach().clone())
            for n, w in sparse_weights(net).items()}


def train(model: str, controller: str, steps: int = 12, epoch_len: int = 3, ddp: str | None = None,
          local_factors: bool = False):
    """Trains with the controller; returns the snapshot after every step. ``ddp``: None (one process),
    "sparse" (DistributedDataParallel + rewrap + check after every step) or "torch" (plain torch DDP)."""
    torch.manual_seed(0)
    net = MODELS[model]().double()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    if ddp == "sparse":
        run = DistributedDataParallel(net)
    elif ddp == "torch":
        run = torch.nn.parallel.DistributedDataParallel(net)
    else:
        run = net
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    ctl = CONTROLLERS[controller](net, opt)
    if local_factors:
        ctl.recorder.global_factors = False
    snaps = []
    for t in range(steps):
        x, y = batch(model, t, rank, world)
        opt.zero_grad()
        F.mse_loss(run(x.double()), y.double()).backward()
        opt.step()
        ctl.step()
        if (t + 1) % epoch_len == 0:
            ctl.end_epoch()
        if ddp == "sparse":
            run = rewrap(run)
        if ddp:
            check_topology_in_sync(net, values=True)
        snaps.append(snapshot(net))
    return snaps


# --------------------------------------------------------------- distributed-only scenarios
def forgotten_rewrap():
    """GMP changes nnz; the next forward through the old DDP must raise, not hang or mis-average."""
    torch.manual_seed(0)
    net = mlp().double()
    run = DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ctl = CONTROLLERS["gmp"](net, opt)
    x, y = batch("mlp", 0, dist.get_rank(), 2)
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(run(x.double()), y.double()).backward()
        opt.step()
        ctl.step()
    try:
        run(x.double())
    except RuntimeError as e:
        return str(e)
    return None


def diverged():
    """Ranks build different topologies (other seed and density) and take a local Adam step."""
    rank = dist.get_rank()
    torch.manual_seed(10 + rank)
    net = nn.Sequential(SparseLinear(12, 24, density=0.3 + 0.1 * rank), nn.Tanh(), SparseLinear(24, 6, density=0.3))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = batch("mlp", 0, rank, 2)
    F.mse_loss(net(x), y).backward()
    opt.step()
    out = {}
    try:
        check_topology_in_sync(net)
    except RuntimeError as e:
        out["error"] = str(e)
    broadcast_topology(net, src=0, optimizer=opt)
    check_topology_in_sync(net, values=True)
    out["weights"] = snapshot(net)
    out["state"] = {n: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[w.values].items()}
                    for n, w in sparse_weights(net).items()}
    # under DDP: rank 1 drops entries (a bug), the check names the layer, broadcast + rewrap repair it
    torch.manual_seed(0)
    net3 = mlp().double()
    run = DistributedDataParallel(net3)
    opt3 = torch.optim.Adam(net3.parameters(), lr=0.01)
    x, y = (t.double() for t in batch("mlp", 1, rank, 2))
    F.mse_loss(run(x), y).backward()
    opt3.step()
    if rank == 1:
        from sparse_engine.training import magnitude_keep, rewire
        w = net3[2].weight
        rewire(w, magnitude_keep(w.values, 3), optimizer=opt3)
    try:  # only rank 1 changed size: both ranks still rebuild, and the check names the layer
        rewrap(run)
    except RuntimeError as e:
        out["error_rewrap"] = str(e)
    try:
        check_topology_in_sync(net3)
    except RuntimeError as e:
        out["error_ddp"] = str(e)
    broadcast_topology(net3, optimizer=opt3)
    run = rewrap(run)
    ctl = SET(net3, opt3, zeta=0.3, seed=1)
    for t in range(2, 5):
        x, y = (t_.double() for t_ in batch("mlp", t, rank, 2))
        opt3.zero_grad()
        F.mse_loss(run(x), y).backward()
        opt3.step()
        ctl.end_epoch()
        check_topology_in_sync(net3, values=True)
    out["repaired"] = snapshot(net3)
    # a model built with per-rank seeds agrees once wrapped (rank 0's topology, as DDP does for values)
    torch.manual_seed(20 + rank)
    net2 = mlp()
    DistributedDataParallel(net2)
    check_topology_in_sync(net2, values=True)
    return out


def gathered_factors():
    """Uneven local batches (8 and 5 samples): the recorder's factors hold both ranks' columns and
    give exactly DDP's averaged gradient at the stored entries (sddmm(G, X) == values.grad)."""
    from sparse_engine import ops

    rank = dist.get_rank()
    torch.manual_seed(0)
    net = mlp().double()
    run = DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ctl = RigL(net, opt, end_step=10, update_every=1, grad_method="exact")
    x, y = batch("mlp", 0, 0, 1)
    x, y = (x[:BATCH], y[:BATCH]) if rank == 0 else (x[BATCH:BATCH + 5], y[BATCH:BATCH + 5])
    F.mse_loss(run(x.double()), y.double()).backward()
    out = {}
    for name, w in ctl.weights.items():
        G, X = ctl.recorder.factors(w)
        out[name] = (G.shape[1], ops.sddmm(w, G, X).detach(), w.values.grad.clone())
    return out


TRAINING_CASES = [("mlp", "set"), ("mlp", "rigl"), ("mlp", "rigl_sample"), ("mlp", "gmp"), ("mlp", "deepr"),
                  ("lstm", "rigl"), ("lstm", "selfish")]
SCENARIOS = {
    **{f"{m}-{c}": (lambda m=m, c=c: train(m, c, ddp="sparse")) for m, c in TRAINING_CASES},
    "torch-ddp-set": lambda: train("mlp", "set", steps=6, ddp="torch"),
    "local-factors": lambda: train("mlp", "rigl", steps=2, ddp="sparse", local_factors=True),
    "forgotten-rewrap": forgotten_rewrap,
    "diverged": diverged,
    "factors": gathered_factors,
}


def worker(rank: int, world: int, init_file: str, out_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    results = {}
    try:
        for name, fn in SCENARIOS.items():
            try:
                results[name] = ("ok", fn())
            except Exception:
                results[name] = ("error", traceback.format_exc())
            dist.barrier()
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        end_process_group()


# ============================================================= the tests (in the test process)
WORLD = 2
DEADLINE_S = 150


@pytest.fixture(scope="module")
def results(tmp_path_factory, spawn_ranks):
    return spawn_ranks(worker, WORLD, tmp_path_factory.mktemp("ddp"), DEADLINE_S)


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


CASES = TRAINING_CASES


@pytest.mark.parametrize("model,controller", CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_ddp_training_matches_one_process_on_the_whole_batch(results, model, controller):
    """After every step (and update) both ranks hold identical patterns and values (also checked on the
    ranks by check_topology_in_sync(values=True)), equal to one process training on both halves of
    each batch: for RigL and SelfishRNN the grown positions come from the global gradient (exact:
    gathered factors; sample: candidates' gradients summed over the ranks)."""
    r0, r1 = outcome(results, f"{model}-{controller}")
    ref = train(model, controller)
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
            assert m == BATCH + 5
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
    net = mlp()
    before = snapshot(net)
    check_topology_in_sync(net)
    broadcast_topology(net)
    assert_same_weights(before, snapshot(net))
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

    root = Path(__file__).resolve().parents[2]
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
