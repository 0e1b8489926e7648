"""``sparse-engine --help`` and ``sparse-engine COMMAND --help`` from a cache (sparse_engine_launch.py):
the same pages the parser prints, without importing torch once the page is kept, and the page made
again after any change to the package's sources."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sparse_engine_launch as launch

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import sys, sparse_engine_launch as l; code = l.main(sys.argv[1:]); "
         "print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr); "
         "sys.exit(code)")


def _run(argv, cache, *, module=False):
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": "100",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "sparse_engine.cli", *argv] if module else [sys.executable, "-c", PROBE, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_which_command_lines_are_help_pages():
    assert launch.help_page(["--help"]) == launch.help_page(["-h"]) == "main"
    assert launch.help_page(["train", "--help"]) == "train" and launch.help_page(["analyze", "-h"]) == "analyze"
    for argv in ([], ["train"], ["train", "--recipe", "x", "--help"], ["nope", "--help"], ["--help", "train"]):
        assert launch.help_page(argv) is None, argv


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["bench", "-h"]])
def test_a_kept_page_is_the_parsers_and_needs_no_torch(tmp_path, argv):
    first, second = _run(argv, tmp_path), _run(argv, tmp_path)
    real = _run(argv, tmp_path, module=True)
    assert first.returncode == second.returncode == real.returncode == 0, (first.stderr, second.stderr)
    assert first.stdout == second.stdout == real.stdout and "usage: sparse-engine" in real.stdout
    assert first.stderr.strip().endswith("torch imported") and second.stderr.strip() == "torch not imported"
    assert len(list((tmp_path / "sparse-engine").glob("help-*.txt"))) == 1


def test_other_command_lines_run_the_command(tmp_path):
    proc = _run(["bench", "--n", "zero"], tmp_path)
    assert proc.returncode == 2 and "argument --n" in proc.stderr
    assert not (tmp_path / "sparse-engine").exists()


def test_the_stamp_follows_every_source_file(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    a, b = tmp_path / "pkg" / "a.py", tmp_path / "pkg" / "sub" / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = launch.source_stamp(tmp_path / "pkg")
    assert launch.source_stamp(tmp_path / "pkg") == before
    b.write_text("y = 22\n")  # another size
    assert launch.source_stamp(tmp_path / "pkg") != before
    after = launch.source_stamp(tmp_path / "pkg")
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))  # same size, later
    assert launch.source_stamp(tmp_path / "pkg") != after


def test_a_read_only_cache_still_prints_help(tmp_path):
    cache = tmp_path / "ro"
    cache.mkdir()
    (cache / "sparse-engine").write_text("not a folder")  # nothing can be kept there
    proc = _run(["--help"], cache)
    assert proc.returncode == 0 and "usage: sparse-engine" in proc.stdout


def test_ctrl_c_while_the_package_loads_is_one_line_and_130(monkeypatch, capsys):
    """Ctrl-C in the first seconds (torch loading) exits as a later one does, without a traceback."""
    class Loading:
        def __getattr__(self, name):
            raise KeyboardInterrupt
    monkeypatch.setitem(sys.modules, "sparse_engine", Loading())
    assert launch.main(["train", "--epochs", "1"]) == 130
    assert capsys.readouterr().err == "sparse-engine: interrupted\n"
