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

import numpy as np

from imgcls.feeding.cache import CacheReader
from imgcls.feeding.loaders import prepare_collate, timed
from imgcls.feeding.object_store import (  # noqa: F401  (check_writable, write_text: the writer's, from here)
    check_writable,
    is_remote,
    join,
    publish,
    read_text,
    store_error,
    write_text,
)
from imgcls.feeding.shard_copy import local_copy
from imgcls.utils.errors import DataConfigError

META_FILE = "imgcls.json"  # the spec and counts of a shard dataset
TABLE_FILE = "split.csv"  # its rows, per split in shard order
SPLITS = ("train", "val", "test")
# Chunks per split at least (if it has that many images), the default of `python -m imgcls.shards min_chunks=`:
# one for each reader (ranks x workers; 2 ranks x 8 workers here) without cutting chunks into many slivers, since
# litdata pays ~0.3-1 ms each time a reader opens a chunk (a split of 540 photos at 224x224 in 64 chunks fed 0.49x
# the cache's rate, in 16 chunks 0.73x; python -m imgcls.bench bench.shards=[folder]).
MIN_CHUNKS = 16


class _QuietAdvice(logging.Filter):
    """litdata notes logged again for every stream, or every worker and epoch (300 lines in a 3-minute bench),
    about settings made for us: a chunk cache under 25GB (data.max_cache_size says the bound), a larger download
    window for remote chunks, a local folder's chunks read in place, its per-chunk pre-read skipped (WILLNEED off
    here, which litdata words as "would crowd RAM"), and, on every DDP rank, that an evaluation split keeps its
    last items (drop_last off): on purpose, every image is scored once and evaluation syncs only at the end."""

    ADVICE = (
        "The provided `max_cache_size` is less than",
        "Async chunk prefetch: raising max_pre_download",
        "StreamingDataset POSIX-fast %s: mmap chunks in place",
        "POSIX-fast: skipping WILLNEED prefetch",
        "You're operating within a distributed environment and have disabled the `drop_last` option",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.ADVICE)


QUIETED = ("litdata.streaming.dataset", "litdata.streaming.async_prefetch", "litdata.streaming.reader")
for _name in QUIETED:
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
        publish(staging, output_dir, storage_options)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
            # what is read, as written: `<source>@<index.json's updated_at>` (`url` may be a local copy of source)
            self.source = f"{source or url}@{self._written()}"
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

        def _written(self) -> str:
            """When the split was written (its index.json's updated_at). litdata names the folder it streams a
            remote split into after it (having read the index), so only a local folder's index is read here."""
            if self.input_dir.url:
                return Path(self.input_dir.path).name
            return str(json.loads((Path(self.input_dir.path) / "index.json").read_text()).get("updated_at", ""))

        def _legacy_source(self, state: dict[str, Any]) -> str:
            # saved before states named their source: a remote split's version is its stream folder's name (as
            # in `_written`); a local folder's version is not recorded (assumed this one, as litdata did)
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
        return stream(
            read,
            transform,
            train,
            seed,
            source=url,
            cache_dir=cache_dir,
            max_cache_size=max_cache_size,
            storage_options=dict(storage_options or {}),
            drop_last=drop_last,
        )
    except DataConfigError:
        raise
    except Exception as exc:
        if is_remote(read):
            raise store_error(url, key, exc) from None
        raise DataConfigError(
            f"{key}: '{url}' is not a shard split ({exc}): write it with python -m imgcls.shards"
        ) from None


def rank_batch_size(split: str, images: int, batch_size: int, world: int) -> int:
    """The batch size each of `world` DDP ranks reads a split of `images` in. litdata shares a split out in whole
    batches (the last rank also takes what is left), so fewer than world x batch_size images leave a rank without
    a batch and Lightning stops. Evaluation then reads smaller batches, every image once all the same (each rank
    one batch at least); training is refused in one line, as its batch size is part of the recipe."""
    if images >= world * batch_size:
        return batch_size
    if images < world:
        raise DataConfigError(
            f"data.input_dir: its {split} split has {images} images for {world} DDP processes, one each at least: "
            f"use fewer trainer.devices, or write the shards with more {split} images"
        )
    if split == "train":
        raise DataConfigError(
            f"loader.batch_size={batch_size}: the {images} training images in data.input_dir make no batch for each "
            f"of {world} DDP processes: lower loader.batch_size to {images // world} at most, or use fewer "
            "trainer.devices"
        )
    return images // world


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
