"""Figures shared by the run callbacks and EDA: image grids, confusion matrix, bar charts (saved atomically)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from imgcls.utils.io import atomic_write_bytes  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    ncols: int = 8,
    title: str | None = None,
    colors: Sequence[str] | None = None,
) -> plt.Figure:
    """uint8 HxWxC (C = 1 or 3) images in a grid with a caption each."""
    n = max(1, len(images))
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 1.9 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, caption) in enumerate(zip(images, titles)):
        ax = axes.flat[i]
        ax.imshow(
            img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255
        )
        ax.set_title(caption, fontsize=7, color=(colors[i] if colors else "black"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(
    matrix: np.ndarray,
    class_names: Sequence[str],
    title: str,
    axes: tuple[str, str] = ("predicted", "true"),
    row_totals: np.ndarray | None = None,
) -> plt.Figure:
    """Row-normalised confusion matrix (each row = one true class, sums to 1), counts in the cells; `axes` names
    (columns, rows) and `row_totals` what each row is a share of (default: its sum), e.g. for a label
    co-occurrence matrix the images of each class."""
    counts = matrix.astype(np.int64)
    totals = counts.sum(axis=1) if row_totals is None else np.asarray(row_totals)
    norm = counts / np.clip(totals[:, None], 1, None)
    k = len(class_names)
    size = min(18.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels=class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=class_names, fontsize=8)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}\n({counts[i, j]})",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(max(5.0, 0.4 * len(labels) + 2), 3.5))
    ax.bar(range(len(labels)), values, color="C0")
    ax.set_xticks(
        range(len(labels)),
        labels=labels,
        rotation=60 if len(labels) > 8 else 0,
        ha="right" if len(labels) > 8 else "center",
        fontsize=8,
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig
