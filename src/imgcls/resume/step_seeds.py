"""Re-seed the training process's RNGs before every step from (seed, rank, epoch, batch).

Dropout, mixup/cutmix and anything else drawn in the training process then depend on where the step is, not
on how many draws came before it in this process. Lightning does not store RNG states in checkpoints, so
without this a resumed run (even one resumed at an epoch boundary) draws differently from the run that was
killed. The data side is already position-seeded (`imgcls.resume.sampler.EpochSampler`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def step_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """A 63-bit seed for one (seed, rank, epoch, batch); neighbouring steps get unrelated streams."""
    return int(np.random.SeedSequence([seed, rank, epoch, batch]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class StepSeeds(Callback):
    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        value = step_seed(self.seed, trainer.global_rank, trainer.current_epoch, batch_idx)
        torch.manual_seed(value)  # also every CUDA device
        np.random.seed(value % 2**32)
        random.seed(value)
