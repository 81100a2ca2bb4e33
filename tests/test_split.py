"""The split: stratified, seeded, grouped when groups exist, errors on classes too small to stratify."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgcls.data import DataConfigError
from imgcls.data.split import assign_splits


def _table(counts=(60, 30, 10), groups=False):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    t = pd.DataFrame({"path": [f"{i}.png" for i in range(len(labels))], "label": labels})
    if groups:
        t["group"] = [f"p{i // 5}" for i in range(len(labels))]
    return t


def test_stratified_proportions():
    t = _table()
    split = assign_splits(t, val_fraction=0.2, seed=0)["split"]
    val = t[split == "val"].groupby("label").size().to_dict()
    assert val == {0: 12, 1: 6, 2: 2}


def test_same_seed_same_split_other_seed_other_split():
    t = _table()
    a, b = assign_splits(t, 0.2, seed=1), assign_splits(t, 0.2, seed=1)
    c = assign_splits(t, 0.2, seed=2)
    assert a.equals(b) and not a.equals(c)


def test_test_fraction_is_of_the_whole():
    split = assign_splits(_table(), val_fraction=0.1, test_fraction=0.2, seed=0)["split"]
    assert split.value_counts().to_dict() == {"train": 70, "test": 20, "val": 10}


def test_groups_never_straddle():
    t = _table(groups=True)
    split = assign_splits(t, 0.2, test_fraction=0.2, seed=3)["split"]
    per_group = t.assign(split=split).groupby("group")["split"].nunique()
    assert per_group.max() == 1
    assert set(split) == {"train", "val", "test"}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_val_fraction_names_key(fraction):
    with pytest.raises(DataConfigError, match="data.val_fraction"):
        assign_splits(_table(), fraction)


def test_class_too_small_to_stratify():
    with pytest.raises(DataConfigError, match=r"classes \[2\] have fewer than 2 images"):
        assign_splits(_table((10, 10, 1)), 0.2)


def test_k_folds_partition_the_groups_and_each_fold_validates_once():
    t = _table(groups=True)
    splits = [assign_splits(t, 0.1, seed=4, n_folds=5, fold=k) for k in range(5)]
    fold = splits[0]["fold"]
    assert all(s["fold"].equals(fold) for s in splits)  # one assignment, whichever fold runs
    assert t.assign(fold=fold).groupby("group")["fold"].nunique().max() == 1  # a person sits in one fold
    for k, s in enumerate(splits):
        assert set(t.index[s["split"] == "val"]) == set(t.index[fold == k])
    assert sorted(fold.unique()) == [0, 1, 2, 3, 4]
    per_fold = t.assign(fold=fold).groupby("fold")["label"].apply(lambda x: (x == 0).mean())
    assert per_fold.min() > 0.4 and per_fold.max() < 0.8  # stratified: class 0 is 60% everywhere, roughly


def test_k_folds_with_a_test_split_and_without_groups():
    s = assign_splits(_table(), 0.1, test_fraction=0.2, seed=0, n_folds=4, fold=3)
    assert s["split"].value_counts().to_dict() == {"train": 60, "test": 20, "val": 20}
    assert (s.loc[s["split"] == "test", "fold"] == -1).all()


@pytest.mark.parametrize(
    ("n_folds", "fold", "key"),
    [(5, 5, "data.fold=5 must be in 0..4"), (1, 0, "data.n_folds=1"), (5, -1, "data.fold=-1")],
)
def test_bad_fold_settings_name_the_key(n_folds, fold, key):
    with pytest.raises(DataConfigError, match=key):
        assign_splits(_table(), 0.1, n_folds=n_folds, fold=fold)
