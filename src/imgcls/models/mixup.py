"""Batch-level augmentation (mixup / cutmix) with timm's `Mixup`, run on the device after the transfer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.data import Mixup


def build_mixup(cfg: Mapping[str, Any] | None, num_classes: int, label_smoothing: float = 0.0) -> Mixup | None:
    """`augment.mixup` -> timm Mixup, or None when off (null, or both alphas 0)."""
    if not cfg or (float(cfg.get("mixup_alpha", 0)) <= 0 and float(cfg.get("cutmix_alpha", 0)) <= 0):
        return None
    return Mixup(
        mixup_alpha=float(cfg.get("mixup_alpha", 0.0)),
        cutmix_alpha=float(cfg.get("cutmix_alpha", 0.0)),
        prob=float(cfg.get("prob", 1.0)),
        switch_prob=float(cfg.get("switch_prob", 0.5)),
        mode=str(cfg.get("mode", "batch")),
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )
