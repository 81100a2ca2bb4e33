"""What a checkpoint must carry beyond Lightning's own state for a resumed run to continue exactly.

One callback, so neither the LightningModule nor the DataModule carries resume code (train always adds it):
- the position in the training data (epoch, batches done, of how many): the resumed loader starts there, so a
  mid-epoch resume does not replay the epoch's first batches (see `ResumableDataLoader`);
- the running bests (`torchmetrics` MaxMetric/MinMetric states are not saved with the weights): else a resumed
  run reports the best since the resume;
- in a mid-epoch checkpoint on one process, the training metrics accumulated so far in that epoch: else its
  `train/*_epoch` values would cover only the steps after the resume (under DDP the states live per rank);
- and it drops the saved LR-lambda state, so the schedule's length comes from this run's config: resuming with
  a larger `trainer.max_epochs` stretches the cosine instead of staying at its floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import MaxMetric, Metric, MinMetric

from imgcls.utils.compat import batches_done, drop_lr_lambda_state, restore_metric_state
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

POSITION, BESTS, EPOCH_METRICS = "train_position", "best_so_far", "epoch_train_metrics"


def data_position(trainer: L.Trainer) -> dict[str, int]:
    """Where training stands in the data now: the epoch (not yet counted as done at its end), batches done, of."""
    return {
        "epoch": int(trainer.current_epoch),
        "batches": batches_done(trainer),
        "of": int(trainer.num_training_batches),
    }


def next_position(position: Mapping[str, int]) -> tuple[int, int]:
    """(epoch, batch) where training goes on after a checkpoint written at `position`: a finished epoch resumes
    at the next one's start, an interrupted one at the batch after the last one done."""
    epoch, done, total = position["epoch"], position["batches"], position["of"]
    return (epoch + 1, 0) if done >= total else (epoch, done)


def saved_position(checkpoint: Mapping[str, Any]) -> tuple[int, int] | None:
    """Where a run resumed from `checkpoint` goes on (None: no position saved). Checkpoints written before this
    callback existed kept the position in the DataModule's state."""
    position = checkpoint.get(POSITION) or (checkpoint.get("ImageDataModule") or {}).get(POSITION)
    return next_position(position) if position else None


def _running_bests(module: L.LightningModule) -> dict[str, Metric]:
    return {name: m for name, m in module.named_modules() if isinstance(m, (MaxMetric, MinMetric))}


def _train_metrics(module: L.LightningModule) -> dict[str, Metric]:
    """The metrics accumulated over a training epoch: those under attributes named `train_*`."""
    return {name: m for name, m in module.named_modules() if isinstance(m, Metric) and name.startswith("train_")}


class ResumeState(Callback):
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != "fit":
            return
        checkpoint[POSITION] = data_position(trainer)
        checkpoint[BESTS] = {name: _best_value(m) for name, m in _running_bests(pl_module).items()}
        done, total = checkpoint[POSITION]["batches"], checkpoint[POSITION]["of"]
        if trainer.world_size == 1 and 0 < done < total:
            checkpoint[EPOCH_METRICS] = {
                name: (m.update_count, {k: _copy(v) for k, v in m.metric_state.items()})
                for name, m in _train_metrics(pl_module).items()
            }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        bests = checkpoint.get(BESTS) or {}
        for name, metric in _running_bests(pl_module).items():
            if bests.get(name) is not None:
                metric.update(torch.tensor(bests[name]))
        for scheduler in checkpoint.get("lr_schedulers") or []:
            drop_lr_lambda_state(scheduler)
        saved = checkpoint.get(EPOCH_METRICS) or {}
        for name, metric in _train_metrics(pl_module).items():
            if name in saved:
                restore_metric_state(metric, *saved[name])
        datamodule = getattr(trainer, "datamodule", None)
        if trainer.state.fn == "fit" and datamodule is not None and hasattr(datamodule, "train_start"):
            datamodule.train_start = saved_position(checkpoint)


def _best_value(metric: Metric) -> float | None:
    """The running best so far, or None before the first update (torchmetrics starts it at -inf/+inf)."""
    value = float(metric.max_value if isinstance(metric, MaxMetric) else metric.min_value)
    return None if abs(value) == float("inf") else value


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else [_copy(v) for v in value]


def resumed_data(checkpoint: Mapping[str, Any] | None) -> dict[str, Any]:
    """DataModule arguments a resumed run takes from its checkpoint rather than today's config: a run begun before
    `data.resize` existed stretched every image (its weights learnt that input), and goes on doing so."""
    spec = ((checkpoint or {}).get("hyper_parameters") or {}).get("data_spec") or {}
    if checkpoint is None or "resize" in spec:
        return {}
    log.warning("The checkpoint predates data.resize: this resumed run keeps stretching images, as it began")
    return {"resize": {"mode": "stretch"}}
