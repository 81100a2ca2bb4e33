"""Inputs for predict: one image, a folder (recursive) or a CSV with a `path` column -> a table."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from imgcls.data.labels import SEPARATOR, parse_label_columns, parse_label_sets, read_verbatim
from imgcls.data.sources import SPLIT_NAMES, DataConfigError, list_images


def read_inputs(
    source: str,
    class_names: list[str],
    split: str | None = None,
    path_column: str = "path",
    bbox_columns: list[str] | None = None,
    multilabel: bool = False,
    label_separator: str = SEPARATOR,
) -> pd.DataFrame:
    """Columns `path` (+ `label` when the CSV carries known labels, so predict can report accuracy), plus the
    bbox columns a `crop.mode=bbox` checkpoint needs (only a CSV can carry them).

    Known labels come from a `label_name` column (as in split.csv) or a `label` column of class names; for a
    multi-label model, read into sets (`labels`), from a `labels` column of names joined by `|` (split.csv's), a
    `label` column joined by `label_separator` (the training manifest's), or one 0/1 column per class.
    """
    path = Path(str(source)).expanduser()
    if not path.exists():
        raise DataConfigError(f"input='{source}' does not exist: give an image, a folder or a CSV")
    if bbox_columns and (path.is_dir() or path.suffix.lower() != ".csv"):
        raise DataConfigError(
            f"the checkpoint crops each image to its box (data.crop.mode=bbox): give input= a CSV "
            f"with columns path,{','.join(bbox_columns)}"
        )
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise DataConfigError(f"input='{source}' contains no images")
        table = pd.DataFrame({"path": [str(p) for p in files]})
        # A folder of class folders (as data=folder reads it) is labelled: every image in a folder named by a class.
        parts = [p.relative_to(path).parts for p in files]
        index = {str(n): i for i, n in enumerate(class_names)}
        if not multilabel and all(len(p) > 1 and p[0] in index for p in parts):
            table["label"] = [index[p[0]] for p in parts]
        return table
    if path.suffix.lower() != ".csv":
        return pd.DataFrame({"path": [str(path.resolve())]})

    df = read_verbatim(path, ["labels", "label_name", "label"], dtype=str)
    if path_column not in df.columns:
        raise DataConfigError(f"input CSV '{path}' has no '{path_column}' column (found {list(df.columns)})")
    if split is not None:
        if "split" not in df.columns:
            raise DataConfigError(f"split={split} needs a 'split' column in '{path}' (like a run's split.csv)")
        given = df["split"].astype(str).str.strip().str.lower().map(SPLIT_NAMES)  # as training reads it
        df = df[given == SPLIT_NAMES.get(str(split).lower(), split)].reset_index(drop=True)
        if df.empty:
            raise DataConfigError(f"no rows with split == '{split}' in '{path}'")
    table = pd.DataFrame({"path": [p if os.path.isabs(p) else str(path.parent / p) for p in df[path_column]]})
    missing = [c for c in bbox_columns or [] if c not in df.columns]
    if missing:
        raise DataConfigError(f"input CSV '{path}' lacks the bbox column(s) {missing} the checkpoint crops with")
    for column in bbox_columns or []:
        table[column] = df[column].astype(float).values
    if multilabel:
        where = f"input CSV '{path}'"
        if "labels" in df:
            sets, _ = parse_label_sets(df["labels"].tolist(), class_names, SEPARATOR, where, "labels")
        elif "label" in df:
            sets, _ = parse_label_sets(df["label"].tolist(), class_names, label_separator, where, "label")
        elif all(str(c) in df for c in class_names):
            sets = parse_label_columns(df, [str(c) for c in class_names], where)
        else:
            return table
        table["labels"] = pd.Series(sets, dtype=object)
        return table
    names = df["label_name"] if "label_name" in df else df["label"] if "label" in df else None
    if names is not None:
        index = {n: i for i, n in enumerate(class_names)}
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise DataConfigError(
                f"input CSV '{path}' has labels {unknown[:5]} the checkpoint does not know (its classes: {class_names})"
            )
        table["label"] = names.map(index).astype(int).values
    return table


def read_rows(source: str, spec: Mapping[str, Any], split: str | None, path_column: str = "path") -> pd.DataFrame:
    """`read_inputs` for a checkpoint (its `data_spec`): its classes, and the box columns a `crop.mode=bbox` one
    needs."""
    crop = spec.get("crop") or {}
    return read_inputs(
        str(source),
        spec["class_names"],
        split=split,
        path_column=path_column,
        bbox_columns=list(crop.get("columns") or []) if crop.get("mode") == "bbox" else None,
        multilabel=bool(spec.get("multilabel")),
        label_separator=spec.get("label_separator") or SEPARATOR,
    )
