"""Train/val/test split: stratified by label, grouped when a `group` column exists, seeded.

Pure function of (table, fractions, seed): every DDP rank and every multirun job computes the same split
without talking to each other, and nothing is kept in class attributes (a second DataModule is not doubled).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from imgcls.data.sources import DataConfigError


def _holdout(index: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, fraction: float,
             seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Split `index` into (keep, held_out) with ~`fraction` held out, stratified (and grouped if `groups`)."""
    counts = np.bincount(labels)
    rare = [c for c, n in enumerate(counts) if 0 < n < 2]
    if rare:
        raise DataConfigError(f"classes {rare} have fewer than 2 images: a stratified {key} split needs at least "
                              "2 per class; add images or remove those classes")
    if groups is None:
        keep, held = train_test_split(index, test_size=fraction, stratify=labels, random_state=seed, shuffle=True)
        return np.sort(keep), np.sort(held)
    n_splits = max(2, round(1.0 / fraction))
    if len(np.unique(groups)) < n_splits:
        raise DataConfigError(f"{key}={fraction} needs at least {n_splits} groups, found {len(np.unique(groups))}")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, held = next(folds.split(index, labels, groups))
    return index[keep], index[held]


def assign_splits(table: pd.DataFrame, val_fraction: float, test_fraction: float = 0.0, seed: int = 0) -> pd.Series:
    """A `split` column ("train" / "val" / "test") aligned with `table`."""
    if not 0.0 < val_fraction < 1.0:
        raise DataConfigError(f"data.val_fraction={val_fraction} must be between 0 and 1 (e.g. 0.1)")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DataConfigError(f"data.test_fraction={test_fraction} must be >= 0 and leave room for training "
                              f"(val_fraction + test_fraction < 1)")
    labels = table["label"].to_numpy()
    groups = table["group"].to_numpy() if "group" in table else None
    split = np.full(len(table), "train", dtype=object)
    rest = np.arange(len(table))
    if test_fraction > 0:
        rest, test = _holdout(rest, labels, groups, test_fraction, seed, "data.test_fraction")
        split[test] = "test"
    # The val fraction is of the whole table, not of what the test split left.
    rest_fraction = val_fraction / (1.0 - test_fraction)
    _, val = _holdout(rest, labels[rest], None if groups is None else groups[rest], rest_fraction, seed,
                      "data.val_fraction")
    split[val] = "val"
    return pd.Series(split, index=table.index, name="split")
