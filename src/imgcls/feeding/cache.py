"""Pre-processing cache: decode + crop + resize every image once into a memory-mapped uint8 array.

After the first build every epoch, worker and multirun job is "read + augment": no JPEG decoding. One file per
dataset + pre-processing, named by a hash of the file list (paths, sizes, mtimes) and the pre-processing
config, so any change builds a new file and an unchanged dataset is reused. A build writes to a temp name and
renames at the end (a killed build leaves no half cache) under a file lock (concurrent jobs build it once).
The build decodes every image anyway, so it is also the check for unreadable ones: their rows stay black and
they are listed beside the cache (`<cache>.bad.csv`, see feeding/checks.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgcls.feeding.checks import CHECK_VERSION, bad_list_path, decode_all, write_bad_list
from imgcls.utils.io import atomic_write_text, file_lock
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

FORMAT_VERSION = 4  # bump when the decode/resize code changes what a cache holds (3: bad-image list, 4: data.resize)


def files_key(table: pd.DataFrame, crop: dict[str, Any], settings: dict[str, Any]) -> str:
    """Hash of what decoding `table` gives: each file's path/size/mtime/mode, the bbox values and `settings`.

    A file that cannot even be stat'ed (a symlink loop, a deleted file) hashes as its error: still a key.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({**settings, "crop": crop}, sort_keys=True, default=str).encode())
    for path in table["path"]:
        try:
            st = os.stat(path)
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_mode};".encode())
        except OSError as exc:
            digest.update(f"{path}|error {exc.errno};".encode())
    for column in crop.get("columns") or []:
        if crop.get("mode") == "bbox":
            digest.update(table[column].to_numpy(np.float64).tobytes())
    return digest.hexdigest()[:20]


def cache_path(cache_dir: Path, name: str, table: pd.DataFrame, crop: dict[str, Any], settings: dict[str, Any]) -> Path:
    """Where the cache of `table` pre-processed with `settings` (channels, size, resize, max_pixels: everything
    the cached pixels and the list of unreadable images depend on) lives: `<name>_<h>x<w>_<key>.npy`."""
    key = files_key(table, crop, {"v": FORMAT_VERSION, **settings})
    size = settings["size"]
    return Path(cache_dir) / f"{name}_{size[0]}x{size[1]}_{key}.npy"


def why_new(path: Path, name: str, about: dict[str, Any]) -> str | None:
    """Why `path` (missing) must be built when dataset `name` has other caches: the settings that differ from the
    newest one's record (`<cache>.json`), e.g. "resize.mode center -> border"; None for a first build."""
    records = sorted(path.parent.glob(f"{name}_[0-9]*x[0-9]*_*.json"), key=lambda p: p.stat().st_mtime)
    if not records:
        return None
    try:
        old = json.loads(records[-1].read_text())
    except (OSError, ValueError):
        return None
    flat_new, flat_old = _flatten(json.loads(json.dumps(about, default=str))), _flatten(old)
    changed = [f"{k} {flat_old.get(k, '(not recorded)')} -> {v}" for k, v in flat_new.items() if flat_old.get(k) != v]
    what = "; ".join(changed) if changed else "the image files changed"
    return f"the pre-processing differs from {records[-1].with_suffix('.npy').name} ({what})"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix[:-1]: value}


def check_list_path(
    cache_dir: Path, name: str, table: pd.DataFrame, channels: int, crop: dict[str, Any], max_pixels: int | None
) -> Path:
    """Where the unreadable-image list of `table` lives when there is no cache (with one: `bad_list_path`)."""
    key = files_key(table, crop, {"check": CHECK_VERSION, "channels": channels, "max_pixels": max_pixels})
    return Path(cache_dir) / f"{name}_check_{key}.bad.csv"


def build_cache(
    dataset: Any, path: Path, num_workers: int = 0, batch_size: int = 64, about: dict[str, Any] | None = None
) -> Path:
    """Fill `path` (N, H, W, C) uint8 from `dataset` (an eval-transform ImageDataset) in row order; atomic.

    Unreadable images leave their row black and are listed in `bad_list_path(path)`, written before the cache.
    `about`: what the cache holds, written beside it (`<cache>.json`) for people cleaning up data/cache.
    """
    with file_lock(path.with_suffix(".lock")):
        if path.exists():  # built by another process while we waited
            return path
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed build
            stale.unlink(missing_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        array, bad = None, []
        try:
            batches = decode_all(dataset, num_workers, batch_size, f"Caching {len(dataset)} images")
            for rows, images, unreadable in batches:
                bad += unreadable
                if images is None:  # every image of the batch was unreadable
                    continue
                images = images.permute(0, 2, 3, 1).numpy()
                if array is None:
                    array = np.lib.format.open_memmap(
                        tmp, mode="w+", dtype=np.uint8, shape=(len(dataset), *images.shape[1:])
                    )
                array[rows[0] : rows[-1] + 1] = images
            if array is None:
                raise RuntimeError(
                    f"none of the {len(dataset)} images could be decoded, e.g. '{bad[0][1]}': {bad[0][2]}"
                )
            array.flush()
            del array
            write_bad_list(bad_list_path(path), bad)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    log.info(f"Cached {len(dataset)} images to {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if about is not None:
        atomic_write_text(path.with_suffix(".json"), json.dumps(about, indent=2, default=str) + "\n")
    return path


class CacheReader:
    """Reads single images from a cache file with one `pread` each, into a fresh private array.

    Not `np.load(mmap_mode="r")`: touching a memory map faults in every 4 KiB page of every image (~80 µs per
    224x224x3 image, ~8% of a worker's time on the strong preset); a positioned read copies straight from the
    page cache. The file descriptor is opened lazily in each process (workers never share one) and not pickled.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._fd: int | None = None
        self._pid = -1
        with open(self.path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
            self.offset = f.tell()
        if fortran or dtype != np.uint8 or len(shape) != 4:
            raise ValueError(f"{self.path} is not an (N, H, W, C) uint8 cache; delete it to have it rebuilt")
        self.shape: tuple[int, ...] = tuple(shape)
        self.item_shape = self.shape[1:]
        self.item_bytes = int(np.prod(self.item_shape))
        if os.path.getsize(self.path) < self.offset + self.shape[0] * self.item_bytes:
            raise OSError(f"{self.path} is truncated; delete it to have it rebuilt")
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __getitem__(self, row: int) -> np.ndarray:
        if self._fd is None or self._pid != os.getpid():  # a forked worker must not reuse the parent's descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        out = np.empty(self.item_shape, np.uint8)
        position = self.offset + int(row) * self.item_bytes
        if hasattr(os, "preadv"):
            got = os.preadv(self._fd, [memoryview(out).cast("B")], position)
        else:  # Windows: no positioned read, and this descriptor is private to the process
            os.lseek(self._fd, position, os.SEEK_SET)
            got = os.readv(self._fd, [memoryview(out).cast("B")])
        if got != self.item_bytes:
            raise OSError(f"{self.path} is truncated at row {row}; delete it to have it rebuilt")
        return out

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)
