"""Batch-level augmentation (mixup / cutmix) with timm's `Mixup`, run on the device after the transfer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from timm.data import Mixup


class MultiHotMixup:
    """timm's Mixup for multi-hot targets (N, C), which it cannot take (it one-hot encodes class indices).

    The images are mixed by timm itself, given the row numbers as "classes": the soft targets it returns are then
    the mixing matrix M (row i = lam_i e_i + (1 - lam_i) e_partner), whatever its mode (batch, pair, elem) or
    cutmix's area-corrected lam, and the mixed multi-hot targets are M @ Y. Label smoothing is the loss's."""

    def __init__(self, mixup: Mixup) -> None:
        self.mixup = mixup

    def __call__(self, images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = images.shape[0]
        self.mixup.num_classes = n
        images, weights = self.mixup(images, torch.arange(n, device=images.device))
        return images, weights.to(target.dtype) @ target


def build_mixup(
    cfg: Mapping[str, Any] | None, num_classes: int, label_smoothing: float = 0.0, multilabel: bool = False
) -> Mixup | MultiHotMixup | None:
    """`augment.mixup` -> timm Mixup, or None when off (null, or both alphas 0)."""
    if not cfg or (float(cfg.get("mixup_alpha", 0)) <= 0 and float(cfg.get("cutmix_alpha", 0)) <= 0):
        return None
    if multilabel:
        return MultiHotMixup(build_mixup(cfg, num_classes, 0.0))
    return Mixup(
        mixup_alpha=float(cfg.get("mixup_alpha", 0.0)),
        cutmix_alpha=float(cfg.get("cutmix_alpha", 0.0)),
        prob=float(cfg.get("prob", 1.0)),
        switch_prob=float(cfg.get("switch_prob", 0.5)),
        mode=str(cfg.get("mode", "batch")),
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )
