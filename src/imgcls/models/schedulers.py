"""Learning-rate schedules, stepped every optimizer step (not every epoch) so warm-up works for short runs.

Each is linear warm-up, then a decay over the rest of training (timm's `--sched cosine|poly|multistep` with
`--warmup-*`): pick one with `model.scheduler._target_=imgcls.models.schedulers.warmup_poly` (the keys they share,
warmup_fraction / warmup_steps / min_lr_ratio, mean the same in each). A LambdaLR of the step count: its state
is the step, so a resumed run continues the schedule exactly. Layer-wise lr scales are kept (each group's own lr).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from imgcls.utils.errors import ConfigError


class _Warmup:
    """A picklable lr multiplier: linear 0->1 over `warmup` steps, then `shape` (cosine | poly | steps) for
    progress 0->1, never below `floor`. Its attributes are plain numbers: LambdaLR saves them in every
    checkpoint, which must load with `weights_only=True` (models/checkpoint.py)."""

    def __init__(
        self,
        total: int,
        warmup: int,
        shape: str,
        floor: float,
        power: float = 1.0,
        milestones: Sequence[float] = (),
        gamma: float = 0.1,
    ) -> None:
        self.total, self.warmup, self.shape, self.floor = max(1, total), warmup, shape, floor
        self.power, self.milestones, self.gamma = power, sorted(float(m) for m in milestones), gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.shape == "steps":  # gamma per milestone passed
            return max(self.floor, self.gamma ** sum(progress >= m for m in self.milestones))
        fall = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.shape == "cosine" else (1.0 - progress) ** self.power
        return self.floor + (1.0 - self.floor) * fall


def _warmup_steps(total_steps: int, warmup_fraction: float, warmup_steps: int | None) -> int:
    return max(0, int(warmup_steps) if warmup_steps is not None else int(round(warmup_fraction * total_steps)))


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warm-up then cosine decay to `min_lr_ratio` x the base lr, over `total_steps` optimizer steps."""
    warmup = _warmup_steps(total_steps, warmup_fraction, warmup_steps)
    return LambdaLR(optimizer, _Warmup(int(total_steps), warmup, "cosine", float(min_lr_ratio)))


def warmup_poly(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.0,
    power: float = 1.0,
) -> LambdaLR:
    """Linear warm-up then (1 - progress) ** `power` down to `min_lr_ratio` (power 1: linear decay)."""
    warmup = _warmup_steps(total_steps, warmup_fraction, warmup_steps)
    return LambdaLR(optimizer, _Warmup(int(total_steps), warmup, "poly", float(min_lr_ratio), power=float(power)))


def warmup_multistep(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> LambdaLR:
    """Linear warm-up then the lr times `gamma` at each milestone (a fraction of the steps after warm-up: 0.5 =
    half-way through them), never below `min_lr_ratio`."""
    if any(not 0.0 < float(m) < 1.0 for m in milestones):
        raise ConfigError(f"model.scheduler.milestones={list(milestones)}: fractions of training in (0, 1), e.g. [0.5]")
    warmup = _warmup_steps(total_steps, warmup_fraction, warmup_steps)
    steps = _Warmup(int(total_steps), warmup, "steps", float(min_lr_ratio), milestones=milestones, gamma=float(gamma))
    return LambdaLR(optimizer, steps)
