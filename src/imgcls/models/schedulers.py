"""Learning-rate schedules, stepped every optimizer step (not every epoch) so warm-up works for short runs.

Each is linear warm-up, then a decay over the rest of training (timm's `--sched cosine|poly|multistep|plateau`
with `--warmup-*`): pick one with `model/scheduler=poly` (configs/model/scheduler/; the keys they share,
warmup_fraction / warmup_steps / min_lr_ratio, mean the same in each). A LambdaLR of the step count: its state
is the step (and, for plateau, what the metric did), so a resumed run continues the schedule exactly.
Layer-wise lr scales are kept (each group's own lr).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from imgcls.utils.compat import OBSERVED
from imgcls.utils.errors import ConfigError


class _Warmup:
    """A picklable lr multiplier: linear 0->1 over `warmup` steps, then `shape` (cosine | poly | steps |
    plateau) for progress 0->1, never below `floor`. Its attributes are plain numbers: LambdaLR saves them in every
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


class _Plateau(_Warmup):
    """Warm-up, then the lr times `gamma` each time the monitored metric has not improved (by more than
    `threshold`, relative) for `patience` validations: timm's / torch's ReduceLROnPlateau, but one multiplier of
    the step count like the others, so the warm-up is per step and the state resumes with the scheduler's."""

    def __init__(self, total: int, warmup: int, floor: float, gamma: float, patience: int, mode: str, threshold: float):
        super().__init__(total, warmup, "plateau", floor, gamma=gamma)
        self.patience, self.mode, self.threshold = int(patience), mode, float(threshold)
        # What the metric did: run state, restored on resume (utils/compat.py::OBSERVED); the rest is configuration.
        setattr(self, OBSERVED, {"best": None, "bad": 0, "reductions": 0})
        self.observed: dict[str, Any]

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return max(self.floor, self.gamma ** self.observed["reductions"])

    def observe(self, value: float) -> None:
        """One validation's monitored value (by `ObservePlateau`)."""
        seen, value = self.observed, float(value)
        best = seen["best"]
        if best is None or (
            value < best * (1 - self.threshold) if self.mode == "min" else value > best * (1 + self.threshold)
        ):
            seen.update(best=value, bad=0)
            return
        seen["bad"] += 1
        if seen["bad"] > self.patience:
            seen.update(reductions=seen["reductions"] + 1, bad=0)


def warmup_plateau(
    optimizer: Optimizer,
    total_steps: int,
    monitor: str = "val/loss",
    mode: str = "min",
    warmup_fraction: float = 0.05,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.0,
    gamma: float = 0.1,
    patience: int = 2,
    threshold: float = 1e-4,
) -> LambdaLR:
    """Linear warm-up then the lr times `gamma` after `patience` validations without `monitor` improving.

    The metric is fed in after each validation by `ObservePlateau` (added by the module for this schedule)."""
    if mode not in ("min", "max"):
        raise ConfigError(f"model.scheduler.mode='{mode}': use min or max (is a higher {monitor} better?)")
    warmup = _warmup_steps(total_steps, warmup_fraction, warmup_steps)
    plateau = _Plateau(int(total_steps), warmup, float(min_lr_ratio), float(gamma), patience, mode, threshold)
    scheduler = LambdaLR(optimizer, plateau)
    scheduler.monitor = monitor  # read by ObservePlateau; not in the state (it is configuration)
    return scheduler


class ObservePlateau(L.Callback):
    """Feeds each validation's monitored value to the plateau schedules. On `on_validation_end`, which Lightning
    runs for this callback before ModelCheckpoint's: the checkpoint saved after a validation already holds
    what it decided, so a resumed run continues with the same lr."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            lambdas = getattr(scheduler, "lr_lambdas", ())
            plateaus = {id(m): m for m in lambdas if isinstance(m, _Plateau)}  # LambdaLR repeats one per group
            if not plateaus:
                continue
            value = trainer.callback_metrics.get(scheduler.monitor)
            if value is None:
                known = sorted(k for k in trainer.callback_metrics if "/" in k)
                raise ConfigError(f"model.scheduler.monitor='{scheduler.monitor}' is not logged: use one of {known}")
            for plateau in plateaus.values():
                plateau.observe(float(value))
            # The new lr from the next step on (LambdaLR would apply it one step late); the checkpoint written
            # after this validation holds it, so a resumed run continues identically.
            for group, base, multiplier in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, lambdas):
                group["lr"] = base * multiplier(scheduler.last_epoch)
