"""EDA: "understand the data before modelling". One streaming pass over the images -> report.md + PNGs.

Class balance, image sizes and aspect ratios, colour modes, exact duplicates (across classes = label
conflicts, across the split = leakage), groups per split, per-class samples, and the dataset's mean/std in
the form `data.mean=... data.std=...` for normalisation.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from PIL import Image
from rich.progress import track

from imgcls.callbacks.multilabel_pictures import cooccurrence_figure
from imgcls.cli.wrapper import task_wrapper
from imgcls.data.labels import join_names, multi_hot
from imgcls.feeding.image_io import BadImageError, load_image
from imgcls.utils import atomic_write_text, get_logger, write_json_atomic
from imgcls.utils.plots import bar_chart, image_grid, save_figure

log = get_logger(__name__)


def scan(table: pd.DataFrame, channels: int, stats_size: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Per image: size, mode, format, bytes, sha1; plus running per-channel sums for mean/std (0..1 units).

    Streams: only one image is in memory at a time, so a dataset of any size fits.
    """
    rows, total, total_sq, pixels = [], np.zeros(channels), np.zeros(channels), 0
    for path in track(table["path"], description="Scanning images", total=len(table)):
        row: dict[str, Any] = {"path": path}
        try:
            data = Path(path).read_bytes()
            row.update(bytes=len(data), sha1=hashlib.sha1(data).hexdigest())
            with Image.open(path) as img:
                row.update(width=img.width, height=img.height, mode=img.mode, format=img.format)
            small = load_image(path, channels, min_size=(stats_size, stats_size))
            if max(small.shape[:2]) > stats_size:  # shrink big images; never blur small ones by enlarging
                small = cv2.resize(small, (stats_size, stats_size), interpolation=cv2.INTER_AREA)
            values = small.reshape(-1, channels).astype(np.float64) / 255.0
            total += values.sum(0)
            total_sq += (values**2).sum(0)
            pixels += len(values)
        except (OSError, BadImageError) as exc:
            row.update(error=str(exc))
        rows.append(row)
    mean = total / max(pixels, 1)
    std = np.sqrt(np.maximum(total_sq / max(pixels, 1) - mean**2, 0))
    return pd.DataFrame(rows), mean, std


def _duplicates(info: pd.DataFrame) -> pd.DataFrame:
    """Identical files (same bytes) whose copies disagree on class or split: label conflicts and leakage."""
    dup = info[info.duplicated("sha1", keep=False) & info["sha1"].notna()]
    if dup.empty:
        return dup.assign(problem=[])
    problems = []
    for _, grp in dup.groupby("sha1"):
        kind = [
            k for k, col in (("classes differ", "label_name"), ("crosses split", "split")) if grp[col].nunique() > 1
        ] or ["same class, same split"]
        problems += [", ".join(kind)] * len(grp)
    out = dup.sort_values("sha1").assign(problem=problems)
    return out[["sha1", "path", "label_name", "split", "problem"]]


def _size_figure(info: pd.DataFrame):  # noqa: ANN202
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.scatter(info["width"], info["height"], s=6, alpha=0.4)
    a.set_xlabel("width (px)")
    a.set_ylabel("height (px)")
    a.set_title("Image sizes")
    b.hist(info["width"] / info["height"], bins=40, color="C1")
    b.set_xlabel("aspect ratio (width / height)")
    b.set_title("Aspect ratios")
    fig.tight_layout()
    return fig


