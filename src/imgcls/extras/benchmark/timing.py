"""Timing primitives: warm-up excluded, each measurement long enough to be stable."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch


def _endless(loader: Iterable) -> Iterator[Any]:
    while True:  # a small dataset is re-iterated (persistent workers stay alive)
        yield from loader


def _batch_size(batch: Any) -> int:
    images = batch["image"] if isinstance(batch, dict) else batch[0]
    return int(images.shape[0])


def _timed(batches: Iterator[Any], min_batches: int, min_seconds: float) -> float:
    images, count, start = 0, 0, time.perf_counter()
    while count < min_batches or time.perf_counter() - start < min_seconds:
        batch = next(batches)
        images += _batch_size(batch)
        count += 1
        if count % 16 == 0:
            _wait_for(batch)  # device batches are queued work: the clock must see it done (not every batch)
    _wait_for(batch)
    return images / (time.perf_counter() - start)


def _wait_for(batch: Any) -> None:
    image = batch["image"] if isinstance(batch, dict) else batch[0]
    if isinstance(image, torch.Tensor) and image.is_cuda:
        torch.cuda.synchronize(image.device)


def loader_rate(loader: Iterable, warmup_batches: int = 3, min_batches: int = 20, min_seconds: float = 2.0) -> float:
    """Images per second the loader delivers to a consumer that does nothing else."""
    batches = _endless(loader)
    for _ in range(warmup_batches):  # worker start-up, first file-system touches
        next(batches)
    rate = _timed(batches, min_batches, min_seconds)
    batches.close()  # the loader's iterator, stopped mid-epoch, is let go of here,
    del batches
    gc.collect()  # and collected here: left to a loader worker forked later, it would try to stop its workers
    return rate


def bare_rate(transform: Any, arrays: list[np.ndarray], min_seconds: float = 2.0) -> float:
    """The augmentation alone on in-memory arrays, single-threaded like a loader worker: one worker's ceiling."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(0)  # as in every worker (seed_worker); the main process would otherwise use all cores
    try:
        for img in arrays[:5]:
            transform(image=img)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds or done < len(arrays):
            transform(image=arrays[done % len(arrays)])
            done += 1
        return done / (time.perf_counter() - start)
    finally:
        cv2.setNumThreads(threads)


def model_rate(
    module: Any,
    batch_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device,
    warmup_steps: int = 3,
    min_steps: int = 10,
    min_seconds: float = 3.0,
) -> float:
    """Images per second the model trains at (forward + backward + AdamW step) on synthetic uint8 batches."""
    module = module.to(device).train()
    images = torch.randint(0, 256, batch_shape, dtype=torch.uint8, device=device)
    targets = torch.randint(0, num_classes, (batch_shape[0],), device=device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(module(module.normalize(images)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup_steps):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < min_seconds:
        step()
        steps += 1
    sync()
    return steps * batch_shape[0] / (time.perf_counter() - start)


def _rank_rate(
    rank: int, processes: int, dataset: Any, settings: dict, timing: tuple[int, int, float], barrier: Any, results: Any
) -> None:
    """One DDP-like process: its shard of the data (DistributedSampler), its own workers, timed with the others."""
    from torch.utils.data import DistributedSampler

    from imgcls.feeding.loaders import make_loader

    torch.set_num_threads(1)
    sampler = DistributedSampler(dataset, num_replicas=processes, rank=rank, shuffle=True, seed=0)
    loader = make_loader(dataset, settings, train=True, on_cuda=False, world_size=processes, sampler=sampler)
    batches = _endless(loader)
    for _ in range(timing[0]):
        next(batches)
    barrier.wait()  # every process starts timing together, workers warm
    results.put((rank, _timed(batches, *timing[1:])))


def ddp_loader_rates(
    dataset: Any,
    settings: dict,
    processes: int,
    warmup_batches: int = 3,
    min_batches: int = 20,
    min_seconds: float = 2.0,
) -> list[float]:
    """Images/s of each of `processes` concurrent loaders, one per simulated DDP rank (spawned like ddp_spawn).

    Under DDP every rank runs its own loader and workers on the same CPUs: the total is what the machine feeds,
    the per-process rate is what each GPU gets. Start-up (imports, worker spawn) is not timed.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(
            target=_rank_rate,
            args=(rank, processes, dataset, settings, (warmup_batches, min_batches, min_seconds), barrier, results),
        )
        for rank in range(processes)
    ]
    for p in procs:
        p.start()
    rates = dict(results.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    return [rates[r] for r in range(processes)]
