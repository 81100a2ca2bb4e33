"""The LightningModule: any timm classifier, uint8 batches normalised on the device, macro-F1 tracked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from timm.data import resolve_model_data_config
from timm.optim import param_groups_weight_decay
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from imgcls.models.factory import create_classifier
from imgcls.models.mixup import build_mixup
from imgcls.utils.config import to_plain


def _fit_channels(values: list[float], channels: int) -> list[float]:
    """ImageNet stats are per RGB channel; a grayscale model uses their mean, and one value broadcasts to 3."""
    if len(values) == channels:
        return values
    if channels == 1:
        return [sum(values) / len(values)]
    return values * channels if len(values) == 1 else values[:channels]


class Classifier(L.LightningModule):
    """Wraps `timm.create_model(name)`; `data_spec` (from the DataModule) says classes, channels, size, stats.

    Batches arrive as uint8 `{"image", "target", "index"}` and are converted to normalised float on the device
    in `on_after_batch_transfer`: the CPU workers never do float work and the host->device copy is 4x smaller.
    """

    def __init__(self, name: str, data_spec: Mapping[str, Any], pretrained: bool = False,
                 pretrained_path: str | None = None, drop_rate: float = 0.0,
                 model_kwargs: Mapping[str, Any] | None = None, label_smoothing: float = 0.0,
                 channels_last: bool = False,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, mixup: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        data_spec, model_kwargs = to_plain(data_spec), to_plain(model_kwargs) or {}
        # Everything predict needs to rebuild model + pre-processing goes into the checkpoint; callables don't.
        self.save_hyperparameters({"name": name, "data_spec": data_spec, "drop_rate": drop_rate,
                                   "model_kwargs": model_kwargs, "label_smoothing": label_smoothing,
                                   "channels_last": channels_last, "pretrained_path": pretrained_path})
        self.class_names = list(data_spec["class_names"])
        num_classes = len(self.class_names)
        channels = int(data_spec.get("channels", 3))
        self.model = create_classifier(name, num_classes, channels, pretrained, pretrained_path, drop_rate,
                                       model_kwargs)
        timm_cfg = resolve_model_data_config(self.model)
        mean = _fit_channels(list(data_spec.get("mean") or timm_cfg["mean"]), channels)
        std = _fit_channels(list(data_spec.get("std") or timm_cfg["std"]), channels)
        # Stored in 0..255 units so normalisation is one fused (x - m) / s on the uint8-turned-float batch.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.channels_last = channels_last
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # Batch-level mixup/cutmix (augment.mixup): mixes on the device, targets become soft (smoothing included).
        self.mixup = build_mixup(to_plain(mixup), num_classes, label_smoothing)
        self.soft_criterion = SoftTargetCrossEntropy()

        metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro"),
                                    "f1": MulticlassF1Score(num_classes, average="macro")})
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_f1_best, self.val_acc_best = MaxMetric(), MaxMetric()

    # ---- device-side pre-processing ----------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> normalised float NCHW; the one place pixel statistics are applied."""
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255.0
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, torch.Tensor]:
        for key in ("target", "index"):  # numpy from the loader (see collate_images) -> tensors on the device
            if key in batch and not isinstance(batch[key], torch.Tensor):
                batch[key] = torch.as_tensor(batch[key], device=self.device)
        batch["image"] = self.normalize(batch["image"])
        training = self._trainer is not None and self.trainer.training
        if training and self.mixup is not None and batch["image"].shape[0] % 2 == 0:  # timm mixes pairs
            batch["image"], batch["soft_target"] = self.mixup(batch["image"], batch["target"])
        return batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ---- steps -------------------------------------------------------------------------------------------
    def _shared_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        if "soft_target" in batch:  # mixed images (training with augment.mixup): the loss takes soft targets
            loss = self.soft_criterion(logits, batch["soft_target"])
        else:
            loss = self.criterion(logits, batch["target"])
        return loss, logits.argmax(dim=1), batch["target"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds, targets = self._shared_step(batch)
        self.train_loss(loss)
        self.train_metrics(preds, targets)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["image"])
        loss = self.criterion(logits, batch["target"])
        conf, preds = logits.detach().float().softmax(dim=1).max(dim=1)
        self.val_loss(loss)
        self.val_metrics.update(preds, batch["target"])
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        return {"preds": preds, "conf": conf}  # for callbacks (confusion matrix, worst mistakes)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict(values, prog_bar=True)
        if self.trainer.sanity_checking:  # the sanity check sees 2 batches; it must not set a "best"
            return
        self.val_f1_best(values["val/f1"])
        self.val_acc_best(values["val/acc"])
        self.log_dict({"val/f1_best": self.val_f1_best.compute(), "val/acc_best": self.val_acc_best.compute()})

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, preds, targets = self._shared_step(batch)
        self.test_loss(loss)
        self.test_metrics(preds, targets)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        return {"index": batch["index"], "probs": self(batch["image"]).float().softmax(dim=1)}

    # ---- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Optimizer/scheduler come from `_partial_` configs; no weight decay on norms and biases (timm's rule)."""
        if self.optimizer_factory is None:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)
        weight_decay = getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
        optimizer = self.optimizer_factory(param_groups_weight_decay(self.model, weight_decay))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