@task_wrapper
def eda(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    dm = hydra.utils.instantiate(cfg.data, cache=False)
    dm.setup()  # training's own split of the files it keeps (data.on_bad_image); also writes split.csv
    table, names = dm.table.copy(), dm.class_names
    if dm.multilabel:  # per image its set (`3|7`, for duplicates); per label one row each (counts, samples)
        table["label_name"] = join_names(table["labels"], names)
        per_label = table.assign(label_name=[[names[i] for i in s] for s in table["labels"]]).explode("label_name")
        per_label = per_label.dropna(subset=["label_name"])
    else:
        table["label_name"] = [names[i] for i in table["label"]]
        per_label = table

    info, mean, std = scan(table, dm.channels, int(cfg.eda.stats_size))
    info = table.merge(info, on="path")
    failed = info.loc[info["error"].notna(), "path"].tolist() if "error" in info else []
    unreadable = dm.bad_images()["path"].tolist() + failed  # dropped by training + any the scan could not read

    counts = per_label["label_name"].value_counts().reindex(names, fill_value=0)
    imbalance = float(counts.max() / max(counts.min(), 1))
    save_figure(
        bar_chart(names, counts.tolist(), f"Images per class (imbalance ratio {imbalance:.1f})", "images"),
        out / "class_counts.png",
    )
    good = info[info["width"].notna()]
    save_figure(_size_figure(good), out / "image_sizes.png")

    per_class = int(cfg.eda.samples_per_class)
    picks = per_label[per_label["path"].isin(good["path"])].groupby("label_name", sort=False).head(per_class)
    picks = picks.set_index("label_name").loc[[n for n in names if n in set(picks["label_name"])]].reset_index()
    thumbs = [cv2.resize(load_image(p, 3, min_size=(96, 96)), (96, 96)) for p in picks["path"]]
    save_figure(
        image_grid(thumbs, picks["label_name"].tolist(), ncols=per_class, title="Samples per class"),
        out / "samples_per_class.png",
    )

    duplicates = _duplicates(info)
    atomic_write_text(out / "duplicates.csv", duplicates.to_csv(index=False))
    groups = table.groupby("split")["group"].nunique().to_dict() if "group" in table else {}
    straddling = int((table.groupby("group")["split"].nunique() > 1).sum()) if "group" in table else 0

    summary = {
        "images": len(table),
        "classes": len(names),
        "class_counts": counts.to_dict(),
        "imbalance_ratio": imbalance,
        "modes": dict(Counter(good["mode"])),
        "formats": dict(Counter(good["format"])),
        "unreadable": unreadable,
        "width": good["width"].describe().round(1).to_dict(),
        "height": good["height"].describe().round(1).to_dict(),
        "mean": mean.round(4).tolist(),
        "std": std.round(4).tolist(),
        "duplicate_files": int(len(duplicates)),
        "duplicate_conflicts": int((duplicates["problem"] != "same class, same split").sum()) if len(duplicates) else 0,
        "groups_per_split": groups,
        "groups_straddling_split": straddling,
        "split_counts": table["split"].value_counts().to_dict(),
    }
    if dm.multilabel:
        summary |= _label_sets(table, names, out)
    write_json_atomic(out / "eda.json", summary)
    atomic_write_text(out / "report.md", _markdown(summary, cfg))
    log.info(f"EDA report: {out / 'report.md'}")
    log.info(f"Normalise with: data.mean={summary['mean']} data.std={summary['std']}")
    return summary


def _label_sets(table: pd.DataFrame, names: list[str], out: Path) -> dict[str, Any]:
    """Multi-label data: how many labels an image has (`labels_per_image.png`) and which classes come together
    (`label_cooccurrence.png`)."""
    sizes = table["labels"].map(len)
    per_image = sizes.value_counts().reindex(range(int(sizes.max()) + 1), fill_value=0)
    title = f"Labels per image (mean {sizes.mean():.2f}; {int(per_image[0])} without a label)"
    save_figure(
        bar_chart([str(k) for k in per_image.index], per_image.tolist(), title, "images"), out / "labels_per_image.png"
    )
    together = cooccurrence_figure(multi_hot(table["labels"], len(names)), names, "Label co-occurrence")
    save_figure(together, out / "label_cooccurrence.png")
    return {"labels_per_image": {int(k): int(v) for k, v in per_image.items()}, "without_label": int(per_image[0])}


def _markdown(s: dict[str, Any], cfg: DictConfig) -> str:
    counts = "\n".join(f"| {k} | {v} |" for k, v in s["class_counts"].items())
    modes = ", ".join(f"{k}: {v}" for k, v in s["modes"].items())
    lines = [
        f"# EDA: {cfg.data.root}",
        "",
        f"{s['images']} images, {s['classes']} classes; split {s['split_counts']} (seed {cfg.data.split_seed}).",
        "",
        "## Classes",
        "",
        f"Imbalance ratio (largest / smallest class): **{s['imbalance_ratio']:.2f}**",
        "",
        "![class counts](class_counts.png)",
        "",
        "| class | images |",
        "|---|---:|",
        counts,
        "",
        "## Image sizes and modes",
        "",
        f"Width: median {s['width'].get('50%')}, min {s['width'].get('min')}, max {s['width'].get('max')}; "
        f"height: median {s['height'].get('50%')}, min {s['height'].get('min')}, max {s['height'].get('max')}.",
        "",
        f"Colour modes: {modes}. Formats: {s['formats']}.",
        "",
        "![sizes](image_sizes.png)",
        "",
        "## Samples",
        "",
        "![samples per class](samples_per_class.png)",
        "",
        "## Normalisation",
        "",
        "Dataset statistics (0..1 units, after conversion to the configured channels):",
        "",
        f"    data.mean={s['mean']} data.std={s['std']}",
        "",
        "## Duplicates",
        "",
        f"{s['duplicate_files']} files have an identical copy; {s['duplicate_conflicts']} of them sit in another "
        "class or on the other side of the split (label conflict or leakage). Details: duplicates.csv.",
        "",
    ]
    if "labels_per_image" in s:
        lines += [
            "## Label sets (multi-label)",
            "",
            f"Labels per image: {s['labels_per_image']} ({s['without_label']} images without a label). The class "
            "counts above count an image once for each of its labels.",
            "",
            "![labels per image](labels_per_image.png)",
            "",
            "![label co-occurrence](label_cooccurrence.png)",
            "",
        ]
    if s["groups_per_split"]:
        lines += [
            "## Groups",
            "",
            f"Groups per split: {s['groups_per_split']}; groups on both sides of a split: "
            f"**{s['groups_straddling_split']}** (must be 0).",
            "",
        ]
    if s["unreadable"]:
        lines += [
            "## Unreadable files",
            "",
            "Training leaves these out (see bad_images.csv):",
            "",
            *[f"- {p}" for p in s["unreadable"]],
            "",
        ]
    return "\n".join(lines)
