"""Pictures people look at: augmented samples, the best epoch's confusion matrix, per-class scores, worst errors
(for multi-label data: per-class AP, label co-occurrence, confident false positives and misses; multilabel_pictures).

Saved as PNG/CSV in the run dir and, with `logger=wandb`, logged as W&B images and tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from imgcls.callbacks.multilabel_pictures import (
    ap_figure,
    cooccurrence_figure,
    label_text,
    mistakes_figure,
    per_class_table,
)
from imgcls.distributed.gather import gather_uneven
from imgcls.utils.io import atomic_write_text
from imgcls.utils.logging import get_logger
from imgcls.utils.plots import confusion_figure, image_grid, save_figure

log = get_logger(__name__)


def _wandb(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def _caption(target: Any, names: list[str]) -> str:
    """A class index's name, or a multi-hot row's names (`3|7`, `none`)."""
    target = np.asarray(target)
    return label_text(target, names) if target.ndim else names[int(target)]


def _hwc(image: Any) -> np.ndarray:
    """A dataset item's image (HWC numpy) or a CHW tensor -> HWC uint8 numpy."""
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return arr.transpose(1, 2, 0) if isinstance(image, torch.Tensor) else arr


class RunPictures(Callback):
    """`augmented_samples.png` once at the start; at the end, from the best validation epoch (by `monitor`):
    `confusion_matrix.png`, `per_class.csv` (precision/recall/F1/support) and `worst_misclassified.png`."""

    def __init__(
        self, output_dir: str, monitor: str = "val/f1", mode: str = "max", samples: int = 32, worst: int = 24
    ) -> None:
        self.output_dir = Path(output_dir)
        self.monitor, self.samples, self.worst = monitor, samples, worst
        self.sign = {"max": 1.0, "min": -1.0}[mode]  # scores are compared as sign * value: higher is better
        self._outputs: list[dict[str, torch.Tensor]] = []
        self._best_score = -float("inf")
        self._best: dict[str, Any] | None = None

    # ---- augmented samples -----------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples = getattr(trainer.datamodule, "augmented_samples", None) if trainer.datamodule else None
        if not trainer.is_global_zero or samples is None:
            return
        items = samples(self.samples)  # as the model gets them, on the host's or the device's pipeline
        if not items:
            return
        names = pl_module.class_names
        fig = image_grid(
            [_hwc(it["image"]) for it in items],
            [_caption(it["target"], names) for it in items],
            title=f"Augmented training samples ({trainer.datamodule.augment.get('name', '?')})",
        )
        self._publish(trainer, save_figure(fig, self.output_dir / "augmented_samples.png"), "augmented_samples")

    # ---- validation collection -------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._outputs = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(outputs, dict) and "probs" in outputs:  # multi-label: each class's probability
            self._outputs.append({"probs": outputs["probs"], "target": batch["target"], "index": batch["index"]})
        elif isinstance(outputs, dict) and "preds" in outputs:
            self._outputs.append(
                {"preds": outputs["preds"], "conf": outputs["conf"], "target": batch["target"], "index": batch["index"]}
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the module has logged this epoch's metrics, so `monitor` is current."""
        if trainer.sanity_checking or not self._outputs:
            return
        gathered = gather_uneven(
            trainer, pl_module, {k: torch.cat([o[k] for o in self._outputs]) for k in self._outputs[0]}
        )
        if "probs" in gathered:  # the thresholds predict would use with this epoch's checkpoint
            gathered["thresholds"] = pl_module.thresholds.detach().cpu()
        score = trainer.callback_metrics.get(self.monitor)
        score = self.sign * float(score) if score is not None else -float("inf")
        if trainer.is_global_zero and score > self._best_score:
            # Each image once, whatever the sampler did (a padding sampler repeats some across ranks).
            _, first = np.unique(gathered["index"].numpy(), return_index=True)
            self._best_score = score
            self._best = {
                "epoch": trainer.current_epoch,
                **{k: v.numpy() if k == "thresholds" else v.numpy()[first] for k, v in gathered.items()},
            }

    # ---- resume: the best epoch so far travels in the checkpoint (tensors, so weights_only loading works) ---
    def state_dict(self) -> dict[str, Any]:
        if self._best is None:
            return {}
        return {
            "best_score": self._best_score,
            "epoch": int(self._best["epoch"]),
            **{k: torch.as_tensor(v) for k, v in self._best.items() if k != "epoch"},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            state = dict(state_dict)
            self._best_score = float(state.pop("best_score"))
            self._best = {"epoch": int(state.pop("epoch")), **{k: v.numpy() for k, v in state.items()}}

    # ---- reports at the end ------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self._best is None:
            return
        best, names = self._best, pl_module.class_names
        if "probs" in best:
            self._multilabel_reports(trainer, best, names)
            return
        k = len(names)
        preds, target = torch.as_tensor(best["preds"]), torch.as_tensor(best["target"])
        matrix = multiclass_confusion_matrix(preds, target, k).numpy()
        score = self.sign * self._best_score
        title = f"Validation confusion matrix, best epoch {best['epoch']} ({self.monitor}={score:.4f})"
        self._publish(
            trainer,
            save_figure(confusion_figure(matrix, names, title), self.output_dir / "confusion_matrix.png"),
            "confusion_matrix",
        )

        table = pd.DataFrame(
            {
                "class": names,
                "precision": multiclass_precision(preds, target, k, average=None).numpy(),
                "recall": multiclass_recall(preds, target, k, average=None).numpy(),
                "f1": multiclass_f1_score(preds, target, k, average=None).numpy(),
                "support": matrix.sum(axis=1),
            }
        ).round(4)
        atomic_write_text(self.output_dir / "per_class.csv", table.to_csv(index=False))
        if (wb := _wandb(trainer)) is not None:
            wb.log_table("val/per_class", dataframe=table)

        self._worst_grid(trainer, best, names)

    def _multilabel_reports(self, trainer: L.Trainer, best: dict[str, Any], names: list[str]) -> None:
        probs, target, thresholds = best["probs"], best["target"], best["thresholds"]
        epoch = f"best epoch {best['epoch']} ({self.monitor}={self.sign * self._best_score:.4f})"
        table = per_class_table(probs, target, thresholds, names)
        atomic_write_text(self.output_dir / "per_class.csv", table.to_csv(index=False))
        if (wb := _wandb(trainer)) is not None:
            wb.log_table("val/per_class", dataframe=table)
        ap = ap_figure(table, f"Validation average precision per class, {epoch}")
        self._publish(trainer, save_figure(ap, self.output_dir / "per_class_ap.png"), "per_class_ap")
        both = cooccurrence_figure(target, names, "Validation label co-occurrence")
        self._publish(trainer, save_figure(both, self.output_dir / "label_cooccurrence.png"), "label_cooccurrence")
        dataset = getattr(trainer.datamodule, "val_set", None) if trainer.datamodule else None
        if dataset is not None:
            fig = mistakes_figure(
                probs,
                target,
                thresholds,
                names,
                lambda row: _hwc(dataset[int(best["index"][row])]["image"]),
                self.worst,
                f"Most confident validation mistakes, epoch {best['epoch']}",
            )
            self._publish(trainer, save_figure(fig, self.output_dir / "worst_misclassified.png"), "worst_misclassified")

    def _worst_grid(self, trainer: L.Trainer, best: dict[str, Any], names: list[str]) -> None:
        wrong = np.flatnonzero(best["preds"] != best["target"])
        wrong = wrong[np.argsort(-best["conf"][wrong])][: self.worst]  # most confident mistakes first
        dataset = getattr(trainer.datamodule, "val_set", None) if trainer.datamodule else None
        if dataset is None:
            return
        images = [_hwc(dataset[int(best["index"][i])]["image"]) for i in wrong]
        captions = [
            f"true {names[int(best['target'][i])]}\npred {names[int(best['preds'][i])]} ({best['conf'][i]:.2f})"
            for i in wrong
        ]
        title = (
            f"Most confident validation mistakes, epoch {best['epoch']} ({len(wrong)} shown)"
            if len(wrong)
            else "No validation mistakes"
        )
        fig = image_grid(images, captions, ncols=6, title=title, colors=["red"] * len(images))
        self._publish(trainer, save_figure(fig, self.output_dir / "worst_misclassified.png"), "worst_misclassified")

    @staticmethod
    def _publish(trainer: L.Trainer, path: Path, key: str) -> None:
        log.info(f"Saved {path}")
        if (wb := _wandb(trainer)) is not None:
            wb.log_image(key=f"pictures/{key}", images=[str(path)], step=trainer.global_step)
