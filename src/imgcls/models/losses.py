"""Classification losses: cross-entropy or focal, with class weights, label smoothing and soft (mixup) targets.

Both follow `F.cross_entropy`'s conventions exactly (weighted mean over hard targets, plain mean over soft ones),
so focal with gamma=0 *is* cross-entropy and switching `model.loss` changes nothing but the focusing term.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "focal")
CLASS_WEIGHTS = ("none", "balanced")


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


class ClassificationLoss(nn.Module):
    """`model.loss` for one set of logits; `weight` (per-class, or None) is filled in by the module's setup.

    Label smoothing applies to index targets; soft targets are used as given (timm's Mixup has smoothed them).
    """

    def __init__(self, kind: str = "ce", gamma: float = 2.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"model.loss='{kind}' is not supported; choose one of {', '.join(LOSSES)}")
        self.kind, self.gamma, self.label_smoothing = kind, float(gamma), float(label_smoothing)
        # Not persistent: recomputed from the training data each run, and old checkpoints have no such key.
        self.register_buffer("weight", None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        smoothing = self.label_smoothing if target.dim() == 1 else 0.0
        if self.kind == "focal":
            return focal_loss(logits, target, self.gamma, self.weight, smoothing)
        return F.cross_entropy(logits.float(), target, weight=self.weight, label_smoothing=smoothing)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, gamma={self.gamma}, label_smoothing={self.label_smoothing}"
