"""Training samplers whose every draw is a function of (seed, epoch): the key to exact resume and to DDP.

Each item is yielded as `(index, item_seed)`: the dataset re-seeds its augmentation with `item_seed` before
transforming the image. So what an image looks like depends only on (seed, epoch, position in the epoch), never
on which worker happened to load it, how many workers there are, or what ran before in this process. A run
killed and resumed replays the interrupted epoch exactly; `num_workers` can change without changing results.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Per-sample weight 1 / (images of its class): every class is drawn equally often on average."""
    counts = np.bincount(labels)
    return torch.as_tensor(1.0 / counts[labels], dtype=torch.double)


class EpochSampler(Sampler[tuple[int, int]]):
    """A shuffle (or, with `weights`, a weighted draw with replacement) that depends on (seed, epoch) only.

    Lightning calls `set_epoch` every epoch. Under DDP it wraps this sampler in `DistributedSamplerWrapper`,
    which materialises it on every rank and hands each rank a disjoint share: a partition of *one* draw,
    because every rank draws the same thing. torch's RandomSampler/WeightedRandomSampler use the process RNG
    instead (different per rank, and lost when a run is killed).
    """

    def __init__(
        self,
        num_items: int,
        seed: int = 0,
        weights: torch.Tensor | np.ndarray | None = None,
        num_samples: int | None = None,
    ) -> None:
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.num_samples = int(num_samples if num_samples is not None else num_items)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's (indices, item seeds)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is None:
            order = rng.permutation(self.num_items)[: self.num_samples]
        else:
            order = rng.choice(self.num_items, size=self.num_samples, replace=True, p=self.weights / self.weights.sum())
        return order, rng.integers(0, 2**63 - 1, size=len(order), dtype=np.int64)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = self.draw()
        yield from zip(order.tolist(), seeds.tolist())

    def __len__(self) -> int:
        return self.num_samples
