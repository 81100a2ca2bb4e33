"""`model.freeze_backbone_epochs`: train the new head alone first, then everything (each block at its own lr).

A fine-tune from pretrained weights starts with a random head; its first large gradients, flowing into the
backbone, spoil features worth keeping. Freezing the backbone for the first epochs lets the head settle.

Why not Lightning's `BackboneFinetuning`: it adds the backbone to the optimizer at the unfreeze epoch, so the
warm-up/cosine schedules (one multiplier per parameter group, fixed at the start) and the layer-wise lr groups
would not cover it, and its optimizer surgery would have to be replayed by an exact resume. Here every parameter is
in the optimizer from the start, with its group's lr (`model.layer_decay`: each block its own); while frozen,
the backbone's gradients are dropped before each optimizer step, so the optimizer skips those parameters (no
update, no weight decay, no moment). The gradients are still computed: DDP reduces every registered parameter's
gradient each step, and a frozen phase is short. BatchNorm statistics keep adapting, as Lightning's
`train_bn=True` default does. Whether a step is frozen depends on the epoch alone: resume is exact.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


def check_freeze_epochs(epochs: Any) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"model.freeze_backbone_epochs={epochs!r}: a number of epochs (0 = never frozen)")
    return epochs


def backbone_parameters(network: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Every parameter but the classifier's (timm's `get_classifier()`: the layer re-initialised for your classes)."""
    head = network.get_classifier() if hasattr(network, "get_classifier") else None
    if not isinstance(head, torch.nn.Module) or not any(True for _ in head.parameters()):
        raise ConfigError(
            f"model.freeze_backbone_epochs: {type(network).__name__} has no timm classifier (get_classifier()) "
            "to train alone; set model.freeze_backbone_epochs=0"
        )
    in_head = {id(p) for p in head.parameters()}
    return [p for p in network.parameters() if id(p) not in in_head]


class FreezeBackbone(Callback):
    """Drops the backbone's gradients before every optimizer step of the first `epochs` epochs."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._backbone: list[torch.nn.Parameter] = []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._backbone = backbone_parameters(pl_module.model)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """The lr warm-up should still be running when the backbone joins: fresh optimizer moments at the full lr
        make a large first step, which is what freezing was for."""
        frozen_steps = self.epochs * trainer.num_training_batches // max(1, trainer.accumulate_grad_batches)
        for config in trainer.lr_scheduler_configs:
            warmup = min((getattr(m, "warmup", 0) for m in getattr(config.scheduler, "lr_lambdas", ())), default=0)
            if warmup <= frozen_steps:
                log.warning(
                    f"model.freeze_backbone_epochs={self.epochs}: the lr warm-up ({warmup} steps) is over before the "
                    f"backbone unfreezes (step {frozen_steps}), so it starts at the full lr; raise "
                    "model.scheduler.warmup_steps (or warmup_fraction) past the frozen steps"
                )

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch < self.epochs:
            log.info(f"Epoch {trainer.current_epoch}: the backbone is frozen, the head trains alone")
        elif trainer.current_epoch == self.epochs and self.epochs:
            log.info(f"Epoch {trainer.current_epoch}: the backbone is unfrozen, every block at its own lr")

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: torch.optim.Optimizer) -> None:
        if trainer.current_epoch < self.epochs:
            for param in self._backbone:
                param.grad = None
