"""DataLoader worker set-up: OpenCV threads off, a distinct reproducible seed per worker and DDP rank."""

from __future__ import annotations

import random

import cv2
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only


def augmentation_seed(base: int, rank: int) -> int:
    """One seed per (process seed, DDP rank): ranks must not replay each other's augmentations."""
    return (base + 1_000_003 * rank) % 2**32


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: distinct, reproducible augmentation per worker, rank and epoch.

    `torch.initial_seed()` inside a worker is base_seed + worker_id, and the base seed is drawn from the
    (seeded) main-process RNG each time workers start, so non-persistent workers also change every epoch.
    """
    cv2.setNumThreads(0)  # OpenCV would otherwise start a thread per core in every worker
    seed = augmentation_seed(torch.initial_seed(), int(getattr(rank_zero_only, "rank", 0) or 0))
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)
