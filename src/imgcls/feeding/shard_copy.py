"""Local copies of remote shard splits (`data.local_copy`): copied whole once, read in place as a folder is.

litdata reads a remote split through a download thread and reference-counted chunk files even once every chunk is
local: at 224x224 it fed as little as 0.4x a folder's rate (README, "Data at every scale"; python -m imgcls.bench
bench.shards=[folder,s3://...] bench.shard_local_copy=[true,false]). A split that fits the chunk cache is copied
whole once and read in place; a larger one is streamed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imgcls.feeding import object_store
from imgcls.feeding.object_store import NOT_WRITTEN, bucket_key, join, read_text, store_error
from imgcls.utils.errors import DataConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

COPY_FILE = "imgcls-copy.json"  # in a local copy: the objects it was made from (names, sizes, ETags)


def split_bytes(url: str, storage_options: Mapping[str, Any] | None = None, key: str = "data.input_dir") -> int:
    """The bytes of a split's chunks (its index.json): what streaming or copying it puts on the local disk."""
    index = json.loads(read_text(join(url, "index.json"), key, storage_options))
    return sum(int(chunk["chunk_bytes"]) for chunk in index["chunks"])


def fits_cache(
    urls: Sequence[str],
    max_cache_size: str | int | None,
    cache_dir: str,
    copy_dir: str,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[bool, int]:
    """Whether the splits' chunks, together, fit a chunk cache of `max_cache_size` (a size, a fraction of the free
    disk, or None: litdata's default) and the disk; and their bytes. A copy already in `copy_dir` counts as free
    space, so the answer is the same in the run after the one that made it."""
    from litdata.utilities.format import _is_absolute_cache_size, _resolve_max_cache_size

    total = sum(split_bytes(url, storage_options) for url in urls)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    made = sum(f.stat().st_size for f in Path(copy_dir).rglob("*") if f.is_file()) if Path(copy_dir).is_dir() else 0
    try:
        limit = _resolve_max_cache_size(max_cache_size, cache_dir)
        absolute = max_cache_size is not None and _is_absolute_cache_size(max_cache_size)
    except (TypeError, ValueError):
        raise DataConfigError(
            f"data.max_cache_size={max_cache_size}: use a size (20GB), a fraction of the free disk (0.5) or null"
        ) from None
    free = shutil.disk_usage(cache_dir).free + made
    return total <= min(limit if absolute else limit + made, free), total


def _objects(url: str, storage_options: Mapping[str, Any] | None, key: str) -> dict[str, list[Any]]:
    """The files of a remote split: name -> [size, ETag]. A rewrite changes ETags even where sizes stay."""
    bucket, prefix = bucket_key(url)
    try:
        found = object_store.listing(object_store.s3_client(storage_options), bucket, prefix)
        objects = {o["Key"][len(prefix) + 1 :]: [int(o["Size"]), str(o.get("ETag", ""))] for o in found}
    except Exception as exc:
        raise store_error(url, key, exc) from None
    return {name: v for name, v in objects.items() if "/" not in name}


def _is_copy_of(local: Path, objects: dict[str, list[Any]]) -> bool:
    try:
        made_from = json.loads((local / COPY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return made_from == objects and all(
        (local / name).is_file() and (local / name).stat().st_size == size for name, (size, _) in objects.items()
    )


def local_copy(
    url: str,
    local_dir: str,
    storage_options: Mapping[str, Any] | None = None,
    key: str = "data.input_dir",
    cache_key: str = "data.cache_dir",
) -> str:
    """A remote split's files copied into `local_dir`, once: kept for later runs while the objects stay the same
    (names, sizes, ETags), made again when they change. The ranks of a node share one copy: the first makes it
    under a file lock, in a staging folder renamed into place whole, and the others wait for it."""
    from concurrent.futures import ThreadPoolExecutor

    from filelock import FileLock

    objects = _objects(url, storage_options, key)
    if "index.json" not in objects:
        raise DataConfigError(f"{key}='{url}': {NOT_WRITTEN}")
    local = Path(local_dir)
    if _is_copy_of(local, objects):
        return str(local)
    bucket, prefix = bucket_key(url)
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{local}.lock"):
            if _is_copy_of(local, objects):  # made by another rank meanwhile
                return str(local)
            for stale in (*local.parent.glob(f".{local.name}-*"), *local.parent.glob(f"{local.name}.old-*")):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed copy (no one else holds the lock)
            size = sum(s for s, _ in objects.values())
            log.info(f"Copying {url} ({len(objects)} files, {size / 2**20:.0f} MB) to {local} to read it in place")
            client = object_store.s3_client(storage_options)
            staging = Path(tempfile.mkdtemp(prefix=f".{local.name}-", dir=local.parent))
            try:
                with ThreadPoolExecutor(8) as pool:  # boto3's client is thread-safe; objects download side by side
                    list(pool.map(lambda n: client.download_file(bucket, f"{prefix}/{n}", str(staging / n)), objects))
                if not all((staging / n).stat().st_size == s for n, (s, _) in objects.items()):
                    raise DataConfigError(f"{key}='{url}': its objects changed while they were copied: run again")
                (staging / COPY_FILE).write_text(json.dumps(objects))
                object_store.publish(staging, str(local), None)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except DataConfigError:
        raise
    except Exception as exc:
        if not (isinstance(exc, OSError) and type(exc).__module__ == "builtins"):  # (a store's timeout is one too)
            raise store_error(url, key, exc) from None
        raise DataConfigError(  # the local disk: full, read-only...
            f"{cache_key}='{local.parent}': {url} could not be copied there ({exc.strerror or exc}): "
            "free some space, or stream it (data.local_copy=false)"
        ) from None
    return str(local)
