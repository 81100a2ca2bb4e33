"""DataLoader construction from the `loader` config group (one place for every stage)."""

from __future__ import annotations

import itertools
import math
import os
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from imgcls.data import batch_pool
from imgcls.data.dataset import collate_images, seed_worker
from imgcls.data.samplers import EpochSampler


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
    it with a DistributedSampler under DDP (it replays the constructor's arguments, `start` included).

    `start=(epoch, batches)` makes the first iteration begin at that epoch's batch `batches` (a resumed run):
    the sampler is set to `epoch` and the first `batches` batches of indices are skipped without loading them.
    Lightning creates the first iterator *before* it calls `set_epoch`, so without this a resumed run would
    replay epoch 0's order.
    """

    fetch_seconds = 0.0

    def __init__(self, *args: Any, start: tuple[int, int] | None = None, **kwargs: Any) -> None:
        self.start = tuple(start) if start is not None else None
        self._skip = 0
        super().__init__(*args, **kwargs)

    @property
    def _index_sampler(self) -> Any:  # what DataLoader iterators draw (batches of) indices from
        return _SkipFirst(super()._index_sampler, self)

    # Lightning warns that a loader without these cannot resume mid-epoch. This one can: the position travels
    # in the checkpoint through the DataModule's state_dict and comes back as `start`; nothing to keep here.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        if self.start is not None:
            epoch, self._skip = self.start
            self.start = None
            set_epoch = getattr(self.sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
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


class _SkipFirst:
    """An index sampler that drops the loader's pending `_skip` batches from its next pass. The skip is taken
    when the pass yields its first batch, not when it is created: torch creates a pass and throws it away
    before the one it uses, and persistent workers re-iterate this same object every epoch."""

    def __init__(self, base: Any, loader: TimedDataLoader) -> None:
        # A weak reference: the loader's iterator holds this object, and a loader <-> iterator cycle would keep
        # persistent workers alive until a garbage collection (in the bench, inherited by the next loader's
        # forked workers, whose collections then try to shut down workers that are not theirs).
        self.base, self._loader = base, weakref.ref(loader)

    def __iter__(self) -> Iterator[Any]:
        loader, skip = self._loader(), 0
        if loader is not None:
            skip, loader._skip = loader._skip, 0
        del loader  # not held by this generator's frame while it runs
        yield from itertools.islice(iter(self.base), skip, None)

    def __len__(self) -> int:
        return len(self.base)


def make_loader(dataset: Dataset, loader: Mapping[str, Any], *, train: bool, pin_memory: bool,
                world_size: int = 1, sampler: Sampler | None = None, seed: int = 0,
                start: tuple[int, int] | None = None) -> DataLoader:
    """Train: drawn by `sampler` (default: an `EpochSampler` shuffle from `seed` and the epoch), `drop_last`
    (so BatchNorm never sees a 1-sample batch), beginning at `start` (see TimedDataLoader).
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
    if train and sampler is None:
        sampler = EpochSampler(len(dataset), seed)
    return TimedDataLoader(dataset, batch_size=batch_size, sampler=sampler, start=start if train else None,
                      drop_last=train and bool(loader.get("drop_last", True))
                      and math.ceil(len(dataset) / world_size) > batch_size,
                      num_workers=workers, pin_memory=pin_memory, collate_fn=collate, **extra)
