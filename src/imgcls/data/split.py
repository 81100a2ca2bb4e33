"""Train/val/test split: stratified by label, grouped when a `group` column exists, seeded; or k-fold.

Multi-label data (a `labels` column of class sets) is stratified per class by iterative stratification
(Sechidis et al. 2011, the `iterative-stratification` package): every class keeps about its share on each side,
images without a label included. Grouped, whole groups are stratified by their per-class image counts.

Pure function of (table, fractions, seed): every DDP rank and every multirun job computes the same split
without talking to each other, and nothing is kept in class attributes (a second DataModule is not doubled).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from imgcls.data.labels import is_multilabel, multi_hot
from imgcls.utils.errors import DataConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


def _class_counts(labels: np.ndarray) -> np.ndarray:
    """Images per class: `labels` is (N,) class indices or (N, C) multi-hot."""
    return labels.sum(axis=0).astype(int) if labels.ndim == 2 else np.bincount(labels)


def _grouped_multilabel_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    """Iterative stratification over groups, then back to rows. A group is described by how many of its images hold
    each class, as 0/1 columns "at least 1, 2, ... images of class c" (the stratifier takes 0/1 labels only): a
    group of many images holds most classes once, and "holds c" alone would carry almost nothing (folds no better
    than random); the counts keep each class's image share within ~3-4 points on 1,700 collages in groups of 4."""
    names, row_group = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(names), labels.shape[1]))
    np.add.at(counts, row_group, labels)
    at_least = np.concatenate([counts >= k for k in range(1, int(counts.max()) + 1)], axis=1).astype(int)
    at_least = at_least[:, at_least.any(axis=0)]
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [np.flatnonzero(np.isin(row_group, held)) for _, held in splitter.split(at_least, at_least)]


def _best_multilabel_holdout(labels: np.ndarray, fraction: float, seed: int, tries: int = 8) -> tuple[np.ndarray, ...]:
    """The iterative-stratification hold-out whose classes' shares stray least from the whole's, of `tries` draws
    seeded from `seed` (still a pure function of data and seed). One draw alone strays up to ~7 points of share on
    1,700 collages (a random split: ~10); the best of 8 about 2."""
    whole = labels.mean(axis=0)
    best, best_gap = None, np.inf
    for k in range(tries):
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed * tries + k)
        keep, held = next(splitter.split(labels, labels))
        gap = max(np.abs(labels[held].mean(axis=0) - whole).max(), np.abs(labels[keep].mean(axis=0) - whole).max())
        if gap < best_gap:
            best, best_gap = (keep, held), gap
    return best


def _check_counts(labels: np.ndarray, key: str) -> None:
    counts = _class_counts(labels)
    rare = [c for c, n in enumerate(counts) if 0 < n < 2]
    if rare:
        raise DataConfigError(
            f"classes {rare} have fewer than 2 images: a stratified {key} split needs at least "
            "2 per class; add images or remove those classes"
        )


def _folds(labels: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int, key: str) -> list[np.ndarray]:
    """The held-out positions of each of `n_splits` stratified (grouped if `groups`) folds."""
    fix = "use fewer folds" if key.startswith("data.n_folds") else "hold out a larger fraction"
    if groups is None:
        counts = _class_counts(labels)
        smallest = int(counts[counts > 0].min()) if (counts > 0).any() else len(labels)
        if smallest < n_splits:
            raise DataConfigError(
                f"{key} cuts every class into {n_splits} parts, but a class has only {smallest} "
                f"images: {fix}, or add images"
            )
        splitter = (MultilabelStratifiedKFold if labels.ndim == 2 else StratifiedKFold)(
            n_splits=n_splits, shuffle=True, random_state=seed
        )
        folds = splitter.split(labels, labels)
    else:
        if len(np.unique(groups)) < n_splits:
            raise DataConfigError(
                f"{key} needs at least {n_splits} groups, found {len(np.unique(groups))}: {fix}, or add data"
            )
        if labels.ndim == 2:
            return _grouped_multilabel_folds(labels, groups, n_splits, seed)
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(labels, labels, groups)
    return [held for _, held in folds]


