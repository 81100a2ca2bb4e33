"""Streamed shards on litdata: pre-processed uint8 images in chunk files, in a folder or an object store.

Why litdata (Lightning's own streaming engine) over WebDataset: it shards chunks across DDP ranks *and* loader
workers by itself, shuffles chunks and the items inside them per epoch from a seed, keeps a bounded local chunk
cache, and its loader has a state dict that Lightning checkpoints, so a killed run resumes mid-epoch where it was
(WebDataset restarts the epoch, and splits shards, not items, between ranks). Against the memory-mapped cache
side by side: `python -m imgcls.bench bench.shards=[folder,s3://bucket/prefix]` (README, "Data at every scale").

A dataset written by `python -m imgcls.shards` is a folder (or `s3://bucket/prefix`) holding one litdata dataset
per split (`train/`, `val/`, `test/`: `index.json` + `chunk-*.bin`), `split.csv` (the rows of every split, in
shard order: path, label(s), group) and `imgcls.json` (what the images are: the data spec, the fitted size,
counts, the unreadable images left out). Each item is `{"image": uint8 HxWxC, "target", "index"}`, `index`
being the row in its split as in `split.csv`.

Object stores: `s3://` with the usual boto3 settings (AWS_* variables, ~/.aws; an S3-compatible endpoint via
AWS_ENDPOINT_URL or `storage_options: {endpoint_url: ...}`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from imgcls.feeding.cache import CacheReader
from imgcls.feeding.loaders import prepare_collate, timed
from imgcls.utils.errors import DataConfigError
from imgcls.utils.io import atomic_write_text
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

META_FILE = "imgcls.json"  # the spec and counts of a shard dataset
TABLE_FILE = "split.csv"  # its rows, per split in shard order
SPLITS = ("train", "val", "test")
# Chunks per split at least (if it has that many images), the default of `python -m imgcls.shards min_chunks=`:
# one for each reader (ranks x workers; 2 ranks x 8 workers here) without cutting chunks into many slivers, since
# litdata pays ~0.3-1 ms each time a reader opens a chunk (a split of 540 photos at 224x224 in 64 chunks fed 0.49x
# the cache's rate, in 16 chunks 0.73x; python -m imgcls.bench bench.shards=[folder]).
MIN_CHUNKS = 16


class _QuietAdvice(logging.Filter):
    """litdata advice logged again for every stream, or every worker and epoch (300 lines in a 3-minute bench),
    about settings it makes itself: a chunk cache under 25GB (data.max_cache_size says the bound), and a larger
    download window for remote chunks."""

    ADVICE = ("The provided `max_cache_size` is less than", "Async chunk prefetch: raising max_pre_download")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.ADVICE)


for _name in ("litdata.streaming.dataset", "litdata.streaming.async_prefetch"):
    logging.getLogger(_name).addFilter(_QuietAdvice())


def _allow_plain_http() -> None:
    """litdata downloads chunks from S3 through obstore with fixed client options, which refuse a plain-http
    endpoint (a local MinIO or moto server, `AWS_ENDPOINT_URL=http://...`) while boto3, its other half, allows it.
    Allowing http changes nothing for https endpoints. Done where the stream class is made: in this process and
    in every spawned loader worker that unpickles a stream."""
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = "true"


# litdata reads a local folder in place and, each time a reader opens a chunk, asks the kernel to pre-read it and
# the next three (posix_fadvise WILLNEED, twice over). On chunks already in the page cache that is pure cost:
# 540 photos in 16 chunks fed 0.73x the cache's rate with it, 0.89x without; at 64MB chunks it made no difference,
# read cold or warm (python -m imgcls.bench bench.shards=[folder]). Off unless the user set it (=1 turns it on).
WILLNEED = "LITDATA_POSIX_WILLNEED"


def is_remote(url: str) -> bool:
    return "://" in str(url)


def join(base: str, *names: str) -> str:
    """`base/name...` for a folder or a URL (a URL is never a `Path`: it would lose the `//`)."""
    return "/".join([str(base).rstrip("/"), *names])


# ---- small files beside the shards (imgcls.json, split.csv): local or S3 ------------------------------------
def _s3_client(storage_options: Mapping[str, Any] | None) -> Any:
    """A boto3 S3 client with the same settings litdata gets (`endpoint_url`, keys, region...)."""
    import boto3

    return boto3.client("s3", **dict(storage_options or {}))


def _bucket_key(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        raise DataConfigError(f"'{url}': only s3:// object stores (and S3-compatible endpoints) are supported")
    return parsed.netloc, parsed.path.lstrip("/")


NOT_WRITTEN = "nothing there (no such bucket or object): write the shards with python -m imgcls.shards"


def _store_error(url: str, key: str, exc: Exception, missing: str = NOT_WRITTEN) -> DataConfigError:
    """One line for what the object store said: no bucket, no object, no access, no endpoint."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) or type(exc).__name__
    reasons = {
        "NoSuchBucket": "the bucket does not exist: check its name (and AWS_ENDPOINT_URL)",
        "404": missing,
        "NoSuchKey": missing,
        "AccessDenied": "access denied: check the credentials (AWS_* variables, ~/.aws) and the bucket's policy",
        "403": "access denied: check the credentials (AWS_* variables, ~/.aws) and the bucket's policy",
        "InvalidAccessKeyId": "the access key is not known there: check AWS_ACCESS_KEY_ID",
        "SignatureDoesNotMatch": "the secret key is wrong: check AWS_SECRET_ACCESS_KEY",
        "EndpointConnectionError": "no server answers at the endpoint: check AWS_ENDPOINT_URL / endpoint_url",
        "NoCredentialsError": "no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or configure ~/.aws",
    }
    return DataConfigError(f"{key}='{url}': {reasons.get(code, f'the object store refused it ({code}: {exc})')}")


