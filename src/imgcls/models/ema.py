"""`model.ema`: an exponential moving average of the network's weights (timm's `ModelEmaV3`), validated beside them.

Why a callback of our own around timm's EMA rather than Lightning's `WeightAveraging`: that callback swaps the
averaged weights in for validation, so one run reports either the raw or the EMA model, never both, while timm's
recipe (and the checkpoint monitor's choice) needs both each epoch: `val/f1` and `val_ema/f1`. The Classifier
adds this callback itself (`configure_callbacks`), so the training step never mentions EMA.

The averaged network lives outside the LightningModule (DDP never sees it; every rank updates its own copy from
identical weights) and travels in the checkpoint as `state_dict_ema`, keyed like the network (timm's convention):
resume continues it exactly, `trainer.test(ckpt_path=...)` restores it, and predict uses it (models/checkpoint.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from timm.utils import ModelEmaV3, distribute_bn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MultilabelPrecisionRecallCurve

from imgcls.models.metrics import at_thresholds, tune_thresholds
from imgcls.utils.errors import ConfigError

CHECKPOINT_KEY = "state_dict_ema"
PREFIX = "val_ema/"
SETTINGS = ("decay", "warmup", "warmup_power", "update_after_step")
DEFAULT_DECAY = 0.9998  # timm's --model-ema-decay


def check_ema_settings(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`model.ema`: null/false (off), true or a mapping of SETTINGS with a decay in (0, 1) (on; {} = defaults);
    anything else is a one-line error."""
    if settings is None or settings is False:
        return None
    if settings is True:  # model.ema=true: timm's defaults
        return {}
    if not isinstance(settings, Mapping) or set(settings) - set(SETTINGS):
        unknown = sorted(set(settings) - set(SETTINGS)) if isinstance(settings, Mapping) else settings
        raise ConfigError(f"model.ema: unknown {unknown!r}; use null or {{{': ..., '.join(SETTINGS)}: ...}}")
    decay = settings.get("decay", DEFAULT_DECAY)
    if not 0.0 < float(decay) < 1.0:
        raise ConfigError(f"model.ema.decay={decay}: use a value in (0, 1), e.g. {DEFAULT_DECAY} (timm's default)")
    return dict(settings)


class ModelEma(Callback):
    """Keeps `ModelEmaV3(pl_module.model)` updated after every optimizer step; logs `val_ema/*` and `test_ema/*`.

    `warmup` (timm's `--model-ema-warmup`): the decay ramps up as 1 - (1 + step)^-warmup_power, capped at
    `decay`, so the average forgets the random start quickly in a short fine-tune.
    """

    def __init__(
        self, decay: float = DEFAULT_DECAY, warmup: bool = True, warmup_power: float = 2 / 3, update_after_step: int = 0
    ) -> None:
        self.settings = {
            "decay": float(decay),
            "use_warmup": bool(warmup),
            "warmup_power": float(warmup_power),
            "update_after_step": int(update_after_step),
        }
        self.ema: ModelEmaV3 | None = None
        self.updated_at_step = 0  # the optimizer step the average last took in (checkpointed)

    @property
    def state_key(self) -> str:
        return "ModelEma"

    # ---- building and moving the average -------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Built before any checkpoint is restored (Lightning restores after `setup`), from the current weights."""
        if self.ema is None:
            self.ema = ModelEmaV3(pl_module.model, **self.settings)
            # The model's own metric set (acc, macro-F1), under this callback's prefixes.
            self.metrics = {stage: pl_module.val_metrics.clone(prefix=f"{stage}_ema/") for stage in ("val", "test")}
            self.loss = MeanMetric()
            self.f1_best = MaxMetric()
            # multi-label: the EMA weights get their own tuned thresholds (the model's are the raw weights')
            self.curve = (
                MultilabelPrecisionRecallCurve(len(pl_module.class_names), thresholds=None)
                if pl_module.multilabel
                else None
            )

    def _on_device(self, pl_module: Any) -> None:
        assert self.ema is not None, "ModelEma.setup was not called"
        for part in (self.ema.module, self.loss, self.f1_best, *self.metrics.values(), self.curve):
            if part is not None:
                part.to(pl_module.device)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._on_device(pl_module)

    # ---- training: one update per optimizer step ------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        # global_step counts optimizer steps: with gradient accumulation only every k-th batch moves the weights.
        if trainer.global_step > self.updated_at_step:
            self.ema.update(pl_module.model, step=trainer.global_step)
            self.updated_at_step = trainer.global_step

    # ---- evaluation: the averaged network on the same (already normalised) batch ----------------------------
    def _start(self, pl_module: Any, stage: str) -> None:
        self._on_device(pl_module)
        self.metrics[stage].reset()
        self.loss.reset()
        if self.curve is not None:
            self.curve.reset()

    def _evaluate(self, trainer: Any, pl_module: Any, batch: dict[str, torch.Tensor], stage: str) -> None:
        with trainer.precision_plugin.forward_context():  # the same autocast as the step the model just ran
            logits = self.ema.module(batch["image"])
        self.loss.update(pl_module.compute_loss(logits, batch["target"]))
        preds, target = pl_module.predictions(logits), pl_module.metric_target(batch["target"])
        if self.curve is not None and stage == "val":
            self.curve.update(preds, target)
        if self.curve is not None and stage == "test":  # at the EMA's tuned thresholds, as the model's test is
            preds = at_thresholds(preds, pl_module.thresholds_ema)
        self.metrics[stage].update(preds, target)

    def _log(self, pl_module: Any, stage: str) -> dict[str, torch.Tensor]:
        values = {**self.metrics[stage].compute(), f"{stage}_ema/loss": self.loss.compute()}  # DDP-reduced
        pl_module.log_dict(values, sync_dist=True)  # (sync_dist only averages equal values, as in the model)
        return values

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.world_size > 1:  # each rank's BatchNorm statistics differ a little: validate their mean (timm)
            distribute_bn(self.ema.module, trainer.world_size, reduce=True)
        self._start(pl_module, "val")

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        if not trainer.sanity_checking:  # the 2-batch sanity check would only cost time here
            self._evaluate(trainer, pl_module, batch, "val")

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        values = self._log(pl_module, "val")
        self.f1_best(values[PREFIX + "f1"])
        pl_module.log(PREFIX + "f1_best", self.f1_best.compute(), sync_dist=True)
        if self.curve is not None:  # in the module's state: best.ckpt keeps the best epoch's pair
            thresholds, tuned_f1 = tune_thresholds(*self.curve.compute())
            pl_module.thresholds_ema = thresholds.to(pl_module.device)
            pl_module.log(PREFIX + "f1_tuned", tuned_f1.mean(), sync_dist=True)

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start(pl_module, "test")

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        self._evaluate(trainer, pl_module, batch, "test")

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._log(pl_module, "test")

    # ---- checkpoint: the average's weights beside the network's ---------------------------------------------
    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.ema.module.state_dict()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if CHECKPOINT_KEY in checkpoint:
            self.ema.module.load_state_dict(checkpoint[CHECKPOINT_KEY])
        else:  # a run without EMA: the average starts at its weights (restored before the callbacks)
            self.ema.set(pl_module.model)

    def state_dict(self) -> dict[str, Any]:
        # torchmetrics does not save a MaxMetric's state: its value goes as a number (-inf before the first epoch).
        return {"updated_at_step": self.updated_at_step, "f1_best": float(self.f1_best.max_value)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updated_at_step = int(state_dict["updated_at_step"])
        if state_dict.get("f1_best", float("-inf")) > float("-inf"):
            self.f1_best.update(torch.tensor(state_dict["f1_best"]))