def _holdout(
    index: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split `index` into (keep, held_out) with ~`fraction` held out, stratified (and grouped if `groups`)."""
    _check_counts(labels, key)
    if groups is None and labels.ndim == 2:
        held_out = math.ceil(fraction * len(labels))
        if held_out < 1 or held_out >= len(labels):
            raise DataConfigError(
                f"{key} holds out {held_out} of {len(labels)} images: change the fraction or add images"
            )
        keep, held = _best_multilabel_holdout(labels, fraction, seed)
        return np.sort(index[keep]), np.sort(index[held])
    if groups is None:
        classes, held_out = len(np.unique(labels)), math.ceil(fraction * len(labels))  # as scikit-learn counts
        if held_out < classes or len(labels) - held_out < classes:
            raise DataConfigError(
                f"{key} holds out {held_out} of {len(labels)} images, but a "
                f"stratified split needs at least one per class ({classes}) on each side: "
                "change the fraction or add images"
            )
        keep, held = train_test_split(index, test_size=fraction, stratify=labels, random_state=seed, shuffle=True)
        return np.sort(keep), np.sort(held)
    held = _folds(labels, groups, max(2, round(1.0 / fraction)), seed, key)[0]
    return np.setdiff1d(index, index[held]), index[held]


def assign_splits(
    table: pd.DataFrame,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
    n_folds: int | None = None,
    fold: int = 0,
) -> pd.DataFrame:
    """Columns `split` ("train" / "val" / "test") and, for k-fold, `fold` (the fold a row validates in).

    With `n_folds`, what the test split leaves is cut into `n_folds` stratified (grouped) folds and fold `fold`
    is the validation set; `val_fraction` is then unused.

    A source that found the user's own split (column `given_split`: a train/val/test folder layout, a CSV
    `split` column) gets exactly that split: `test_fraction` is unused, `val_fraction` only carves a validation
    set out of the given train rows when none was given, and k-fold cuts the given train and val rows together.
    """
    if n_folds is not None:
        if int(n_folds) < 2:
            raise DataConfigError(f"data.n_folds={n_folds} must be at least 2 (or null for a single split)")
        if not 0 <= int(fold) < int(n_folds):
            raise DataConfigError(f"data.fold={fold} must be in 0..{int(n_folds) - 1} (data.n_folds={n_folds})")
    given = table["given_split"].to_numpy(dtype=object) if "given_split" in table else None
    given_val = given is not None and bool((given == "val").any())
    if n_folds is None and not given_val and not 0.0 < val_fraction < 1.0:
        raise DataConfigError(f"data.val_fraction={val_fraction} must be between 0 and 1 (e.g. 0.1)")
    if given is not None and test_fraction > 0:
        log.warning(f"data.test_fraction={test_fraction} is unused: the data comes split (its test split is kept)")
    if given is None and (not 0.0 <= test_fraction < 1.0 or (n_folds is None and val_fraction + test_fraction >= 1.0)):
        raise DataConfigError(
            f"data.test_fraction={test_fraction} must be >= 0 and leave room for training "
            f"(val_fraction + test_fraction < 1)"
        )
    if is_multilabel(table):
        labels = multi_hot(table["labels"], 1 + max((c for s in table["labels"] for c in s), default=0))
    else:
        labels = table["label"].to_numpy()
    groups = table["group"].to_numpy() if "group" in table else None
    out = pd.DataFrame({"split": np.full(len(table), "train", dtype=object)}, index=table.index)
    rest = np.arange(len(table))
    if given is not None:
        out["split"] = given
        rest = np.flatnonzero(given != "test")
        if n_folds is None and given_val:
            return out  # exactly the user's split
        out.iloc[rest, 0] = "train"  # k-fold: given val rows are cut into the folds too
        val_share = val_fraction
    else:
        if test_fraction > 0:
            rest, test = _holdout(rest, labels, groups, test_fraction, seed, f"data.test_fraction={test_fraction}")
            out.iloc[test, 0] = "test"
        val_share = val_fraction / (1.0 - test_fraction)  # the val fraction is of the whole table
    rest_groups = None if groups is None else groups[rest]
    if n_folds is not None:
        _check_counts(labels[rest], f"data.n_folds={n_folds}")
        fold_of = np.full(len(table), -1)
        for k, held in enumerate(_folds(labels[rest], rest_groups, int(n_folds), seed, f"data.n_folds={n_folds}")):
            fold_of[rest[held]] = k
        out["fold"] = fold_of
        out.loc[out["fold"] == int(fold), "split"] = "val"
        return out
    _, val = _holdout(rest, labels[rest], rest_groups, val_share, seed, f"data.val_fraction={val_fraction}")
    out.iloc[val, 0] = "val"
    return out