def read_text(url: str, key: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """A small text file of a shard dataset; a missing one is a one-line error naming `key`."""
    if not is_remote(url):
        path = Path(url)
        if not path.is_file():
            raise DataConfigError(
                f"{key}='{Path(url).parent}' holds no {path.name}: write the shards with python -m imgcls.shards"
            )
        return path.read_text()
    bucket, name = _bucket_key(url)
    try:
        return _s3_client(storage_options).get_object(Bucket=bucket, Key=name)["Body"].read().decode()
    except Exception as exc:  # botocore's errors are not importable without it; any refusal becomes one line
        raise _store_error(url, key, exc) from None


def write_text(url: str, text: str, key: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write (atomically in a folder; an S3 PUT is atomic by itself)."""
    if not is_remote(url):
        atomic_write_text(url, text)
        return
    bucket, name = _bucket_key(url)
    try:
        _s3_client(storage_options).put_object(Bucket=bucket, Key=name, Body=text.encode())
    except Exception as exc:
        raise _store_error(url, key, exc) from None


def check_writable(url: str, key: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Before hours of writing: the bucket exists and these credentials may use it (a folder is made)."""
    if not is_remote(url):
        Path(url).mkdir(parents=True, exist_ok=True)
        return
    bucket, _ = _bucket_key(url)
    try:
        _s3_client(storage_options).head_bucket(Bucket=bucket)
    except Exception as exc:
        raise _store_error(url, key, exc, f"the bucket does not exist: create it (aws s3 mb s3://{bucket})") from None


# ---- writing ------------------------------------------------------------------------------------------------
def check_min_chunks(min_chunks: int) -> None:
    if min_chunks < 1:
        raise DataConfigError(f"min_chunks={min_chunks}: a split needs at least 1 chunk ({MIN_CHUNKS} is the default)")


def write_split(
    cache_file: str,
    rows: Sequence[int],
    targets: np.ndarray,
    output_dir: str,
    chunk_bytes: str = "64MB",
    storage_options: Mapping[str, Any] | None = None,
    min_chunks: int = MIN_CHUNKS,
) -> None:
    """One split's images (cache rows `rows`, in this order) as a litdata dataset in `output_dir`, replaced whole.

    Written in this process with litdata's chunk writer (the images are decoded already: writing is copying;
    its `optimize` would start worker processes) into a staging folder, then published: a folder is renamed in
    place (atomic); an object store gets the chunks and then `index.json`, so a first write is never seen
    half-done (a rewrite of a prefix others read can mix old and new chunks: write a new prefix).
    Items stay in index order, so position `i` of the split is the item with `index == i` (random access by row).
    Chunks hold at most `chunk_bytes`, and are small enough that a split has `min_chunks` of them: readers
    (ranks x workers) share out whole chunks, and two workers reading one chunk run slower.
    """
    from litdata.streaming.writer import BinaryWriter
    from litdata.utilities.format import _convert_bytes_to_int

    check_min_chunks(min_chunks)
    reader = CacheReader(cache_file)
    limit = chunk_bytes if isinstance(chunk_bytes, int) else _convert_bytes_to_int(str(chunk_bytes))
    items = max(1, min(limit // reader.item_bytes, math.ceil(len(rows) / min_chunks)))
    staging = Path(tempfile.mkdtemp(prefix="shards-", dir=None if is_remote(output_dir) else Path(output_dir).parent))
    try:
        writer = BinaryWriter(str(staging), chunk_size=items)
        for i, row in enumerate(rows):
            target = targets[i]
            writer[i] = {"image": reader[int(row)], "target": target if target.ndim else int(target), "index": i}
        writer.done()
        writer.merge()
        _publish(staging, output_dir, storage_options)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, output_dir: str, storage_options: Mapping[str, Any] | None) -> None:
    if not is_remote(output_dir):
        old = Path(f"{output_dir}.old-{os.getpid()}")
        if Path(output_dir).exists():
            os.replace(output_dir, old)
        os.replace(staging, output_dir)
        shutil.rmtree(old, ignore_errors=True)
        return
    bucket, prefix = _bucket_key(output_dir)
    client = _s3_client(storage_options)
    files = sorted(staging.iterdir(), key=lambda p: p.name == "index.json")  # the index last
    try:
        stale = {
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
            for o in page.get("Contents", [])
        }
        for path in files:
            client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
        for key in sorted(stale - {f"{prefix}/{p.name}" for p in files}):  # chunks of an earlier, larger write
            client.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise _store_error(output_dir, "output", exc) from None


# ---- local copies of remote splits ------------------------------------------------------------------------
# litdata reads a remote split through a download thread and reference-counted chunk files even once every chunk
# is local: at 224x224 it fed as little as 0.4x a folder's rate (README, "Data at every scale"; python -m
# imgcls.bench bench.shards=[folder,s3://...] bench.shard_local_copy=[true,false]). A split that fits the chunk
# cache is copied whole once and read in place, as a folder is; a larger one is streamed (data.local_copy).
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
    bucket, prefix = _bucket_key(url)
    try:
        pages = (
            _s3_client(storage_options).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
        )
        objects = {
            o["Key"][len(prefix) + 1 :]: [int(o["Size"]), str(o.get("ETag", ""))]
            for page in pages
            for o in page.get("Contents", [])
        }
    except Exception as exc:
        raise _store_error(url, key, exc) from None
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
    bucket, prefix = _bucket_key(url)
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{local}.lock"):
            if _is_copy_of(local, objects):  # made by another rank meanwhile
                return str(local)
            for stale in (*local.parent.glob(f".{local.name}-*"), *local.parent.glob(f"{local.name}.old-*")):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed copy (no one else holds the lock)
            size = sum(s for s, _ in objects.values())
            log.info(f"Copying {url} ({len(objects)} files, {size / 2**20:.0f} MB) to {local} to read it in place")
            client = _s3_client(storage_options)
            staging = Path(tempfile.mkdtemp(prefix=f".{local.name}-", dir=local.parent))
            try:
                with ThreadPoolExecutor(8) as pool:  # boto3's client is thread-safe; objects download side by side
                    list(pool.map(lambda n: client.download_file(bucket, f"{prefix}/{n}", str(staging / n)), objects))
                if not all((staging / n).stat().st_size == s for n, (s, _) in objects.items()):
                    raise DataConfigError(f"{key}='{url}': its objects changed while they were copied: run again")
                (staging / COPY_FILE).write_text(json.dumps(objects))
                _publish(staging, str(local), None)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except DataConfigError:
        raise
    except Exception as exc:
        if not (isinstance(exc, OSError) and type(exc).__module__ == "builtins"):  # (a store's timeout is one too)
            raise _store_error(url, key, exc) from None
        raise DataConfigError(  # the local disk: full, read-only...
            f"{cache_key}='{local.parent}': {url} could not be copied there ({exc.strerror or exc}): "
            "free some space, or stream it (data.local_copy=false)"
        ) from None
    return str(local)


# ---- reading ------------------------------------------------------------------------------------------------
# litdata takes seconds to import: its classes are made on first use, and found by name (PEP 562) when a spawned
# loader worker unpickles a stream or a loader.
def __getattr__(name: str) -> type:
    if name == "ShardStream":
        return _stream_class()
    if name == "ShardLoader":
        return _loader_class()
    if name == "ShardItemLoader":
        return _item_loader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _item_loader_class() -> type:
    from litdata.streaming import item_loader

    class ShardItemLoader(item_loader.PyTreeLoader):
        """litdata's item reader, less one step: for a chunk it does not memory-map (a downloaded chunk two
        workers share), litdata 0.2.76 reads the whole chunk file for every item to look for a compression
        header our chunks never have (a 25 MB read an item: S3 fed 0.2x the folder's rate). Such an item is
        read alone instead, with one seek and read, as litdata does next."""

        def _load_batched_item(self, chunk_index: int, chunk_filepath: str, table_idx: int) -> Any:
            if self._mmap is None and self._open_handle is not None and not self._config.get("compression"):
                return item_loader._BATCH_SKIP
            return super()._load_batched_item(chunk_index, chunk_filepath, table_idx)

    ShardItemLoader.__qualname__ = "ShardItemLoader"  # found here when unpickled in a worker
    ShardItemLoader.__name__ = "PyTreeLoader"  # litdata checks the reader's class name against the writer's
    return ShardItemLoader


@functools.cache
def _stream_class() -> type:
    from litdata import StreamingDataset

    _allow_plain_http()

    class ShardStream(StreamingDataset):
        """A split's items, each passed through `transform(image, seed)`. Training: litdata's per-epoch shuffle
        (chunks, then items, from `seed` and the epoch) and each item's augmentation seeded by (seed, epoch,
        index): the same whichever rank or worker reads it, and again after a resume."""

        def __init__(
            self,
            url: str,
            transform: Callable[[np.ndarray, int | None], np.ndarray],
            train: bool,
            seed: int,
            source: str | None = None,
            **kwargs: Any,
        ) -> None:
            # batch_decode=0: one item deserialised once. litdata's "auto" decodes a window of items at a time
            # for arrays; the per-epoch shuffle then jumps between windows and each window is decoded again for
            # every item read from it (measured: 420 img/s at 430 images a chunk, 40,000 with 0).
            super().__init__(
                url, item_loader=_item_loader_class()(), shuffle=train, seed=seed, batch_decode=0, **kwargs
            )
            self.augment, self.train = transform, train
            # what is read, as written: `url@<index.json's updated_at>` (`url` may be a local copy of it)
            self.source = source or url
            if self.posix_fast is not None and self.posix_fast.window_shuffle:
                # litdata shuffles by windows of chunks in a folder on NFS, Lustre, GPFS...: a different order
                # from the same seed there, and a saved state that resumes elsewhere would repeat and skip items
                self.posix_fast = dataclasses.replace(self.posix_fast, kind="posix")

        def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return {**super().state_dict(*args, **kwargs), "source": self.source}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            super().load_state_dict(self._upgraded(state_dict) if state_dict else state_dict)

        def _upgraded(self, state: dict[str, Any]) -> dict[str, Any]:
            """A state of this split as written, in the form litdata accepts here: saved while it was streamed
            and resumed from its local copy or the other way round (litdata checks the paths read; the order
            depends on the chunks, seed and epoch only), or saved before streams had their own item reader
            (`item_loader: None` where litdata now holds that reader's empty state). Another split's state, or
            this one's before it was written again, is refused in one line."""
            saved = state.get("source") or self._legacy_source(state)
            if saved != self.source:
                raise DataConfigError(
                    f"data.input_dir: the checkpoint's loader state is of {saved} (shards @ when written), these "
                    f"are {self.source}: resume with the shards it was trained on, or start the run again"
                )
            state = {**state, "input_dir_path": self.input_dir.path, "input_dir_url": self.input_dir.url}
            state.update(cache_dir_path=self.cache_dir.path, source=self.source)
            if state.get("item_loader") is None:
                state["item_loader"] = {}
            return state

        def _legacy_source(self, state: dict[str, Any]) -> str:
            # saved before states named their source: litdata streams a remote split into a folder named after
            # its index's updated_at; a local folder's version is not recorded (assumed this one, as litdata did)
            if state.get("input_dir_url"):
                return f"{state['input_dir_url']}@{Path(state['input_dir_path'] or '').name}"
            return f"{state.get('input_dir_path')}@{self.source.rsplit('@', 1)[-1]}"

        def _create_cache(self, worker_env: Any) -> Any:
            # A fresh item reader for each reader litdata makes (it makes one a worker and epoch, and would
            # hand a given reader's open-chunk state, its mappings closed, to the next one)
            self.item_loader = _item_loader_class()()
            return super()._create_cache(worker_env)

        def __getitem__(self, index: Any) -> dict[str, Any]:
            item = super().__getitem__(index)
            # (seed, epoch, index) -> an item seed: Python's hash of a tuple of ints is the same in every process
            seed = hash((self.seed, self.current_epoch, int(item["index"]))) & (2**63 - 1) if self.train else None
            image = self.augment(item["image"], seed)
            target = item["target"]
            return {
                "image": image,
                "target": target if isinstance(target, np.ndarray) else np.int64(target),
                "index": int(item["index"]),
            }

    ShardStream.__qualname__ = "ShardStream"
    return ShardStream


def open_split(
    url: str,
    transform: Callable[[np.ndarray, int | None], np.ndarray],
    *,
    train: bool,
    seed: int,
    cache_dir: str | None,
    max_cache_size: str | int | None,
    storage_options: Mapping[str, Any] | None = None,
    drop_last: bool = False,
    copy_dir: str | None = None,
    key: str = "data.input_dir",
) -> Any:
    """A split as a litdata `StreamingDataset` (chunks downloaded into `cache_dir`, at most `max_cache_size`), or,
    given `copy_dir`, a remote split copied there whole once and read in place (`local_copy`).

    Made inside each DDP rank (setup), so litdata sees the process group and gives each rank its own chunks.
    """
    stream = _stream_class()
    os.environ.setdefault(WILLNEED, "0")  # inherited by the loader workers, where litdata reads it
    read = url
    if copy_dir is not None and is_remote(url):
        read, cache_dir = local_copy(url, copy_dir, storage_options, key), None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    try:
        written = json.loads(read_text(join(read, "index.json"), key, storage_options)).get("updated_at", "")
        return stream(
            read,
            transform,
            train,
            seed,
            source=f"{url}@{written}",
            cache_dir=cache_dir,
            max_cache_size=max_cache_size,
            storage_options=dict(storage_options or {}),
            drop_last=drop_last,
        )
    except DataConfigError:
        raise
    except Exception as exc:
        if is_remote(read):
            raise _store_error(url, key, exc) from None
        raise DataConfigError(
            f"{key}: '{url}' is not a shard split ({exc}): write it with python -m imgcls.shards"
        ) from None


def shard_loader(stream: Any, **kwargs: Any) -> Any:
    """litdata's `StreamingDataLoader` (it splits chunks between workers, and its state dict, which Lightning
    keeps in every checkpoint, resumes mid-epoch), timed like the host loader."""
    return _loader_class()(stream, **kwargs)


@functools.cache
def _loader_class() -> type:
    from litdata import StreamingDataLoader

    class ShardLoader(StreamingDataLoader):
        fetch_seconds = 0.0
        resumed = False  # set by `resume`: Lightning's own copy of the state must not be loaded over it

        def resume(self, epoch: int, state: dict[str, Any] | None) -> None:
            """Go on where a checkpoint left off: mid-epoch from the loader's `state`, else at epoch `epoch`'s
            start (litdata adds one as an epoch begins: its epochs, and its shuffle's seed, count from 1)."""
            if state is not None:
                super().load_state_dict(state)
            else:
                self.current_epoch = epoch
            self.resumed = True

        def load_state_dict(self, obj: dict[str, Any]) -> None:
            if not self.resumed:
                super().load_state_dict(obj)

        def __iter__(self) -> Iterator[Any]:
            prepare_collate(getattr(self.collate_fn, "collate_fn", self.collate_fn))  # litdata wraps ours
            return timed(self, super().__iter__())

        def _get_iterator(self) -> Any:
            # litdata's worker iterator points back at its loader, a cycle only the garbage collector frees, and
            # in an order that closes the workers' queues before they are told to stop: each persistent worker
            # then sat out a 5 s join timeout (10 s at the end of every run with 2 workers). A weak reference
            # lets the iterator go, and stop its workers at once, with its loader.
            iterator = super()._get_iterator()
            if hasattr(iterator, "_loader") and not getattr(self, "_profile_cprofile", False):  # (it needs it then)
                iterator._loader = weakref.proxy(self)
            return iterator

    ShardLoader.__qualname__ = "ShardLoader"
    return ShardLoader


def read_meta(
    input_dir: str, storage_options: Mapping[str, Any] | None = None, key: str = "data.input_dir"
) -> dict[str, Any]:
    return json.loads(read_text(join(input_dir, META_FILE), key, storage_options))
