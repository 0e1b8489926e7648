"""benchmarks/bench_rnn.py's floor columns (issue 44's table): the bytes a training step must move,
counted by hand on a small cell, the fraction of the larger floor that ours reaches, and --floor's
refusal on the CPU. The GPU's constants are stubbed: the arithmetic is what is checked."""
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIG = 1 << 40


def test_floor_bytes_counted_by_hand(load_script):
    bench = load_script("benchmarks/bench_rnn.py")
    # LSTM, H = 10, density 0.5: 0.5 * 40 * 10 = 200 nonzeros a matrix; B = 3, T = 2, float32.
    # once: 2 matrices x (200 x (4 index + 4 value + 4 gradient) + 8 x 41 row pointers) = 5,456
    #       + x, y, dy, dx: 4 x (2 x 3 x 10) x 4 = 960                               -> 6,416
    assert bench.floor_bytes("LSTM", 10, 0.5, 3, 2, on_chip=BIG, l2=BIG) == 6416
    # W_hh (200 x 8 = 1,600 bytes) off chip: read at each of the 2T = 4 steps, 3 more times: + 4,800
    assert bench.floor_bytes("LSTM", 10, 0.5, 3, 2, on_chip=1599, l2=BIG) == 11216
    assert bench.floor_bytes("LSTM", 10, 0.5, 3, 2, on_chip=1600, l2=BIG) == 6416
    # the state (10 x 3 x 4 = 120 bytes) twice L2's 60: half of each gather misses; a row of 12 bytes
    # is one 32-byte sector; 2 matrices x 3 products x T = 2 steps x 200 nonzeros x 32 x 0.5 = 38,400
    assert bench.floor_bytes("LSTM", 10, 0.5, 3, 2, on_chip=BIG, l2=60) == 6416 + 38400
    # a GRU: 3 gates, 150 nonzeros a matrix, row pointers 31: 2 x (1,800 + 248) + 960 = 5,056
    assert bench.floor_bytes("GRU", 10, 0.5, 3, 2, on_chip=BIG, l2=BIG) == 5056


def args(**kw):
    base = dict(batch=3, steps=2, repeats=1, warmup=0, compute=None, floor=True, bandwidth=6416 / 2e-3, l2=BIG,
                on_chip=BIG, inference=False)
    return Namespace(**{**base, **kw})


def row_of(bench, res):
    lines = bench.report([("LSTM", 10, 0.5, res)], ["sparse_engine", "masked_dense"], "cuda", args(), 0.0)
    head = next(ln for ln in lines if ln.startswith("| cell"))
    cells = [c.strip() for c in lines[lines.index(head) + 2].strip("|").split("|")]
    return dict(zip([c.strip() for c in head.strip("|").split("|")], cells))


def ok(ms):
    return {"status": "ok", "ms": ms, "peak_bytes": 2**30, "path": "persistent", "load": 0.5}


def test_the_fraction_is_the_larger_floor_over_ours(load_script, monkeypatch):
    bench = load_script("benchmarks/bench_rnn.py")
    # the hand-counted cell (args(): T = 2): 6,416 bytes at 6,416 / 2 ms -> 2.00 ms
    row = row_of(bench, {"sparse_engine": ok(4.0), bench.ONE_PER_ROW: ok(1.0), "masked_dense": ok(8.0)})
    assert row["memory floor"] == "2.00 ms" and row["% of floor"] == "50%"
    row = row_of(bench, {"sparse_engine": ok(4.0), bench.ONE_PER_ROW: ok(3.0)})
    assert row["% of floor"] == "75%" and row["ours at 1 nonzero a row"].startswith("3.0 ms")
    row = row_of(bench, {"sparse_engine": {"status": "fails"}, bench.ONE_PER_ROW: ok(3.0)})
    assert row["% of floor"] == "-"
    row = row_of(bench, {"sparse_engine": ok(1.0), bench.ONE_PER_ROW: {"status": "timeout > 9s"}})
    assert row["% of floor"] == "200%" and row["ours at 1 nonzero a row"] == "timeout > 9s"


