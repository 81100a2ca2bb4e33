"""DataLoader construction from the `loader` config group (one place for every stage)."""

from __future__ import annotations

import difflib
import functools
import math
import multiprocessing
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler

from imgcls import CONFIG_DIR
from imgcls.feeding import batch_pool
from imgcls.feeding.collate import PooledCollate, collate_images
from imgcls.feeding.workers import seed_worker
from imgcls.resume.loader import ResumableDataLoader
from imgcls.resume.sampler import EpochSampler
from imgcls.utils.env_report import available_cpus
from imgcls.utils.errors import ConfigError

DEFAULT_BATCH_SIZE = 64  # without loader.batch_size (configs/loader/default.yaml sets one)


def resolve_num_workers(value: int | None) -> int:
    """`loader.num_workers: null` -> one worker per available CPU, capped at 8 (more rarely helps one GPU)."""
    return min(available_cpus(), 8) if value is None else int(value)


def resolve_pin_memory(wanted: Any, on_cuda: bool) -> bool:
    """`loader.pin_memory`: auto/true pin when the batches go to a CUDA device (pinned host memory only speeds up
    a host->CUDA copy; elsewhere it just costs RAM); false never pins."""
    if wanted in ("auto", None, True):
        return on_cuda
    if wanted is False:
        return False
    raise ConfigError(f"loader.pin_memory={wanted!r} is not an option: use auto, true or false")


def resolve_start_method(value: str | None) -> str:
    """`loader.start_method`: how worker processes start. null = the platform's default (fork on Linux), also
    inside a process that was itself spawned (a ddp_spawn rank, a bench process): there Python's default has
    become spawn, and each spawned worker would re-import torch and this package (~10 s of CPU on 2 cores) and
    unpickle the dataset, where a forked one starts at once, as it does under plain `ddp`."""
    methods = multiprocessing.get_all_start_methods()  # the platform's default first
    if value is None:
        return methods[0]
    if value not in methods:
        choices = ", ".join(methods)
        raise ConfigError(f"loader.start_method={value!r} is not available here: use null or one of {choices}")
    return value


@functools.cache
def loader_settings() -> tuple[str, ...]:
    """The `loader` keys make_loader reads: those documented in configs/loader/default.yaml (one list)."""
    return tuple(OmegaConf.load(CONFIG_DIR / "loader" / "default.yaml"))


def check_loader_settings(loader: Mapping[str, Any]) -> None:
    """A `loader` key that nothing reads (e.g. `+loader.num_worker=2`) is an error naming the closest real one."""
    known = loader_settings()
    for key in loader:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean loader.{close[0]}={loader[key]}? " if close else ""
            raise ConfigError(
                f"loader.{key} is not a loader setting (nothing reads it): {hint}the settings are {', '.join(known)}"
                " (configs/loader/default.yaml)"
            )


class TimedDataLoader(ResumableDataLoader):
    """A DataLoader that adds up the seconds its consumer spends blocked in `next()`: the data wait.

    Read by `imgcls.callbacks.ThroughputMonitor`. Resumable mid-epoch (`start=`, see imgcls.resume.loader).
    """

    fetch_seconds = 0.0

    def __iter__(self) -> Iterator[Any]:
        self.begin()
        prepare_collate(self.collate_fn)
        yield from timed(self, super().__iter__())


def batch_collate(loader: Mapping[str, Any], workers: int) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """How workers make batches: into recycled shared-memory buffers (`loader.reuse_buffers` slots per worker)
    when the workers persist, else into fresh ones (`collate_images`)."""
    slots = int(loader.get("reuse_buffers", 6) or 0)
    persistent = bool(loader.get("persistent_workers", True))
    if workers > 0 and slots and persistent and batch_pool.available():
        return PooledCollate(workers, slots)
    return collate_images


def worker_options(loader: Mapping[str, Any], workers: int) -> dict[str, Any]:
    """The DataLoader arguments that only exist with workers: whether they persist, their prefetch, start method
    and set-up (`seed_worker`: OpenCV's threads off, each worker's augmentation seeded)."""
    if workers == 0:
        return {}
    return {
        "persistent_workers": bool(loader.get("persistent_workers", True)),
        "prefetch_factor": int(loader.get("prefetch_factor", 2)),
        "worker_init_fn": seed_worker,
        "multiprocessing_context": resolve_start_method(loader.get("start_method")),
    }


def prepare_collate(collate: Any) -> None:
    """Call as a loader's iteration begins: a recycled-buffer pool owned by this process, before workers start."""
    prepare = getattr(collate, "prepare", None)
    if prepare is not None:
        prepare()


def timed(owner: Any, iterator: Iterator[Any]) -> Iterator[Any]:
    """`iterator`'s batches, adding the seconds the consumer waits in `next()` to `owner.fetch_seconds`."""
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        finally:
            owner.fetch_seconds += time.perf_counter() - start
        yield batch


def batching(loader: Mapping[str, Any], train: bool, num_items: int, world_size: int = 1) -> tuple[int, bool]:
    """(batch size, drop_last) of a loader: `loader.batch_size` (evaluation: `eval_batch_size` if set); training
    drops the last incomplete batch only while each DDP rank's ceil(N / world_size) samples exceed one batch, so a
    small dataset never silently trains on zero batches. The host loader and data.placement=device's both use it."""
    batch_size = int(loader.get("batch_size", DEFAULT_BATCH_SIZE))
    if not train:
        return int(loader.get("eval_batch_size") or batch_size), False
    drop_last = bool(loader.get("drop_last", True)) and math.ceil(num_items / world_size) > batch_size
    return batch_size, drop_last


def make_loader(
    dataset: Dataset,
    loader: Mapping[str, Any],
    *,
    train: bool,
    on_cuda: bool = False,
    world_size: int = 1,
    sampler: Sampler | None = None,
    seed: int = 0,
    start: tuple[int, int] | None = None,
) -> DataLoader:
    """Train: drawn by `sampler` (default: an `EpochSampler` shuffle from `seed` and the epoch), `drop_last`
    (so BatchNorm never sees a 1-sample batch), beginning at `start` (see TimedDataLoader).
    Eval: ordered, nothing dropped. `on_cuda`: the batches go to a CUDA device (`loader.pin_memory` pins only then).

    Batch size and `drop_last` follow `batching`.
    """
    check_loader_settings(loader)
    workers = resolve_num_workers(loader.get("num_workers"))
    batch_size, drop_last = batching(loader, train, len(dataset), world_size)
    if train and sampler is None:
        sampler = EpochSampler(len(dataset), seed)
    return TimedDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        start=start if train else None,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=resolve_pin_memory(loader.get("pin_memory", "auto"), on_cuda),
        collate_fn=batch_collate(loader, workers),
        **worker_options(loader, workers),
    )
