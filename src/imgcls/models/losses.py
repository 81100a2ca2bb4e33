"""Classification losses: cross-entropy or focal, with class weights, label smoothing and soft (mixup) targets;
for multi-label data binary cross-entropy or the asymmetric loss.

Chosen by `_target_` (configs/model/loss/); any nn.Module factory taking `label_smoothing` works.

Both follow `F.cross_entropy`'s conventions exactly (weighted mean over hard targets, plain mean over soft ones),
so focal with gamma=0 *is* cross-entropy and switching `model.loss` changes nothing but the focusing term.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Multi-class focal loss: sum_c w_c q_c (1 - p_c)^gamma (-log p_c), averaged like `F.cross_entropy`.

    `target` is class indices (N,) or a distribution (N, C); q is it as a (smoothed) distribution, so an easy
    example (p_t near 1) contributes little. Mean: divided by sum_i w[y_i] for indices, by N for distributions.
    """
    log_p = logits.float().log_softmax(dim=1)
    num_classes = logits.shape[1]
    hard = target.dim() == 1
    q = F.one_hot(target, num_classes).float() if hard else target.float()
    if label_smoothing > 0:
        q = q * (1.0 - label_smoothing) + label_smoothing / num_classes
    w = torch.ones(num_classes, device=logits.device) if weight is None else weight.to(logits.device).float()
    focus = (-torch.expm1(log_p)).pow(gamma) if gamma else 1.0  # 1 - p, accurate as p -> 1
    per_sample = -(q * w * focus * log_p).sum(dim=1)
    return per_sample.sum() / (w[target].sum() if hard else target.shape[0])


def balanced_weights(counts: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """n_samples / (n_classes * count_c) (scikit-learn's "balanced"): every class weighs as much in total.

    A class absent from training is counted as 1 (weights stay finite; it only matters through label smoothing).
    """
    counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    return (counts.sum() / (len(counts) * counts.clamp(min=1))).float()


class CrossEntropy(nn.Module):
    """Cross-entropy over index targets (N,) or soft targets (N, C) (mixup); `model/loss=ce`.

    Every loss here is built by the head as `loss(label_smoothing=...)` (once per block of logits) and gets its
    per-class `weight` (or None) from the module's setup (`model/class_weights`). Label smoothing applies to
    index targets; soft targets are used as given (timm's Mixup has smoothed them).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        # Not persistent: recomputed from the training data each run, and old checkpoints have no such key.
        self.register_buffer("weight", None, persistent=False)

    def smoothing(self, target: torch.Tensor) -> float:
        return self.label_smoothing if target.dim() == 1 else 0.0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight, label_smoothing=self.smoothing(target))

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


class FocalLoss(CrossEntropy):
    """Focal loss (`model/loss=focal`): down-weights easy examples by (1 - p)^gamma; gamma=0 is cross-entropy."""

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.weight, self.smoothing(target))

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, label_smoothing={self.label_smoothing}"


class BinaryCrossEntropy(nn.Module):
    """Multi-label loss (`model/loss=bce`): one sigmoid cross-entropy per class, averaged over images and classes.

    `label_smoothing` pulls every 0/1 target towards 1/2 (y(1-e) + e/2), mixed (mixup) targets included.
    `pos_weight`: null, per-class weights, or `balanced` = negatives/positives of each class in the training split
    (set by the module's setup through `fit_counts`), so a rare class's positives weigh as much as its negatives.
    """

    multilabel = True

    def __init__(self, label_smoothing: float = 0.0, pos_weight: str | Sequence[float] | None = None) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        if isinstance(pos_weight, str) and pos_weight != "balanced":
            raise ValueError(f"model.loss.pos_weight={pos_weight!r}: use balanced, a list of per-class weights or null")
        self.balanced = pos_weight == "balanced"
        given = None if pos_weight is None or self.balanced else torch.as_tensor(list(pos_weight), dtype=torch.float32)
        # Not persistent: recomputed from the training data each run (old checkpoints have no such key).
        self.register_buffer("pos_weight", given, persistent=False)

    def fit_counts(self, positives: torch.Tensor, total: int) -> None:
        """`pos_weight=balanced`: negatives/positives per class (a class without positives gets 1)."""
        if self.balanced:
            positives = positives.float()
            self.pos_weight = torch.where(positives > 0, (total - positives) / positives.clamp(min=1), 1.0)

    def smooth(self, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        return target * (1.0 - self.label_smoothing) + self.label_smoothing / 2 if self.label_smoothing else target

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), self.smooth(target), pos_weight=self.pos_weight)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, pos_weight={'balanced' if self.balanced else None}"


class AsymmetricLoss(BinaryCrossEntropy):
    """Asymmetric loss (`model/loss=asl`, Ridnik et al. 2021; timm's `AsymmetricLossMultiLabel`): focusing with
    a stronger `gamma_neg` and a probability margin `clip` on the negatives, which dominate multi-label data.
    timm sums over images and classes; divided here by their number, so its scale (and a good lr) is BCE's."""

    def __init__(
        self, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(label_smoothing)
        from timm.loss import AsymmetricLossMultiLabel

        self.asl = AsymmetricLossMultiLabel(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.asl(logits.float(), self.smooth(target)) / logits.numel()

    def extra_repr(self) -> str:
        return f"gamma_neg={self.asl.gamma_neg}, gamma_pos={self.asl.gamma_pos}, clip={self.asl.clip}"
