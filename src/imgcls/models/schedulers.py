"""Learning-rate schedules, stepped every optimizer step (not every epoch) so warm-up works for short runs."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class _WarmupCosine:
    """A picklable lr multiplier: linear 0->1 over `warmup` steps, then cosine 1->`floor` at `total`."""

    def __init__(self, total: int, warmup: int, floor: float) -> None:
        self.total, self.warmup, self.floor = max(1, total), warmup, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warm-up then cosine decay to `min_lr_ratio` x the base lr, over `total_steps` optimizer steps."""
    warmup = int(warmup_steps) if warmup_steps is not None else int(round(warmup_fraction * total_steps))
    return LambdaLR(optimizer, _WarmupCosine(int(total_steps), max(0, warmup), float(min_lr_ratio)))
