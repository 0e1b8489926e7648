"""Shows a build's progress as it happens: reads the verbose build log on stdin (``pip install -v``,
whose ninja lines name each compiled file) and prints one line per compiled source, ``[3/11]
cpu/spmm_cpu.cpp``, flushed at once. ``make install`` pipes its build through this script; it was an
awk one-liner, but mawk (Debian's awk) reads its input in blocks, so the lines reached the terminal
minutes late."""
import re
import sys

#: a ninja line: "[n/m] <compiler> ... -c <source> ..."
STEP = re.compile(r"^\s*(\[\d+/\d+\]).*\s-c\s+(\S+\.(?:cpp|cu))\s")


def progress_line(line: str) -> str | None:
    """``"       [n/m] folder/file"`` for a ninja compile line, else None."""
    m = STEP.match(line)
    if m is None:
        return None
    parts = m.group(2).split("/")
    return f"       {m.group(1)} {'/'.join(parts[-2:])}"


def main() -> None:
    for line in sys.stdin:
        shown = progress_line(line)
        if shown is not None:
            print(shown, flush=True)


if __name__ == "__main__":
    main()
