"""The multi-label counterparts of RunPictures' reports, from the best validation epoch's probabilities:
`per_class.csv` (AP, and precision/recall/F1 at the tuned thresholds), `per_class_ap.png`,
`label_cooccurrence.png` (how often the classes appear together) and `worst_misclassified.png` (the most confident
false positives and the most confident misses)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import multilabel_average_precision

from imgcls.data.labels import join_names
from imgcls.utils.plots import bar_chart, confusion_figure, image_grid


def label_text(target: np.ndarray, names: Sequence[str]) -> str:
    """A multi-hot row as `3|7`, or `none`."""
    return join_names([np.flatnonzero(target)], [str(n) for n in names])[0] or "none"


def per_class_table(
    probs: np.ndarray, target: np.ndarray, thresholds: np.ndarray, names: Sequence[str]
) -> pd.DataFrame:
    """AP per class, and precision/recall/F1 of `probs >= thresholds`; support = positives."""
    truth = target.astype(bool)
    said = probs >= thresholds[None, :]
    tp, fp, fn = (said & truth).sum(0), (said & ~truth).sum(0), (~said & truth).sum(0)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    ap = multilabel_average_precision(
        torch.as_tensor(probs), torch.as_tensor(target).int(), len(names), average=None
    ).numpy()
    return pd.DataFrame(
        {
            "class": list(names),
            "ap": ap,
            "threshold": thresholds,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": truth.sum(0),
        }
    ).round(4)


def ap_figure(table: pd.DataFrame, title: str) -> plt.Figure:
    return bar_chart([str(c) for c in table["class"]], table["ap"].tolist(), title, "average precision")


def cooccurrence_figure(target: np.ndarray, names: Sequence[str], title: str) -> plt.Figure:
    """Row c: of the images labelled c, the share that is also labelled each other class (counts in the cells)."""
    truth = target.astype(np.int64)
    together = truth.T @ truth
    return confusion_figure(together, names, title, axes=("also labelled", "labelled"), row_totals=np.diag(together))


def mistakes_figure(
    probs: np.ndarray,
    target: np.ndarray,
    thresholds: np.ndarray,
    names: Sequence[str],
    image_of: Callable[[int], np.ndarray],
    count: int,
    title: str,
) -> plt.Figure:
    """The `count` most confident false positives (highest probability on an absent class) and the most confident
    misses (lowest probability on a present one), one (image, class) each, interleaved."""
    truth = target.astype(bool)
    fp = np.argwhere((probs >= thresholds) & ~truth)
    miss = np.argwhere((probs < thresholds) & truth)
    fp = fp[np.argsort(-probs[fp[:, 0], fp[:, 1]])][: count // 2]
    miss = miss[np.argsort(probs[miss[:, 0], miss[:, 1]])][: count - len(fp)]
    picks = [("false +", r, c) for r, c in fp] + [("missed", r, c) for r, c in miss]
    images = [image_of(int(r)) for _, r, _ in picks]
    captions = [f"{kind} {names[c]} ({probs[r, c]:.2f})\ntrue {label_text(target[r], names)}" for kind, r, c in picks]
    shown = f"{len(fp)} false positives, {len(miss)} misses" if picks else "no mistakes"
    return image_grid(images, captions, ncols=6, title=f"{title} ({shown})", colors=["red"] * len(images))
