"""eval.py for a multi-label model: mAP, subset accuracy, macro/micro-F1 at the model's thresholds, per-class
AP/F1 and the pictures of training's report (callbacks/multilabel_pictures.py) -> eval.json, per_class.csv, report.md.

Why not the single-label report: top-k, the confusion matrix, NLL/ECE and temperature scaling all assume one
softmax over the classes; with independent sigmoids each class is its own binary decision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgcls.callbacks.multilabel_pictures import ap_figure, cooccurrence_figure, mistakes_figure, per_class_table
from imgcls.models.metrics import multilabel_scores
from imgcls.utils import atomic_write_text
from imgcls.utils.markdown import markdown_table
from imgcls.utils.plots import save_figure


def evaluate_multilabel(
    probs: np.ndarray,
    target: np.ndarray,
    thresholds: np.ndarray,
    class_names: list[str],
    image_of: Callable[[int], np.ndarray],
    mistakes: int,
    output_dir: Path,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The metrics (eval.json's `metrics`) and the pictures written, by title."""
    metrics = {"n": len(probs), **multilabel_scores(probs, target, thresholds)}
    table = per_class_table(probs, target, thresholds, class_names)
    atomic_write_text(output_dir / "per_class.csv", table.to_csv(index=False))
    metrics["per_class"] = table.to_dict(orient="records")
    pictures = {
        "average precision per class": save_figure(
            ap_figure(table, f"Average precision per class (mAP {metrics['map']:.4f})"), output_dir / "per_class_ap.png"
        ),
        "label co-occurrence": save_figure(
            cooccurrence_figure(target, class_names, "Label co-occurrence"), output_dir / "label_cooccurrence.png"
        ),
        "most confident mistakes": save_figure(
            mistakes_figure(probs, target, thresholds, class_names, image_of, mistakes, "Most confident mistakes"),
            output_dir / "mistakes.png",
        ),
    }
    return metrics, pictures


def write_multilabel_report(out: Path, result: dict[str, Any], pictures: dict[str, Path]) -> Path:
    m = result["metrics"]
    head = [
        ["images", str(m["n"])],
        ["mAP (macro average precision)", f"{m['map']:.4f}"],
        ["macro-F1 at the thresholds", f"{m['f1']:.4f}"],
        ["micro-F1 at the thresholds", f"{m['f1_micro']:.4f}"],
        ["subset accuracy (every label right)", f"{m['acc']:.4f}"],
    ]
    per_class = pd.DataFrame(m["per_class"])
    lines = [
        f"# Evaluation of `{result['model']}` (multi-label) on {result['evaluated']}",
        "",
        f"Checkpoint(s): {', '.join(f'`{c}`' for c in result['checkpoints'])}; TTA {result['tta'] or 'none'}; "
        "each class is present at or above its threshold (tuned on validation by training).",
        "",
        markdown_table(["metric", "value"], head),
        "",
        "## Per class",
        markdown_table(list(per_class.columns), per_class.astype(str).values.tolist()),
        "",
    ]
    for title, path in pictures.items():
        lines += [f"## {title.capitalize()}", f"![{title}]({path.name})", ""]
    atomic_write_text(out, "\n".join(lines))
    return out
