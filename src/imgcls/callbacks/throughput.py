"""Throughput telemetry: is the model waiting for data?

Throughput is min(loader, model). Between the end of one training step and the start of the next, the loop
waits for the next batch; `train/data_wait_frac` is that wait divided by the whole step time. Near 0 the model
sets the pace; above ~0.1 the loader does, and a faster GPU would not help.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from imgcls.utils.logging import get_logger

log = get_logger(__name__)

REMEDIES = ("raise loader.num_workers (up to the CPU count), keep data.cache=true, use a lighter augment preset "
            "(augment=basic), lower data.image_size, or move decoding off the critical path (pre-resize images)")


class ThroughputMonitor(Callback):
    """Logs `train/samples_per_sec`, `train/data_wait_frac` and `train/step_time` every logging interval.

    The first batch of each epoch is left out: its wait is worker start-up, reported once as
    `train/first_batch_wait`. `sync_cuda` waits for queued GPU work at each step end so GPU time is not
    mistaken for data wait (one sync per step; cheap next to a step).
    """

    def __init__(self, warn_threshold: float = 0.10, sync_cuda: bool = True) -> None:
        self.warn_threshold = warn_threshold
        self.sync_cuda = sync_cuda
        self._warned = False
        self._reset_interval()
        self._epoch_wait = self._epoch_busy = 0.0
        self._last_end: float | None = None
        self._step_start = 0.0
        self._first = self._counting = False

    def _reset_interval(self) -> None:
        self._wait = self._busy = 0.0
        self._samples = self._steps = 0

    def _now(self, trainer: L.Trainer) -> float:
        if self.sync_cuda and trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset_interval()
        self._epoch_wait = self._epoch_busy = 0.0
        self._last_end = time.perf_counter()
        self._first = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_start = time.perf_counter()
        wait = self._step_start - (self._last_end or self._step_start)
        self._counting = not self._first
        if self._first:
            self._first = False
            self._log(trainer, {"train/first_batch_wait": wait})
            return
        self._wait += wait
        self._epoch_wait += wait

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        end = self._now(trainer)
        self._last_end = end
        if not self._counting:  # the epoch's first step: start-up, reported on its own
            return
        busy = end - self._step_start
        self._busy += busy
        self._epoch_busy += busy
        self._samples += int(batch["image"].shape[0]) * trainer.world_size
        self._steps += 1
        if self._steps >= trainer.log_every_n_steps and self._wait + self._busy > 0:
            total = self._wait + self._busy
            self._log(trainer, {"train/samples_per_sec": self._samples / total,
                                "train/data_wait_frac": self._wait / total,
                                "train/step_time": total / self._steps})
            self._reset_interval()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = self._epoch_wait + self._epoch_busy
        if total <= 0:
            return
        frac = self._epoch_wait / total
        self._log(trainer, {"train/data_wait_frac_epoch": frac})
        if frac > self.warn_threshold and not self._warned and trainer.is_global_zero:
            self._warned = True
            message = (f"The model waited for data {frac:.0%} of epoch {trainer.current_epoch} (over "
                       f"{self.warn_threshold:.0%}): training is data-bound. Try: {REMEDIES}.")
            log.warning(message)

    @staticmethod
    def _log(trainer: L.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
