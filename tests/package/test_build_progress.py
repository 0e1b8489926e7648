"""``make install`` shows each compiled file as the build reaches it (tools/build_progress.py reads the
build log line by line: mawk, Debian's awk, read it in blocks and showed lines minutes late), and
the README and the Makefile quote the same times for the build and the tests."""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "build_progress.py"
NINJA = ("[2/11] c++ -MMD -MF /b/t/csrc/cpu/spmm_cpu.o.d -O3 -fopenmp -c /work/x/csrc/cpu/spmm_cpu.cpp "
         "-o /b/t/csrc/cpu/spmm_cpu.o\n")


def test_a_compile_line_is_shown_short_and_other_lines_not():
    out = subprocess.run([sys.executable, str(SCRIPT)], input="Processing /work/x\n" + NINJA + "copying x\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "       [2/11] cpu/spmm_cpu.cpp\n", out


def test_each_line_reaches_the_terminal_while_the_build_goes_on():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the script flushes itself
    proc = subprocess.Popen([sys.executable, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1, env=env)
    try:
        proc.stdin.write(NINJA)
        proc.stdin.flush()  # the build is still running: stdin stays open
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no line within 30 s while the build's output stays open"
        assert proc.stdout.readline() == "       [2/11] cpu/spmm_cpu.cpp\n"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def _minutes(text: str, after: str) -> str:
    m = re.search(re.escape(after) + r"[^.]*?(\d+-\d+) minutes", text, flags=re.S)
    assert m, f"no 'N-M minutes' after {after!r}"
    return m.group(1)


def test_readme_and_makefile_quote_the_same_times():
    readme, makefile = (ROOT / "README.md").read_text(), (ROOT / "Makefile").read_text()
    assert _minutes(readme, "compiling the kernels") == _minutes(makefile, "compiling the kernels")
    assert _minutes(readme, "`make test` runs the suite") == _minutes(makefile, "# The whole suite")
