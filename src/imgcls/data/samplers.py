"""Class-balanced sampling that stays correct under DDP."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Per-sample weight 1 / (images of its class): every class is drawn equally often on average."""
    counts = np.bincount(labels)
    return torch.as_tensor(1.0 / counts[labels], dtype=torch.double)


class EpochWeightedSampler(Sampler[int]):
    """`WeightedRandomSampler` whose draw is a function of (seed, epoch) only.

    Under DDP, Lightning wraps a custom sampler in `DistributedSamplerWrapper`, which materialises the sampler
    on every rank and gives each rank a disjoint share. That is only a partition of *one* draw if every rank
    draws the same indices: torch's WeightedRandomSampler uses the process RNG, which differs per rank (ranks
    seed their augmentation differently). Here the generator is seeded from (seed, epoch), and Lightning calls
    `set_epoch` every epoch (through the wrapper too), so epochs differ and ranks agree.
    """

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_samples
