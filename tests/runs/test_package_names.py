"""sparse_engine.runs as a package (config, paths, train_run, bench_run, analyze_run): every name
of the single module it was is still importable from it, configs pickled before the split still
load, and the analyze command's path checks answer from the one home of path checks."""
import pickle
from dataclasses import replace

import pytest

import sparse_engine.runs as runs
from sparse_engine import cli

# What sparse_engine/runs.py defined (its functions, classes and constants) before it became a package.
OLD_NAMES = (
    "AnalyzeConfig", "BenchConfig", "ConfigError", "ConfigPathError", "DEVICES", "LESION_KINDS", "MLP_ALGORITHMS",
    "MLP_FIELDS", "MLP_TASKS", "SPARSE_CHOICES", "TrainConfig", "TrainResult", "analyze", "bench", "check_paths",
    "check_train_paths", "epoch_header", "epoch_line", "evaluate", "is_balance_record", "lesion_curves",
    "load_matrix", "mlp_sizes", "plot_dir_problem", "plot_history", "progress_postfix", "recipe_config",
    "recipe_summary", "resolve_device", "sequence_loss", "softmax_score_loss", "train",
    # and the names it imported, which `from sparse_engine.runs import ...` found as well
    "ALGORITHMS", "HAS_CUDA_KERNELS", "MODELS", "RECIPES", "SequenceModel", "SparseWeight", "TASKS", "TASK_DATA",
    "TrainProgress", "best_of", "get_recipe", "input_path_problem", "load_task", "make_controller",
    "make_recipe_controller", "output_path_problem", "sparse_weights", "task_data_problem", "zhang_init",
)
CLI_NAMES = ("DEVICES", "SPARSE_CHOICES", "AnalyzeConfig", "BenchConfig", "ConfigError", "ConfigPathError",
             "TrainConfig", "analyze", "bench", "check_paths", "plot_dir_problem", "resolve_device", "train",
             "evaluate", "load_matrix", "load_task", "SequenceModel", "make_controller", "MODELS")

# pickle.dumps(BenchConfig(n=8), protocol=2) as the single module runs.py wrote it
OLD_BENCH_PICKLE = (b"\x80\x02csparse_engine.runs\nBenchConfig\nq\x00)\x81q\x01}q\x02(X\x01\x00\x00\x00nq\x03K\x08X"
                    b"\x07\x00\x00\x00densityq\x04G?\x84z\xe1G\xae\x14{X\x05\x00\x00\x00batchq\x05K ub.")


def test_every_old_name_is_importable_from_the_package_and_the_cli():
    missing = [n for n in OLD_NAMES if not hasattr(runs, n)]
    assert not missing
    assert not [n for n in CLI_NAMES if not hasattr(cli, n)]
    assert runs.train.__module__ == "sparse_engine.runs.train_run" and callable(runs.train)
    assert all(getattr(cli, n) is getattr(runs, n) for n in CLI_NAMES if n in OLD_NAMES)


def test_configs_pickled_by_the_single_module_still_load():
    old = pickle.loads(OLD_BENCH_PICKLE)
    assert type(old) is runs.BenchConfig and (old.n, old.density, old.batch) == (8, 0.01, 32)
    for cfg in (runs.TrainConfig(model="rnn", hidden=16, epochs=2), runs.AnalyzeConfig(path="x.pt", null=2)):
        new = pickle.dumps(cfg, protocol=2)
        module = type(cfg).__module__.encode()
        assert module == b"sparse_engine.runs.config" and module + b"\n" in new
        before = new.replace(module + b"\n", b"sparse_engine.runs\n")  # the name the single module pickled
        assert pickle.loads(before) == cfg


def test_analyze_paths_are_checked_in_one_place(tmp_path):
    (tmp_path / "a.csv").write_text("Id,Source,Target,Weight\n0,0,1,0.5\n")
    (tmp_path / "file").write_text("")
    good = runs.AnalyzeConfig(path=str(tmp_path / "a.csv"), export_csv=str(tmp_path / "e.csv"))
    assert runs.check_analyze_paths(good) is None
    cases = [(dict(path=str(tmp_path / "none.pt")), "path", "does not exist"),
             (dict(export_csv=str(tmp_path / "file" / "e.csv")), "export_csv", "is not a directory"),
             (dict(plot=str(tmp_path / "file")), "plot", "expected a directory")]
    for change, field, problem in cases:
        if field == "plot":
            pytest.importorskip("matplotlib")
        with pytest.raises(runs.ConfigPathError, match=problem) as err:
            runs.check_analyze_paths(replace(good, **change))
        assert err.value.field == field
