"""The ``sparse-engine`` command's entry point: the command line of :mod:`sparse_engine.cli`, with its
``--help`` pages answered from a cache when nothing they are built from has changed.

Why a module beside the package: importing ``sparse_engine`` loads torch and the compiled operators
(1-4 s), and a help page needs neither. ``sparse-engine --help`` and ``sparse-engine COMMAND --help``
print the page the parser printed last time for the same package sources and terminal width,
without importing the package; otherwise (the first time, after any change to a source file of
the package, or any other command line) the package's own :func:`sparse_engine.cli.main` runs and
the pages it prints are kept for next time. The cache is a folder of text files
(``$XDG_CACHE_HOME/sparse-engine``, else ``~/.cache/sparse-engine``); where it cannot be written,
help is printed as usual and nothing is kept.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import shutil
import sys
from pathlib import Path

COMMANDS = ("train", "bench", "analyze")
HELP = ("-h", "--help")


def help_page(argv: list[str]) -> str | None:
    """Which help page ``argv`` asks for and nothing else (``main`` or a command's name), or None."""
    if len(argv) == 1 and argv[0] in HELP:
        return "main"
    if len(argv) == 2 and argv[0] in COMMANDS and argv[1] in HELP:
        return argv[0]
    return None


def source_stamp(root: Path) -> str:
    """A digest of every Python source of the package under ``root`` (its path, size and
    modification time): any edit, install or upgrade changes it."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def cache_file(page: str) -> Path | None:
    """Where the help page ``page`` of this package's sources, at this terminal width, is kept; None
    when the package cannot be found without importing it."""
    spec = importlib.util.find_spec("sparse_engine")
    if spec is None or spec.origin is None:
        return None
    width = shutil.get_terminal_size().columns  # argparse wraps its help to it
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparse-engine"
    return cache / f"help-{source_stamp(Path(spec.origin).parent)}-{width}-{page}.txt"


def _keep(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: help works, it is just not kept


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    page = help_page(argv)
    path = cache_file(page) if page is not None else None
    if path is not None:
        try:
            sys.stdout.write(path.read_text())
            return 0
        except OSError:
            pass
    try:
        from sparse_engine import cli
    except KeyboardInterrupt:  # Ctrl-C while torch loads (1-4 s): what cli.main says for it later
        print("sparse-engine: interrupted", file=sys.stderr)
        return 130

    if path is None:
        return cli.main(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    sys.stdout.write(out.getvalue())
    if code == 0:
        _keep(path, out.getvalue())
    return code


if __name__ == "__main__":
    sys.exit(main())
