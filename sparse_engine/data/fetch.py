"""Downloads the public datasets and trained networks that the tasks, examples and analyses read
(:data:`DATASETS`) from their sources, each file checked against its SHA-256 before it is kept.

    from sparse_engine.data import download
    folder = download("mnist_test", root="data")   # data/mnist_test/t10k-images-idx3-ubyte.gz, ...

or from a shell: ``python -m sparse_engine.data.fetch mnist_test --root data``. Files already in
place with the right checksum are not fetched again; a file is written only after its checksum
matched (through a temporary file, so an interrupted download leaves nothing half written).
Where each dataset comes from, its licence and its page: :data:`sparse_engine.data.sources.ABOUT`.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from .sources import ABOUT, SHA256, source

__all__ = ["DATASETS", "download"]

#: The names :func:`download` takes.
DATASETS = tuple(SHA256)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"could not download {url}: {reason}") from None


def _member(archive: bytes, member: str, url: str) -> bytes:
    """The file named ``member`` (at any depth) of the zip archive downloaded from ``url``."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as z:
            names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise ValueError(f"{url}: the archive holds no {member}")
            return z.read(names[0])
    except zipfile.BadZipFile:
        raise ValueError(f"{url}: not a zip archive (damaged download?)") from None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def download(name: str, root="data", *, force: bool = False, quiet: bool = False, timeout: float = 60.0) -> Path:
    """Fetches every file of dataset ``name`` into ``root/name`` and returns that folder.

    Each file is checked against the SHA-256 in :mod:`sparse_engine.data.sources`: a mismatch is a
    ValueError naming the file and nothing is written for it. Files already present with the right
    checksum are kept unless ``force``. A source that cannot be reached is a ConnectionError naming
    the URL. ``quiet=False`` prints one line per file fetched (to stderr)."""
    if name not in SHA256:
        raise ValueError(f"name must be one of {', '.join(DATASETS)}; got {name!r}")
    folder = Path(root) / name
    fetched: dict[str, bytes] = {}  # an archive holding several files is downloaded once
    for file, digest in SHA256[name].items():
        target = folder / file
        if not force and target.is_file() and _sha256(target.read_bytes()) == digest:
            continue
        url, member = source(name, file)
        if url not in fetched:
            if not quiet:
                print(f"downloading {url}", file=sys.stderr, flush=True)
            fetched[url] = _fetch(url, timeout)
        data = _member(fetched[url], member, url) if member else fetched[url]
        got = _sha256(data)
        if got != digest:
            where = f"{url} ({member})" if member else url
            raise ValueError(f"{where}: SHA-256 {got} differs from the expected {digest} "
                             f"(a changed or damaged download); {target} was not written")
        _write_atomically(target, data)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparse_engine.data.fetch",
                                description="Download a public dataset, checked against its SHA-256.")
    p.add_argument("name", choices=DATASETS, help="; ".join(f"{k}: {v[0]}" for k, v in ABOUT.items()))
    p.add_argument("--root", default="data", help="folder to put <name>/ in (default: ./data)")
    p.add_argument("--force", action="store_true", help="download again even where a file is in place")
    args = p.parse_args(argv)
    try:
        folder = download(args.name, args.root, force=args.force)
    except (ValueError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
