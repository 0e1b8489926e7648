"""benchmarks/bench_gather_tuning.py, the GPU sweep over the gather's long-row multiples: settings are
parsed and bounded as the extension bounds them, the rows put the defaults' time over each setting's
and cuSPARSE's over ours, and without a GPU the script says so in one line (exit status 2). The GPU
run itself is gpu_all.sh's gather_tuning stage."""
import sparse_engine  # noqa: F401  (before torch)
import argparse

import pytest
import torch


def test_settings_are_two_bounded_integers(load_script):
    bench = load_script("benchmarks/bench_gather_tuning.py")
    assert bench.setting("4,2") == (4, 2) and bench.setting("1,64") == (1, 64)
    for bad in ("4", "4,2,1", "a,2", "0,2", "65,2", "4,1", "4,65"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.setting(bad)


def test_rows_compare_each_setting_with_the_defaults_and_cusparse(load_script):
    bench = load_script("benchmarks/bench_gather_tuning.py")
    times = {(4, 2): 2.0, (1, 8): 1.0}
    rows = bench.sweep_rows({"spmm": ("fn", 3.0)}, [(4, 2), (1, 8)], lambda fn, s: times[s],
                            lambda op, fn, s: f"checked ({op} {s})")
    assert rows == [["spmm", 4, 2, "2.000", "3.000", "1.50x", "1.00x", "checked (spmm (4, 2))"],
                    ["spmm", 1, 8, "1.000", "3.000", "3.00x", "2.00x", "checked (spmm (1, 8))"]]
    no_default = bench.sweep_rows({"spmm_t": ("fn", 1.0)}, [(1, 8)], lambda fn, s: 4.0, lambda *a: "checked")
    assert no_default == [["spmm_t", 1, 8, "4.000", "1.000", "0.25x", "-", "checked"]]


def test_without_a_gpu_one_clear_line(load_script, capsys):
    from sparse_engine import _C
    if torch.cuda.is_available() and hasattr(_C, "_set_gather_long_rows"):
        pytest.skip("a GPU with the CUDA kernels is here: the script would run")
    bench = load_script("benchmarks/bench_gather_tuning.py")
    with pytest.raises(SystemExit) as e:
        bench.main(["--n", "64"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("needs a GPU and a build with the CUDA kernels (SPARSE_ENGINE_CUDA=1)")
