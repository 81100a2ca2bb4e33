"""The eval report: pictures (confusion matrix, reliability diagram, most confident mistakes) and report.md."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from imgcls.utils import atomic_write_text
from imgcls.utils.markdown import markdown_table
from imgcls.utils.plots import confusion_figure, image_grid, save_figure


def reliability_figure(
    before: list[dict[str, float]], after: list[dict[str, float]] | None, title: str, labels: tuple[str, str]
) -> plt.Figure:
    """Accuracy per confidence bin against the diagonal (perfect calibration); bar width = the bin."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    for rows, name, colour in ((before, labels[0], "C3"), (after, labels[1], "C0")):
        if rows:
            ax.bar(
                [r["low"] for r in rows],
                [r["accuracy"] for r in rows],
                width=[max(r["high"] - r["low"], 0.01) for r in rows],
                align="edge",
                alpha=0.45,
                color=colour,
                edgecolor=colour,
                label=name,
            )
            ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o-", color=colour, ms=3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy", title=title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def mistakes_table(
    rows: pd.DataFrame, probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], n: int
) -> pd.DataFrame:
    """The `n` wrong answers the model was surest of (path, truth, answer, its probability, the truth's)."""
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    wrong = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:n]
    return pd.DataFrame(
        {
            "row": wrong,  # position in `rows`
            "path": rows["path"].to_numpy()[wrong],
            "label_name": [str(class_names[labels[i]]) for i in wrong],
            "pred_name": [str(class_names[preds[i]]) for i in wrong],
            "prob": probs[wrong, preds[wrong]].round(4),
            "prob_true": probs[wrong, labels[wrong]].round(4),
        }
    )


def mistakes_figure(images: list[np.ndarray], mistakes: pd.DataFrame) -> plt.Figure:
    titles = [f"{r.label_name} → {r.pred_name}\n{r.prob:.2f}" for r in mistakes.itertuples()]
    return image_grid(images, titles, ncols=8, title="Most confident mistakes (true → predicted, probability)")


def write_report(out: Path, result: dict[str, Any], pictures: dict[str, Path], mistakes: pd.DataFrame) -> Path:
    """report.md: the headline numbers, calibration, per-class table, the pictures and the worst mistakes."""
    m = result["metrics"]
    head = [
        ["images", str(m["n"])],
        ["top-1 accuracy", f"{m['acc']:.4f}"],
        ["top-5 accuracy", f"{m['top5_acc']:.4f}"],
        ["macro-F1", f"{m['f1']:.4f}"],
        ["NLL", f"{m['nll']:.4f}"],
        ["ECE", f"{m['ece']:.4f}"],
    ]
    head += [[f"macro-F1 ({k[3:]})", f"{v:.4f}"] for k, v in m.items() if k.startswith("f1_")]
    lines = [
        f"# Evaluation of `{result['model']}` on {result['evaluated']}",
        "",
        f"Checkpoint(s): {', '.join(f'`{c}`' for c in result['checkpoints'])}; TTA {result['tta'] or 'none'}; "
        f"temperature {result['temperature']:.4f}.",
        "",
        markdown_table(["metric", "value"], head),
        "",
    ]
    cal = result.get("calibration")
    if cal:
        lines += [
            "## Calibration",
            f"Temperature {cal['temperature']:.4f} fitted on the `{cal['fitted_on']}` split ({cal['n']} images, "
            f"never the evaluated ones); stored in `{cal['file']}`, used by predict.py and export.py from now on.",
            "",
            markdown_table(
                ["", "ECE", "NLL"],
                [
                    ["before", f"{cal['ece_before']:.4f}", f"{cal['nll_before']:.4f}"],
                    ["after", f"{cal['ece_after']:.4f}", f"{cal['nll_after']:.4f}"],
                ],
            ),
            "",
        ]
    lines += ["## Pictures", ""] + [f"![{name}]({path.name})" for name, path in pictures.items()] + [""]
    per_class = [
        [c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])]
        for c in m["per_class"]
    ]
    lines += ["## Per class", "", markdown_table(["class", "precision", "recall", "F1", "images"], per_class), ""]
    if len(mistakes):
        rows = [
            [f"`{r.path}`", str(r.label_name), str(r.pred_name), f"{r.prob:.3f}", f"{r.prob_true:.3f}"]
            for r in mistakes.itertuples()
        ]
        lines += [
            "## Most confident mistakes",
            "",
            markdown_table(["image", "true", "predicted", "p(predicted)", "p(true)"], rows),
            "",
        ]
    return atomic_write_text(out, "\n".join(lines))


def _at(temperature: float, ece: float) -> str:
    return f"as trained (ECE {ece:.3f})" if temperature == 1.0 else f"temperature {temperature:.2f} (ECE {ece:.3f})"


def save_pictures(
    out_dir: Path,
    result: dict[str, Any],
    class_names: Sequence[str],
    mistake_images: list[np.ndarray],
    mistakes: pd.DataFrame,
) -> dict[str, Path]:
    m, cal = result["metrics"], result.get("calibration")
    pictures = {
        "confusion matrix": save_figure(
            confusion_figure(np.asarray(m["confusion"]), class_names, f"Confusion matrix ({result['evaluated']})"),
            out_dir / "confusion.png",
        ),
        "reliability diagram": save_figure(
            reliability_figure(
                cal["reliability_before"] if cal else m["reliability"],
                m["reliability"] if cal else None,
                f"Reliability on {result['evaluated']}",
                (
                    f"as trained (ECE {cal['ece_before']:.3f})" if cal else _at(result["temperature"], m["ece"]),
                    f"temperature {cal['temperature']:.2f} (ECE {cal['ece_after']:.3f})" if cal else "",
                ),
            ),
            out_dir / "reliability.png",
        ),
    }
    if mistake_images:
        pictures["most confident mistakes"] = save_figure(
            mistakes_figure(mistake_images, mistakes), out_dir / "mistakes.png"
        )
    return pictures
