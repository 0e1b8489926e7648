"""Where the benchmark scripts write and what they print: every script takes its results file from
benchmarks/common.py's one rule (no --out: a fresh file under benchmarks/results/local/, never a
committed table) and prints its table's header and a line per cell; gpu_all.sh and `make bench`,
which rewrite committed tables, name them with --out; and one real script, run end to end without
--out, leaves every committed file as it was."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
#: the scripts that write results: every one with an --out option (a new script is in at once)
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if '"--out"' in p.read_text())


def test_the_scripts_are_found():
    assert {"bench_ops.py", "bench_cuda.py", "bench_rnn.py", "bench_import_order.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_takes_the_common_rule_and_prints_its_progress(script):
    source = (ROOT / "benchmarks" / script).read_text()
    out = re.search(r'add_argument\(\s*"--out"(.*?)\)\n', source, flags=re.S)
    assert out, f"{script} has no --out"
    assert not re.search(r"default=(?!None)", out.group(1)), f"{script}: --out defaults to a file: {out.group(0)}"
    for helper in ("results_path(", "announce(", "finish("):
        assert helper in source, f"{script} does not call common.{helper.rstrip('(')})"
    assert re.search(r"\bcell(_starts)?\(", source), f"{script} prints no per-cell lines (common.cell)"
    assert "--out" in source.split('"""')[1], f"{script}'s docstring does not say what --out does"


def test_gpu_all_names_every_results_file_it_commits():
    """Each benchmark call of gpu_all.sh writes the committed file it wrote before the rule: an
    explicit --out (a name, a path, or benchmarks/results/ for the tables named after the GPU)."""
    text = (ROOT / "benchmarks" / "gpu_all.sh").read_text().replace("\\\n", " ")
    calls = [line for line in text.splitlines() if re.search(r"\$PY benchmarks/bench_\w+\.py", line)
             and '"$NCU"' not in line]  # a run under Nsight Compute: its kernels' profile is the result
    # gather_tuning: one; the caps stage: bench_step_estimate.py and two bench_caps.py; persistent: three;
    # table: two, table_large: one; steps: three (T = 1 and 4, the sampler's step)
    assert len(calls) == 21, calls
    for line in calls:
        assert re.search(r" --out (benchmarks/results/(\w+\.md)?|\w+\.md) ", line), f"no --out: {line.strip()}"
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_all.sh")]).returncode == 0


def test_make_bench_rewrites_its_two_tables_by_name():
    make = (ROOT / "Makefile").read_text()
    recipe = make[make.index("\nbench:"):].split("\n\n")[0]
    assert "bench_ops.py" in recipe and "--out cpu_ops.md" in recipe
    assert "bench_rnn.py" in recipe and "--out rnn_cpu.md" in recipe


def committed_state() -> dict:
    """(size, mtime) of every file under benchmarks/results/ but local/, and git's word on them."""
    files = {str(p.relative_to(RESULTS)): (p.stat().st_size, p.stat().st_mtime_ns) for p in RESULTS.rglob("*")
             if p.is_file() and "local" not in p.relative_to(RESULTS).parts}
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--", "benchmarks/results"], cwd=ROOT,
                                capture_output=True, text=True).stdout
    except OSError:
        status = None
    return {"files": files, "git": status}


def test_a_run_without_out_writes_a_fresh_file_and_leaves_the_committed_ones():
    """bench_call_overhead.py at its smallest (N 64, B 1: a few seconds): the header first, each
    cell's start line before its end line, the fresh file named at the start and the end, holding
    the table; nothing committed touched."""
    before = committed_state()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "benchmarks/bench_call_overhead.py", "--n", "64", "--batch", "1"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    named = [line.removeprefix("results: ") for line in lines if line.startswith("results: ")]
    assert len(named) == 2 and named[0] == named[1] and lines[-1] == f"results: {named[0]}", lines
    path = ROOT / named[0]
    try:
        assert path.parent == RESULTS / "local" and re.fullmatch(r"call_overhead_cpu-\d{8}-\d{6}(-\d+)?\.md", path.name)
        assert lines[0] == "# Per-call time of the sparse ops at small sizes (CPU)"
        assert lines[1].startswith("Machine: ") and lines[2] == f"results: {named[0]}"
        assert lines[3].startswith("| N | density | B | op |")
        cells = lines[4:-1]
        assert len(cells) == 6, cells
        for op, start, end in zip(("spmm", "spmm_t", "sddmm"), cells[::2], cells[1::2]):
            assert start == f"N 64, B 1, {op} ..."
            assert re.fullmatch(rf"N 64, B 1, {op}: 64 \| 1\.0% \| 1 \| {op} \| .* \(\d+\.\d s\)", end), end
        text = path.read_text()
        assert text.startswith("# Per-call time of the sparse ops at small sizes (CPU)\n\nMachine: ")
        assert "| N | density | B | op |" in text and len(re.findall(r"^\| 64 \| 1\.0% \| 1 \| ", text, re.M)) == 3
    finally:
        path.unlink(missing_ok=True)
    assert committed_state() == before, "a run without --out changed benchmarks/results/"
