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
    top1_agree: float  # the fraction of images with the same top-1 class
    accuracy: float | None = None  # against the images' labels, when they have some

    def row(self) -> list[str]:
        acc = "-" if self.accuracy is None else f"{self.accuracy:.4f}"
        return [self.name, str(self.n), f"{self.max_abs_diff:.2e}", f"{self.top1_agree:.4f}", acc]


def compare(name: str, reference: np.ndarray, probs: np.ndarray, labels: np.ndarray | None) -> Agreement:
    accuracy = None if labels is None else float((probs.argmax(1) == labels).mean())
    return Agreement(
        name,
        len(probs),
        float(np.abs(probs.astype(np.float64) - reference).max()),
        float((probs.argmax(1) == reference.argmax(1)).mean()),
        accuracy,
    )


HEADER = ["model", "images", "max |Δprob|", "top-1 agrees", "accuracy"]
