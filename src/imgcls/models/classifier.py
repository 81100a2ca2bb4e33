"""The LightningModule: any timm classifier, uint8 batches normalised on the device, macro-F1 tracked.

With sub-tasks in the data (`data_spec["tasks"]`, e.g. mask x gender x age) it can also train one head per task
(`model/head=multi`); predictions, probabilities and metrics are always over the combined classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from timm.data import resolve_model_data_config
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassF1Score, MultilabelPrecisionRecallCurve
from torchmetrics.wrappers import MultitaskWrapper

from imgcls import CONFIG_DIR
from imgcls.models.ema import ModelEma, check_ema_settings
from imgcls.models.factory import create_classifier
from imgcls.models.freeze import FreezeBackbone, check_freeze_epochs
from imgcls.models.heads import MultiLabelHead, SingleHead, TaskLayout, build_head
from imgcls.models.losses import CrossEntropy
from imgcls.models.metrics import at_thresholds, classification_metrics, tune_thresholds
from imgcls.models.mixup import build_mixup
from imgcls.models.optim import parameter_groups
from imgcls.models.schedulers import ObservePlateau, warmup_plateau
from imgcls.models.weights import ModelConfigError
from imgcls.utils.config import as_config, factory, fit_channels, to_plain
from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

Factory = Callable[..., Any] | Mapping[str, Any]  # a callable, or its `_target_` config


def _part(value: Any, group: str) -> Callable[..., Any] | None:
    """`factory` for a model part with a config group (configs/model/<group>/): its built-in options are listed
    only when the value is wrong, so building a model does not read the config folder."""
    try:
        return factory(value, f"model.{group}")
    except ConfigError as exc:
        names = sorted(p.stem for p in (CONFIG_DIR / "model" / group).glob("*.yaml"))
        raise ConfigError(
            f"{exc}: pick one with model/{group}=<{'|'.join(names)}>, or give model.{group}._target_"
        ) from None


# Test-time augmentations on an NCHW batch (normalised, or uint8 for an exported file: tasks/predict.py); predict
# averages the class probabilities of all views.
TTA: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"hflip": lambda x: x.flip(-1)}


class Classifier(L.LightningModule):
    """Wraps `timm.create_model(name)`; `data_spec` (from the DataModule) says classes, channels, size, stats.

    Batches arrive as uint8 `{"image", "target", "index"}` and are converted to normalised float on the device
    in `on_after_batch_transfer`: the CPU workers never do float work and the host->device copy is 4x smaller.
    The head (`model/head`, models/heads.py) turns logits into class probabilities and the loss.
    """

    def __init__(
        self,
        name: str,
        data_spec: Mapping[str, Any],
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_rate: float = 0.0,
        model_kwargs: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] = False,  # noqa: A002 (the config key's name)
        optimizer: Factory | None = None,
        scheduler: Factory | None = None,
        layer_decay: float | None = None,
        freeze_backbone_epochs: int = 0,
        ema: Mapping[str, Any] | None = None,
        mixup: Mapping[str, Any] | None = None,
        head: Factory = SingleHead,
        loss: Factory = CrossEntropy,
        class_weights: Factory | None = None,
    ) -> None:
        """`optimizer`, `scheduler`, `head`, `loss` and `class_weights` are `_target_` configs (configs/model/) or
        the callables themselves: `optimizer(params)`, `scheduler(optimizer, total_steps)`,
        `head(data_spec, loss, label_smoothing)`, `loss(label_smoothing)`, `class_weights(counts) -> weights`."""
        super().__init__()
        # The one record of this model: every argument, factories as their `_target_` configs. A checkpoint's
        # hyper-parameters rebuild it exactly (models/checkpoint.py), with nothing typed a second time.
        self.save_hyperparameters({k: as_config(v) for k, v in locals().items() if k not in ("self", "__class__")})
        data_spec, model_kwargs = to_plain(data_spec), to_plain(model_kwargs) or {}
        self.class_names = list(data_spec["class_names"])
        num_classes = len(self.class_names)
        self.layout = TaskLayout.from_spec(data_spec)
        loss_factory = _part(loss, "loss")
        self.head = build_head(_part(head, "head"), data_spec, loss_factory, label_smoothing)
        self.multilabel = isinstance(self.head, MultiLabelHead)
        self.class_weights = _part(class_weights, "class_weights")
        if self.multilabel and self.class_weights is not None:
            raise ModelConfigError(
                "model.class_weights weighs the classes of one softmax: for multi-label data drop it and use "
                "model.loss.pos_weight=balanced (each class's positives weighed by its negatives)"
            )
        channels = int(data_spec.get("channels", 3))
        self.model = create_classifier(
            name,
            self.head.num_outputs,
            channels,
            pretrained,
            pretrained_path,
            drop_rate,
            model_kwargs,
            image_size=data_spec.get("image_size"),
        )
        timm_cfg = resolve_model_data_config(self.model)
        mean = fit_channels(list(data_spec.get("mean") or timm_cfg["mean"]), channels)
        std = fit_channels(list(data_spec.get("std") or timm_cfg["std"]), channels)
        # Stored in 0..255 units so normalisation is one fused (x - m) / s on the uint8-turned-float batch.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.channels_last = channels_last
        if not isinstance(compile, (bool, Mapping)):
            raise ConfigError(f"model.compile={compile!r}: use true, false or torch.compile's arguments: {{mode: ...}}")
        self.compile_settings = to_plain(compile)
        self.optimizer_factory = factory(optimizer, "model.optimizer")
        self.layer_decay = layer_decay
        self.freeze_epochs = check_freeze_epochs(freeze_backbone_epochs)
        self.ema_settings = check_ema_settings(to_plain(ema))
        self.scheduler_factory = factory(scheduler, "model.scheduler")
        # Batch-level mixup/cutmix (augment.mixup): mixes on the device, targets become soft (smoothing included).
        self.mixup = build_mixup(to_plain(mixup), num_classes, label_smoothing, self.multilabel)
        self._tta: list[str] = []
        # Predict divides the logits by it: 1 = as trained; a calibrated checkpoint's comes from deploy/calibrate.py.
        self.temperature = 1.0
        # Predict returns log-probabilities instead (eval.py: a calibration fit needs the ones that underflow to 0).
        self.log_space = False

        metrics = classification_metrics(num_classes, self.multilabel)
        self.train_metrics = classification_metrics(num_classes, self.multilabel, ranking=False).clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        if self.multilabel:
            # Each class's decision threshold, tuned on every validation (max F1; models/metrics.py): in the
            # checkpoint's state, so predict answers with the best epoch's thresholds.
            self.register_buffer("thresholds", torch.full((num_classes,), 0.5))
            # ...and the EMA weights' own, tuned by models/ema.py on theirs (load_classifier picks the pair).
            self.register_buffer("thresholds_ema", torch.full((num_classes,), 0.5))
            self.val_curve = MultilabelPrecisionRecallCurve(num_classes, thresholds=None)
            self.val_map_best = MaxMetric()
        # Per-sub-task macro-F1 (val/f1_mask, ...): shows which part (age, usually) limits the combined F1.
        task_f1 = (
            MultitaskWrapper(
                {n: MulticlassF1Score(s, average="macro") for n, s in zip(self.layout.names, self.layout.sizes)}
            )
            if self.layout
            else None
        )
        self.val_task_f1 = task_f1.clone(prefix="val/f1_") if task_f1 else None
        self.test_task_f1 = task_f1.clone(prefix="test/f1_") if task_f1 else None
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_f1_best, self.val_acc_best = MaxMetric(), MaxMetric()

    def setup(self, stage: str) -> None:
        """`model/class_weights=balanced`: weights from the training split's label counts (per task for the multi
        head), given to each of the head's losses."""
        if stage != "predict":
            self._fit_loss_counts()
        if self.class_weights is None or stage == "predict":
            return
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        counts_fn = getattr(datamodule, "train_class_counts", None)
        if counts_fn is None:
            log.warning(
                "model.class_weights needs a DataModule with train_class_counts(); training without class weights"
            )
            return
        counts = torch.as_tensor(counts_fn(), dtype=torch.float64).reshape(1, -1)
        if counts.shape[1] != len(self.class_names):
            raise ValueError(f"train_class_counts() gave {counts.shape[1]} counts for {len(self.class_names)} classes")
        for criterion, block in zip(self.head.criteria, self.head.blocks(counts)):
            criterion.weight = torch.as_tensor(self.class_weights(block[0]), dtype=torch.float32).to(self.device)
        log.info(
            "Class weights: " + "; ".join(" ".join(f"{w:.2f}" for w in c.weight.tolist()) for c in self.head.criteria)
        )

    def _fit_loss_counts(self) -> None:
        """A loss that wants the training split's class counts (`model.loss.pos_weight=balanced`) gets them."""
        wanting = [c for c in self.head.criteria if getattr(c, "balanced", False)]
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if not wanting or datamodule is None:
            return
        positives = torch.as_tensor(datamodule.train_class_counts())
        for criterion in wanting:
            criterion.fit_counts(positives.to(self.device), datamodule.train_size())
        log.info("pos_weight (negatives/positives per class): " + " ".join(f"{w:.2f}" for w in wanting[0].pos_weight))

    @property
    def tta(self) -> list[str]:
        """Test-time augmentations used by `predict_step` (set by the predict task), e.g. ["hflip"]."""
        return self._tta

    @tta.setter
    def tta(self, names: list[str] | None) -> None:
        unknown = [n for n in names or [] if n not in TTA]
        if unknown:
            raise ValueError(f"unknown TTA {unknown}; supported: {', '.join(TTA)}")
        self._tta = list(names or [])

    def configure_callbacks(self) -> list[L.Callback]:
        """`model.ema`: the weight average is a callback of this model's (models/ema.py), not code in its steps;
        so are feeding the metric to `model/scheduler=plateau` and `model.freeze_backbone_epochs`. Added once:
        `trainer.test` after `fit` keeps the ones that trained (Lightning would swap in new ones)."""
        have = {type(c) for c in self.trainer.callbacks}
        wanted = []
        if self.ema_settings is not None and ModelEma not in have:
            wanted.append(ModelEma(**self.ema_settings))
        if getattr(self.scheduler_factory, "func", None) is warmup_plateau and ObservePlateau not in have:
            wanted.append(ObservePlateau())
        if self.freeze_epochs and FreezeBackbone not in have:
            wanted.append(FreezeBackbone(self.freeze_epochs))
        return wanted

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
        return batch

    def configure_model(self) -> None:
        """`model.compile`: torch.compile the network (not this module) once per fit/validate/test set-up (lazy:
        the first step compiles, on the device). The compiled wrapper is kept outside the module tree, so
        checkpoints hold `model.*` keys, never `_orig_mod.`."""
        if self.compile_settings is not False and "_compiled" not in self.__dict__:
            settings = dict(self.compile_settings) if isinstance(self.compile_settings, Mapping) else {}
            log.info(f"Compiling the network with torch.compile({settings or ''})")
            self.__dict__["_compiled"] = torch.compile(self.model, **settings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.__dict__.get("_compiled", self.model)(x)

    # ---- heads: loss and combined-class probabilities -------------------------------------------------------
    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, num_classes) log-probabilities of the combined classes, whatever the head."""
        return self.head.log_probs(logits)

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Class indices (N,) or soft targets (N, C) (mixup), through the head's loss(es)."""
        return self.head.compute_loss(logits, target)

    # ---- steps -------------------------------------------------------------------------------------------
    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics take: class indices, or for multi-label data each class's probability."""
        log_probs = self.log_probs(logits.detach())
        return log_probs.exp() if self.multilabel else log_probs.argmax(dim=1)

    def metric_target(self, target: torch.Tensor) -> torch.Tensor:
        return target.int() if self.multilabel else target

    def _shared_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        # Mixed images (training with augment.mixup) come with soft targets.
        loss = self.compute_loss(logits, batch.get("soft_target", batch["target"]))
        return loss, self.predictions(logits), self.metric_target(batch["target"])

    def _update_task_f1(self, metric: MultitaskWrapper | None, preds: torch.Tensor, target: torch.Tensor) -> None:
        if metric is not None:
            names, decompose = self.layout.names, self.layout.decompose
            metric.update(dict(zip(names, decompose(preds))), dict(zip(names, decompose(target))))

    def mix(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mixup/cutmix (augment.mixup) with soft targets. Called in training_step, not on_after_batch_transfer:
        Lightning moves the batch before on_train_batch_start, where StepSeeds reseeds, so only here does the
        draw depend on the step alone (exact resume)."""
        if self.mixup is not None and batch["image"].shape[0] % 2 == 0:  # timm mixes pairs
            batch["image"], batch["soft_target"] = self.mixup(batch["image"], batch["target"])
        return batch

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds, targets = self._shared_step(self.mix(batch))
        self.train_loss(loss)
        self.train_metrics(preds, targets)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()
        if self.val_task_f1 is not None:
            self.val_task_f1.reset()
        if self.multilabel:
            self.val_curve.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["image"])
        loss = self.compute_loss(logits, batch["target"])
        if self.multilabel:
            probs, target = self.predictions(logits), self.metric_target(batch["target"])
            self.val_loss(loss)
            self.val_metrics.update(probs, target)
            self.val_curve.update(probs, target)
            self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
            return {"probs": probs}
        conf, preds = self.log_probs(logits.detach()).exp().max(dim=1)
        self.val_loss(loss)
        self.val_metrics.update(preds, batch["target"])
        self._update_task_f1(self.val_task_f1, preds, batch["target"])
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        return {"preds": preds, "conf": conf}  # for callbacks (confusion matrix, worst mistakes)

    def on_validation_epoch_end(self) -> None:
        # compute() already reduced the metric states over all DDP ranks, so every rank holds the same values;
        # sync_dist=True only averages equal numbers (and tells Lightning they are global, without a warning).
        values = self.val_metrics.compute()
        self.log_dict(values, prog_bar=True, sync_dist=True)
        if self.val_task_f1 is not None:
            self.log_dict(self.val_task_f1.compute(), sync_dist=True)
        if self.trainer.sanity_checking:  # the sanity check sees 2 batches; it must not set a "best"
            return
        self.val_f1_best(values["val/f1"])
        self.val_acc_best(values["val/acc"])
        best = {"val/f1_best": self.val_f1_best.compute(), "val/acc_best": self.val_acc_best.compute()}
        if self.multilabel:
            self.thresholds, tuned_f1 = (t.to(self.device) for t in tune_thresholds(*self.val_curve.compute()))
            self.val_map_best(values["val/map"])
            best |= {"val/map_best": self.val_map_best.compute(), "val/f1_tuned": tuned_f1.mean()}
        self.log_dict(best, sync_dist=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, preds, targets = self._shared_step(batch)
        if self.multilabel:  # scored at the thresholds tuned on validation, as eval and predict score them
            preds = at_thresholds(preds, self.thresholds)
        self.test_loss(loss)
        self.test_metrics(preds, targets)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)
        if self.test_task_f1 is not None:  # Lightning computes and resets logged metric objects per epoch
            self._update_task_f1(self.test_task_f1, preds, targets)
            self.log_dict(dict(self.test_task_f1.items()), on_step=False, on_epoch=True)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Combined-class probabilities, averaged over the image and its `tta` views."""
        views = [batch["image"]] + [TTA[name](batch["image"]) for name in self.tta]
        log_probs = torch.stack([self.log_probs(self(view) / self.temperature) for view in views])
        if self.log_space:  # log of the views' mean probability
            return {"index": batch["index"], "probs": log_probs.logsumexp(dim=0) - math.log(len(views))}
        return {"index": batch["index"], "probs": log_probs.exp().mean(dim=0)}

    # ---- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Optimizer/scheduler come from `_partial_` configs, over timm's parameter groups (models/optim.py)."""
        if self.optimizer_factory is None:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)
        settings = getattr(self.optimizer_factory, "keywords", {})
        groups = parameter_groups(self.model, settings.get("lr"), settings.get("weight_decay", 0.0), self.layer_decay)
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
