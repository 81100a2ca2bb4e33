"""Atomic file writes: a kill or a full disk never leaves a truncated file that a later run would trust."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """A temp path in `path`'s folder for a writer that wants a file name (onnx.save, torch.jit.save); renamed
    over `path` (atomic on POSIX) when the block ends, deleted if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


@contextmanager
def file_lock(lock_path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock between processes of one machine (DDP ranks, parallel multirun jobs)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


EXPORTED = ".complete"  # the marker of a finished export_once folder


def export_once(root: str | os.PathLike, write: Callable[[Path], str], log: Callable[[str], None]) -> Path:
    """Make the folder `root` once, whole or not at all: `write(tmp)` fills a temporary sibling and returns what
    to log; it is renamed into place with a marker file. Other DDP ranks and multirun jobs wait on a lock and then
    find it done; a stale folder without the marker (an export killed halfway) is replaced."""
    root = Path(root).expanduser()
    if (root / EXPORTED).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if (root / EXPORTED).exists():
            return root
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
        try:
            message = write(tmp)
            (tmp / EXPORTED).touch()
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
            log(message)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """`obj` as the project writes JSON: indented, keys sorted, tensors and numpy values as plain numbers."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj))


def _json_default(obj: Any) -> Any:
    """Tensors and numpy scalars become plain numbers, so metrics can be dumped as they come."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
