"""DataLoader construction from the `loader` config group (one place for every stage)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from imgcls.data import batch_pool
from imgcls.data.dataset import collate_images, seed_worker


def available_cpus() -> int:
    """CPUs this process may use (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def resolve_num_workers(value: int | None) -> int:
    """`loader.num_workers: null` -> one worker per available CPU, capped at 8 (more rarely helps one GPU)."""
    return min(available_cpus(), 8) if value is None else int(value)


class TimedDataLoader(DataLoader):
    """A DataLoader that adds up the seconds its consumer spends blocked in `next()`: the data wait.

    Read by `imgcls.callbacks.ThroughputMonitor`. A subclass (not a wrapper) so Lightning can still re-create
    it with a DistributedSampler under DDP.
    """

    fetch_seconds = 0.0

    def __iter__(self) -> Iterator[Any]:
        prepare = getattr(self.collate_fn, "prepare", None)
        if prepare is not None:  # a recycled-buffer pool owned by this process, before any worker starts
            prepare()
        iterator = super().__iter__()
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                self.fetch_seconds += time.perf_counter() - start
            yield batch


def make_loader(dataset: Dataset, loader: Mapping[str, Any], *, train: bool, pin_memory: bool,
                world_size: int = 1, sampler: Sampler | None = None) -> DataLoader:
    """Train: shuffled (or drawn by `sampler`), `drop_last` (so BatchNorm never sees a 1-sample batch).
    Eval: ordered, nothing dropped.

    Under DDP each rank sees ceil(N / world_size) samples: `drop_last` is kept only while that is more than
    one batch, so a small dataset never silently trains on zero batches.
    """
    workers = resolve_num_workers(loader.get("num_workers"))
    batch_size = int(loader.get("batch_size", 64))
    if not train:
        batch_size = int(loader.get("eval_batch_size") or batch_size)
    extra: dict[str, Any] = {}
    collate = collate_images
    if workers > 0:
        persistent = bool(loader.get("persistent_workers", True))
        extra = dict(persistent_workers=persistent, prefetch_factor=int(loader.get("prefetch_factor", 2)),
                     worker_init_fn=seed_worker)
        slots = int(loader.get("reuse_buffers", 6) or 0)
        if slots and persistent and batch_pool.available():
            collate = batch_pool.PooledCollate(workers, slots)
    return TimedDataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      drop_last=train and bool(loader.get("drop_last", True))
                      and math.ceil(len(dataset) / world_size) > batch_size,
                      num_workers=workers, pin_memory=pin_memory, collate_fn=collate, **extra)
