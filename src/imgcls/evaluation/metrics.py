"""Metrics of probabilities against labels, from the well-kept libraries: scikit-learn for the classification
report and confusion matrix, torchmetrics for the expected calibration error. Plain numpy in, plain dicts out
(eval.json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from torchmetrics.functional.classification import multiclass_calibration_error

from imgcls.deploy.calibrate import nll
from imgcls.models.heads import TaskLayout


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-probs, axis=1)[:, : min(k, probs.shape[1])]
    return float((top == labels[:, None]).any(axis=1).mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """ECE (L1, equal-width confidence bins), torchmetrics' definition."""
    return float(
        multiclass_calibration_error(
            torch.tensor(probs, dtype=torch.float32), torch.tensor(labels), probs.shape[1], n_bins=bins, norm="l1"
        )
    )


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its mean confidence, accuracy and share of the images (the diagram)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # [low, high) as torchmetrics bins them (a confidence of exactly 1 is a bin of its own): so the ECE is
    # sum(fraction * |accuracy - confidence|) over these rows
    which = np.searchsorted(edges, confidence, side="right") - 1
    rows = []
    for b in range(bins + 1):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[min(b + 1, bins)]),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                    "fraction": float(mask.mean()),
                }
            )
    return rows


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], spec: dict[str, Any], bins: int
) -> dict[str, Any]:
    """Everything eval.json reports about one set of probabilities."""
    preds = probs.argmax(axis=1)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    out: dict[str, Any] = {
        "n": int(len(labels)),
        "acc": float((preds == labels).mean()),
        "top5_acc": top_k_accuracy(probs, labels, 5),
        "f1": float(f1_score(labels, preds, labels=classes, average="macro", zero_division=0)),
        "nll": nll(probs, labels),
        "ece": expected_calibration_error(probs, labels, bins),
        "per_class": [
            {"class": str(name), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        ],
        "confusion": confusion_matrix(labels, preds, labels=classes).tolist(),
        "reliability": reliability(probs, labels, bins),
    }
    layout = TaskLayout.from_spec(spec)
    if layout is not None:  # a multi-task (competition) model: each sub-task's macro-F1 (age usually limits)
        true_parts, pred_parts = layout.decompose(torch.from_numpy(labels)), layout.decompose(torch.from_numpy(preds))
        for name, size, t, p in zip(layout.names, layout.sizes, true_parts, pred_parts):
            out[f"f1_{name}"] = float(f1_score(t, p, labels=list(range(size)), average="macro", zero_division=0))
    return out
