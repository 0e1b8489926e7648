"""Checkpoints written atomically and reloaded bit-exactly.

A checkpoint is one ``torch.save`` file holding the model's and (optionally) the optimizer's
``state_dict`` plus any extra picklable data. It is written to a temporary file in the same
directory (``.<name>.<pid>-<random>.tmp``, created with the user's umask like any new file),
flushed to disk and renamed over the target, so a crash never leaves a torn file. A writer
killed mid-save (``kill -9``, power loss) leaves only its temporary behind; the next save of the
same checkpoint deletes such orphans (those of processes that are gone). Ctrl-C (SIGINT) during a
save is held back until the file is in place and raised then: ``torch.save`` interrupted half-way
fails in its zip writer's cleanup with a RuntimeError that hides the interrupt.
Reading checks the file's CRC-32s (``torch.save`` writes a zip archive), so a truncated or
corrupted file is refused with a ``ValueError`` naming it instead of loading wrong numbers or
failing inside the unpickler.
Sparse weights may hold a different nnz than a freshly built model: loading resizes them.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import threading
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

FORMAT = "sparse-engine-checkpoint-v1"

_writing: set[str] = set()  # temporaries this process is writing now (not orphans)


def _temporaries(path: Path):
    """(temporary file, pid of its writer or None) beside ``path``: this module's
    ``.<name>.<pid>-<random>.tmp`` and the ``.<name>.<random>.tmp`` of older versions."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)-)?[A-Za-z0-9_]+\.tmp")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m and entry.is_file(follow_symlinks=False):
            yield Path(entry.path), (int(m.group(1)) if m.group(1) else None)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, and not in _writing: left by an earlier failed save
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process there: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists (another user) or cannot tell: keep its file
    return True


def remove_stale_temporaries(path) -> list[Path]:
    """Deletes the temporaries of ``path``'s earlier saves whose writer is gone (killed during
    a save); the file of a save running in another live process is kept. Returns the removed."""
    path = Path(path)
    removed = []
    for tmp, pid in _temporaries(path):
        if str(tmp) in _writing or (pid is not None and _alive(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new empty file beside ``path``, mode 0666 minus the umask (as ``open(path, "wb")``
    would give; ``tempfile.mkstemp`` would give 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_directory(directory: Path) -> None:
    """Makes the rename durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **extra) -> Path:
    """Atomically writes model (and optimizer) state and ``extra`` to ``path``. A symbolic link
    at ``path`` stays one: the file it points to is replaced (the temporary is made beside it)."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "model": model.state_dict(), "extra": extra}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    remove_stale_temporaries(path)  # before writing: an orphan may hold the space this save needs
    with _interrupts_held():
        fd, tmp = _create_temporary(path)
        _writing.add(str(tmp))
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            _writing.discard(str(tmp))
        _fsync_directory(path.parent)
    return path


@contextlib.contextmanager
def _interrupts_held():
    """SIGINT held back while the body runs, then raised as KeyboardInterrupt (on the main thread
    with Python's own handler; elsewhere, and with a handler of the user's, nothing changes)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    got = []
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if got:
        raise KeyboardInterrupt


class CheckpointError(ValueError):
    """A file that is not a sparse-engine checkpoint or is damaged (empty, truncated, a failed CRC,
    random bytes, a ``torch.save`` of something else). Its message is one line,
    ``<path>: not a sparse-engine checkpoint (or damaged): <why>``, never the unpickler's internals;
    ``path`` and ``reason`` hold the two parts."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: not a sparse-engine checkpoint (or damaged): {reason}")
        self.path, self.reason = Path(path), reason


def load_checkpoint(path, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    map_location="cpu", weights_only: bool = True) -> dict:
    """Reads a checkpoint; loads it into ``model``/``optimizer`` when given. Returns the payload.
    FileNotFoundError when ``path`` does not exist; :class:`CheckpointError` (a ValueError) naming
    it when it is empty, truncated, corrupted or not a sparse-engine checkpoint. ``weights_only``
    (torch.load's): a checkpoint holds tensors, numbers, strings and containers only, and an
    unpickler that builds other objects runs code from the file; ``False`` only for a file you trust."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = read_payload(path, map_location, weights_only=weights_only)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = f"a dict without the format tag {FORMAT!r}" if isinstance(payload, dict) else \
            f"a {type(payload).__name__}, not a dict tagged {FORMAT!r}"
        raise CheckpointError(path, f"it holds {what}")
    if model is not None:
        model.load_state_dict(payload["model"])
    if optimizer is not None:
        if "optimizer" not in payload:
            raise ValueError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(payload["optimizer"])
    return payload


def read_payload(path, map_location="cpu", weights_only: bool = True):
    """``torch.load`` of ``path`` after checking the archive's CRC-32s; :class:`CheckpointError`
    (a ValueError naming the file: empty, truncated, corrupted, not a ``torch.save`` file) instead
    of torch's or pickle's exceptions (``KeyError: 101``, ``Memo value not found``, ...)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "the file is empty (truncated)")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if is_zip:
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except Exception as e:  # BadZipFile, EOFError, zlib.error, ...
            raise CheckpointError(path, f"truncated or corrupted ({size:,} bytes: not a complete zip archive)") from e
        if bad is not None:
            raise CheckpointError(path, f"corrupted (record {bad!r} fails its CRC check)")
    try:
        with warnings.catch_warnings(record=True) as said:  # kept back: a file that fails says one line
            warnings.simplefilter("always")
            payload = torch.load(path, map_location=map_location, weights_only=weights_only)
    except MemoryError:
        raise
    except Exception as e:  # the unpickler's internals are no help to the reader: say what the file is
        if not is_zip:
            what = "not a file written by torch.save"
        elif weights_only:
            what = "torch.load cannot read it (damaged, or it pickles objects other than tensors and containers)"
        else:
            what = "truncated or corrupted (torch.load cannot read it)"
        raise CheckpointError(path, what) from e
    for w in said:  # a file that loads: torch's warnings as they were
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return payload
