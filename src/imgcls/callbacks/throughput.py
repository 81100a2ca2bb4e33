"""Throughput telemetry: is the model waiting for data?

Throughput is min(loader, model). `train/data_wait_frac` is the time the training loop spent waiting for the
next batch divided by the whole step (wait + compute + loop overhead). Near 0 the model sets the pace; above
~0.1 the loader does, and a faster GPU would not help.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from imgcls.utils.logging import get_logger

log = get_logger(__name__)

REMEDIES = (
    "raise loader.num_workers (up to the CPU count), keep data.cache=true, use a lighter augment preset "
    "(augment=basic), lower data.image_size, or pre-resize the images on disk"
)


def _fetch_seconds(trainer: L.Trainer) -> float | None:
    """Seconds spent inside the train loader's `next()` so far (see `TimedDataLoader`), if it keeps count."""
    return getattr(getattr(trainer, "train_dataloader", None), "fetch_seconds", None)


class ThroughputMonitor(Callback):
    """Logs `train/samples_per_sec`, `train/data_wait_frac` and `train/step_time` every logging interval.

    The wait is measured inside the loader's `next()` when the loader is a `TimedDataLoader` (the
    DataModule's are), else as the gap between one step's end and the next step's start. The first step of each
    epoch is left out (its wait is worker start-up, logged as `train/first_batch_wait`). `sync_cuda` waits for
    queued GPU work at each step end so GPU time is not mistaken for data wait.
    """

    def __init__(self, warn_threshold: float = 0.10, sync_cuda: bool = True) -> None:
        self.warn_threshold = warn_threshold
        self.sync_cuda = sync_cuda
        self._warned = False
        self._epoch = {"wait": 0.0, "total": 0.0}
        self._interval = {"wait": 0.0, "total": 0.0, "samples": 0, "steps": 0}
        self._last_end = self._step_start = 0.0
        self._last_fetch: float | None = None
        self._first = self._counting = False

    def _now(self, trainer: L.Trainer) -> float:
        if self.sync_cuda and trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed mid-epoch starts without on_train_epoch_start: start the clocks here too.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch = {"wait": 0.0, "total": 0.0}
        self._interval = {"wait": 0.0, "total": 0.0, "samples": 0, "steps": 0}
        self._last_end = time.perf_counter()
        self._last_fetch = _fetch_seconds(trainer)
        self._first = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        gap = now - self._last_end
        fetched = _fetch_seconds(trainer)
        wait = gap if fetched is None or self._last_fetch is None else min(gap, fetched - self._last_fetch)
        self._last_fetch, self._step_start = fetched, now
        self._counting = not self._first
        if self._first:
            self._first = False
            self._log(trainer, {"train/first_batch_wait": gap})
            return
        for acc in (self._epoch, self._interval):
            acc["wait"] += wait
            acc["total"] += gap

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        end = self._now(trainer)
        self._last_end = end
        if not self._counting:
            return
        busy = end - self._step_start
        self._epoch["total"] += busy
        acc = self._interval
        acc["total"] += busy
        acc["samples"] += int(batch["image"].shape[0]) * trainer.world_size
        acc["steps"] += 1
        if acc["steps"] >= trainer.log_every_n_steps and acc["total"] > 0:
            self._log(
                trainer,
                {
                    "train/samples_per_sec": acc["samples"] / acc["total"],
                    "train/data_wait_frac": acc["wait"] / acc["total"],
                    "train/step_time": acc["total"] / acc["steps"],
                },
            )
            self._interval = {"wait": 0.0, "total": 0.0, "samples": 0, "steps": 0}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch["total"] <= 0:
            return
        frac = self._epoch["wait"] / self._epoch["total"]
        self._log(trainer, {"train/data_wait_frac_epoch": frac})
        if frac > self.warn_threshold and not self._warned and trainer.is_global_zero:
            self._warned = True
            log.warning(
                f"The model waited for data {frac:.0%} of epoch {trainer.current_epoch} (over "
                f"{self.warn_threshold:.0%}): training is data-bound. Try: {REMEDIES}."
            )

    @staticmethod
    def _log(trainer: L.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
