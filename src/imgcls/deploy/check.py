"""Does the exported file compute what the checkpoint computes? Side by side on the same uint8 images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Agreement:
    """One exported file against the PyTorch model on `n` images."""

    name: str
    n: int
    max_abs_diff: float  # max |Δprob| over every image and class
    decisions_agree: float  # the fraction of images given the same answer: top-1 class, or multi-label label set
    accuracy: float | None = None  # against the images' labels, when they have some

    def row(self) -> list[str]:
        acc = "-" if self.accuracy is None else f"{self.accuracy:.4f}"
        return [self.name, str(self.n), f"{self.max_abs_diff:.2e}", f"{self.decisions_agree:.4f}", acc]


def decisions(probs: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """What a deployment answers: the top-1 class per image, or with `thresholds` (multi-label) each class's
    yes/no."""
    return probs.argmax(1)[:, None] if thresholds is None else probs >= thresholds[None, :]


def compare(
    name: str,
    reference: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray | None,
    thresholds: np.ndarray | None = None,
) -> Agreement:
    accuracy = None if labels is None else float((probs.argmax(1) == labels).mean())
    same = (decisions(probs, thresholds) == decisions(reference, thresholds)).all(axis=1)
    return Agreement(
        name, len(probs), float(np.abs(probs.astype(np.float64) - reference).max()), float(same.mean()), accuracy
    )


HEADER = ["model", "images", "max |Δprob|", "same answer", "accuracy"]
