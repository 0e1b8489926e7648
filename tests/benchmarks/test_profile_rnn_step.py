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
