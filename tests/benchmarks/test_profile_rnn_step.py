"""benchmarks/profile_rnn_step.py: the device's busy time is the union of its kernels' intervals
(overlaps counted once, gaps not at all, host events ignored); a small CPU run writes a row per method
with the host's time to queue a step. Timings are not checked."""
import sparse_engine  # noqa: F401  (before torch)
import types

import torch

CUDA, CPU = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU


def _event(start, end, device=CUDA):
    return types.SimpleNamespace(time_range=types.SimpleNamespace(start=start, end=end), device_type=device)


def test_busy_time_is_the_union_of_the_kernels(load_script):
    bench = load_script("benchmarks/profile_rnn_step.py")
    events = [_event(0, 100), _event(50, 150), _event(120, 130), _event(400, 500), _event(0, 10_000, CPU)]
    assert bench.busy_ms(events, steps=1) == 0.25  # [0, 150] and [400, 500] us
    assert bench.busy_ms(events, steps=5) == 0.05
    assert bench.busy_ms([], steps=2) == 0.0


def test_a_small_cpu_run_writes_the_host_time(load_script, tmp_path):
    bench = load_script("benchmarks/profile_rnn_step.py")
    out = tmp_path / "profile.md"
    bench.main(["--cells", "LSTM:32:0.3", "--methods", "sparse", "--steps", "1", "--warmup", "0", "--top", "3",
                "--out", str(out)])
    text = out.read_text()
    assert "host queued a step in" in text and "device busy" not in text.split("## ")[1]


def test_dense_copied_runs_the_dense_path_without_the_flat_buffer(load_script, tmp_path, monkeypatch):
    """``dense_copied``: the dense path with cudnn_flat.views giving None for its steps only (the A/B
    against the flat buffer in one run); the library's function is back afterwards."""
    from sparse_engine.recurrent import cudnn_flat

    bench = load_script("benchmarks/profile_rnn_step.py")
    original, seen = cudnn_flat.views, []
    monkeypatch.setattr(cudnn_flat, "views", lambda *a: seen.append("flat") or original(*a))
    patched = cudnn_flat.views
    with bench.unflat():
        assert cudnn_flat.views(None, None, None, None, None, 1, False) is None
    assert cudnn_flat.views is patched
    out = tmp_path / "profile.md"
    bench.main(["--cells", "LSTM:32:0.3", "--methods", "dense_copied", "--steps", "1", "--warmup", "0",
                "--top", "3", "--out", str(out)])
    assert seen == [] and cudnn_flat.views is patched  # the steps never asked for the buffer
    bench.main(["--cells", "LSTM:32:0.3", "--methods", "dense", "--steps", "1", "--warmup", "0", "--top", "3",
                "--out", str(out)])
    assert seen and "dense (path: dense)" in out.read_text()