def test_auto_vs_best_takes_the_fastest_path_or_baseline(load_script):
    bench = load_script("benchmarks/bench_rnn.py")

    def row(res):
        lines = bench.report([("LSTM", 10, 0.5, res)], ["sparse_engine", "sparse_engine_per_step",
                                                         "sparse_engine_dense", "masked_dense"], "cuda",
                             args(floor=False), 0.0)
        head = next(ln for ln in lines if ln.startswith("| cell"))
        cells = [c.strip() for c in lines[lines.index(head) + 2].strip("|").split("|")]
        return dict(zip([c.strip() for c in head.strip("|").split("|")], cells))
    got = row({"sparse_engine": ok(4.0), "sparse_engine_per_step": ok(5.0), "sparse_engine_dense": ok(3.0),
               "masked_dense": ok(6.0)})
    assert got["auto vs best"] == "0.75x" and got["auto vs per step"] == "1.25x"
    got = row({"sparse_engine": ok(4.0), "sparse_engine_per_step": {"status": "fails"}, "masked_dense": ok(2.0)})
    assert got["auto vs best"] == "0.50x" and got["auto vs per step"] == "-"
    assert row({"sparse_engine": ok(4.0)})["auto vs best"] == "-"


def test_floor_is_refused_on_the_cpu():
    out = subprocess.run([sys.executable, "benchmarks/bench_rnn.py", "--device", "cpu", "--floor", "--quick"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--floor needs --device cuda" in out.stderr


def test_main_runs_the_floor_after_ours_and_before_the_baselines(load_script, monkeypatch, tmp_path):
    """main(--device cuda) with the device and the children stubbed: the device's constants are read
    once, the latency floor's run is ours at one nonzero a row (density 1 / H, compute auto), after ours
    and before the baselines, and the table has the floor columns."""
    import torch

    bench = load_script("benchmarks/bench_rnn.py")
    calls = []

    def child(method, cell, H, density, device, repeats, warmup, timeout, compute=None, T=35, B=20, inference=False):
        calls.append((method, H, density, compute))
        return ok({"sparse_engine": 4.0, "masked_dense": 8.0}.get(method, 1.0) if density > 1 / H else 1.0)
    monkeypatch.setattr(bench, "run_child", child)
    monkeypatch.setattr(bench.common, "copy_bandwidth", lambda device: 4e12)
    props = Namespace(L2_cache_size=60 << 20, total_memory=140 << 30, multi_processor_count=132,
                      shared_memory_per_multiprocessor=228 << 10)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: props)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(bench.common, "machine", lambda: "a stubbed GPU")
    out = tmp_path / "rnn.md"
    bench.main(["--device", "cuda", "--sizes", "4096:0.01", "--cells", "LSTM", "--methods", "sparse_engine",
                "masked_dense", "--repeats", "1", "--out", str(out), "--compute", "persistent"])
    assert calls == [("sparse_engine", 4096, 0.01, "persistent"), ("sparse_engine", 4096, 1 / 4096, None),
                     ("masked_dense", 4096, 0.01, "persistent")]
    text = out.read_text()
    assert "4,000 GB/s" in text and "L2 60 MiB" in text and "| 25% |" in text  # 1.0 ms of ours' 4.0


def test_steps_reach_every_child_and_the_title(load_script, monkeypatch, tmp_path):
    """--steps and --inference: the sequence length and the case (a training step, or a call under no_grad)
    of every cell's child (ours and the baselines) and of the table's title; --steps below 1 refused with the
    argument's name, --inference with --floor (a training step's bytes) too."""
    bench = load_script("benchmarks/bench_rnn.py")
    calls = []

    def child(method, cell, H, density, device, repeats, warmup, timeout, compute=None, T=35, B=20, inference=False):
        calls.append((method, T, B, inference))
        return ok(1.0)
    monkeypatch.setattr(bench, "run_child", child)
    out = tmp_path / "rnn.md"
    cells = ["--device", "cpu", "--sizes", "64:0.3", "--cells", "LSTM", "--methods", "sparse_engine", "masked_dense",
             "--repeats", "1", "--steps", "4", "--batch", "2", "--out", str(out)]
    bench.main(cells)
    assert sorted(calls) == [("masked_dense", 4, 2, False), ("sparse_engine", 4, 2, False)]
    title = out.read_text().splitlines()[0]
    assert "T=4, B=2" in title and "training step" in title
    calls.clear()
    bench.main(cells + ["--inference"])
    assert sorted(calls) == [("masked_dense", 4, 2, True), ("sparse_engine", 4, 2, True)]
    assert "under torch.no_grad" in out.read_text().splitlines()[0]
    for bad in (["--device", "cpu", "--steps", "0"], ["--device", "cuda", "--inference", "--floor"]):
        with pytest.raises(SystemExit):
            bench.main(bad)
