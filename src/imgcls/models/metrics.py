"""The metrics a run tracks (torchmetrics), by task kind; and the per-class thresholds of a multi-label model.

Multi-class: `acc` (top-1) and `f1` (macro-F1, the default monitor) over predicted class indices.
Multi-label, over per-class probabilities: `map` (macro average precision: threshold-free, the default monitor),
`f1` / `f1_micro` at 0.5, `acc` = subset accuracy (every label of the image right). `tune_thresholds` then picks
each class's F1-maximising threshold on validation (`val/f1_tuned` is macro-F1 at them), which predict applies.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAveragePrecision,
    MultilabelExactMatch,
    MultilabelF1Score,
)
from torchmetrics.functional.classification import (
    multilabel_average_precision,
    multilabel_exact_match,
    multilabel_f1_score,
)


def classification_metrics(num_classes: int, multilabel: bool, ranking: bool = True) -> MetricCollection:
    """`ranking=False` leaves out mAP (it keeps every prediction of the epoch: fine for validation, not training)."""
    if not multilabel:
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
    metrics = {
        "acc": MultilabelExactMatch(num_classes),
        "f1": MultilabelF1Score(num_classes, average="macro"),
        "f1_micro": MultilabelF1Score(num_classes, average="micro"),
    }
    if ranking:
        metrics["map"] = MultilabelAveragePrecision(num_classes, average="macro")
    return MetricCollection(metrics)


def tune_thresholds(
    precision: list[torch.Tensor], recall: list[torch.Tensor], thresholds: list[torch.Tensor], default: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the threshold (among the validation probabilities) with the highest F1, and that F1.

    The inputs are torchmetrics' per-class precision-recall curve (`MultilabelPrecisionRecallCurve(thresholds=None)`:
    `preds >= t` is positive). A class without positives in validation (torchmetrics warns) keeps `default`."""
    best_t, best_f1 = [], []
    for p, r, t in zip(precision, recall, thresholds):
        p, r = p[: len(t)], r[: len(t)]  # the curve's last point (p=1, r=0) has no threshold
        f1 = torch.where(p + r > 0, 2 * p * r / (p + r).clamp(min=1e-12), torch.zeros_like(p))
        if len(t) == 0 or not bool(f1.max() > 0):  # no true positive at any threshold (or no positives at all)
            best_t.append(torch.tensor(default)), best_f1.append(torch.tensor(0.0))
            continue
        i = int(f1.argmax())
        # Halfway down to the next lower probability: the same positives on validation, but not on one of its
        # probabilities exactly, where float rounding (an exported file, another batch size) would flip them.
        below = t[i - 1] if i > 0 else torch.zeros_like(t[i])
        best_t.append(((t[i] + below) / 2).float()), best_f1.append(f1[i].float())
    return torch.stack(best_t), torch.stack(best_f1)


def multilabel_scores(probs: np.ndarray, target: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Subset accuracy, macro- and micro-F1 of `probs >= thresholds`, and mAP, as the run's metrics compute them."""
    p, t = torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(target).int()
    said = (p >= torch.as_tensor(thresholds, dtype=torch.float32)).int()
    k = p.shape[1]
    return {
        "acc": float(multilabel_exact_match(said, t, k)),
        "f1": float(multilabel_f1_score(said, t, k, average="macro")),
        "f1_micro": float(multilabel_f1_score(said, t, k, average="micro")),
        "map": float(multilabel_average_precision(p, t, k, average="macro")),
    }


def at_thresholds(probs: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Probabilities moved per class so that `thresholds` land on 0.5, order kept: metrics that cut at 0.5 (F1,
    subset accuracy) then score the tuned decisions (p >= threshold) while ranking metrics (AP) are unchanged."""
    t = thresholds.to(probs).clamp(1e-6, 1 - 1e-6)
    return torch.where(probs >= t, 0.5 + 0.5 * (probs - t) / (1 - t), 0.5 * probs / t)
