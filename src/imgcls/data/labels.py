"""Multi-label targets (`data.task=multilabel`): each image has a *set* of classes, possibly empty.

A multi-label table has a `labels` column instead of `label`: per row a sorted tuple of class indices. The empty
tuple is allowed and means "none of the classes" (an image with no tag); it trains as all-negative. In CSVs
(the manifest, split.csv, predictions.csv) a set is written as class names joined by a separator (`cat|dog`,
empty for none). The helpers here are the one place that reads and writes that form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from imgcls.utils.errors import ConfigError, DataConfigError

SEPARATOR = "|"
TASKS = ("multiclass", "multilabel")


def check_task(task: str, key: str = "data.task") -> str:
    if task not in TASKS:
        raise ConfigError(f"{key}={task!r} is not a task kind: use multiclass (one label each) or multilabel")
    return task


def is_multilabel(table: pd.DataFrame) -> bool:
    return "labels" in table.columns


def sorted_names(values: Iterable[object]) -> list[str]:
    """Class names in a stable order: numerically when every label is an integer, else alphabetically."""
    names = sorted({str(v) for v in values})
    if all(n.lstrip("-").isdigit() for n in names):
        names = sorted(names, key=int)
    return names


def split_names(value: object, sep: str) -> list[str] | None:
    """`cat|dog` -> ["cat", "dog"]; empty or missing -> []; None when malformed (an empty piece or a repeat)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return []
    parts = [p.strip() for p in str(value).split(sep)]
    if any(not p for p in parts) or len(set(parts)) != len(parts):
        return None
    return parts


def read_verbatim(path: Any, columns: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """`pd.read_csv(path, **kwargs)` with the label `columns` exactly as written: pandas reads NA, None, null, nan,
    N/A... as missing, which would make a set silently empty ("no label") or a class named 'nan'."""
    df = pd.read_csv(path, **kwargs)
    kept = [c for c in columns if c in df.columns]
    if kept:
        df[kept] = pd.read_csv(path, usecols=kept, dtype=str, keep_default_na=False)[kept]
    return df


def check_names(names: Sequence[str], where: str) -> None:
    """Class names are written joined by SEPARATOR (split.csv, predictions): one containing it could not be read
    back."""
    bad = [n for n in names if SEPARATOR in str(n)]
    if bad:
        raise DataConfigError(
            f"{where}: class name '{bad[0]}' contains '{SEPARATOR}', which joins label sets in split.csv and "
            "predictions: rename the class"
        )


def parse_label_sets(
    values: Sequence[object], names: Sequence[str] | None, sep: str, where: str, column: str
) -> tuple[list[tuple[int, ...]], list[str]]:
    """Each row's label string -> sorted class indices, and the class names (`names`, or every one seen, sorted).

    Malformed rows (`cat||dog`, `cat|cat`, a trailing separator) and names outside `names` are one-line errors
    naming the first row (CSV rows counted from 2, after the header)."""
    pieces = [split_names(v, sep) for v in values]
    bad = [i for i, p in enumerate(pieces) if p is None]
    if bad:
        raise DataConfigError(
            f"{where}: row {bad[0] + 2} has {column}='{values[bad[0]]}', not names joined by '{sep}' ({len(bad)} such "
            f"rows): write e.g. cat{sep}dog (no empty or repeated names; empty = no label), or set "
            "data.source.label_separator"
        )
    names = list(names) if names else sorted_names([n for p in pieces for n in p])
    check_names(names, where)
    index = {n: i for i, n in enumerate(names)}
    unknown = [i for i, p in enumerate(pieces) if any(n not in index for n in p)]
    if unknown:
        first = next(n for n in pieces[unknown[0]] if n not in index)
        raise DataConfigError(
            f"{where}: row {unknown[0] + 2} has label '{first}' not in data.source.class_names={names} "
            f"({len(unknown)} such rows): fix the CSV or the class list"
        )
    return [tuple(sorted(index[n] for n in p)) for p in pieces], names


def parse_label_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> list[tuple[int, ...]]:
    """One 0/1 column per class (`data.source.label_columns`) -> each row's set of class indices."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataConfigError(f"{where}: missing label column(s) {missing}; found {list(df.columns)}")
    values = df[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy()
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataConfigError(
            f"{where}: row {row + 2} has {columns[col]}='{df[columns[col]].iloc[row]}': label columns hold 0 or 1 "
            f"({int(bad.any(axis=1).sum())} such rows)"
        )
    return [tuple(np.flatnonzero(r).tolist()) for r in values.astype(int)]


def multi_hot(sets: Iterable[Sequence[int]], num_classes: int) -> np.ndarray:
    """(N, num_classes) float32 0/1 targets."""
    sets = list(sets)
    out = np.zeros((len(sets), num_classes), np.float32)
    for i, s in enumerate(sets):
        out[i, list(s)] = 1.0
    return out


def join_names(sets: Iterable[Sequence[int]], names: Sequence[str], sep: str = SEPARATOR) -> list[str]:
    """Class-index sets -> `cat|dog` strings (empty for none): how split.csv and predictions.csv write them."""
    return [sep.join(str(names[i]) for i in s) for s in sets]


def present(table: pd.DataFrame) -> set[int]:
    """The classes that occur in `table` (its `label` or `labels` column)."""
    if is_multilabel(table):
        return {c for s in table["labels"] for c in s}
    return set(table["label"])
