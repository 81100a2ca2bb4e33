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
    split = assign_splits(t, val_fraction=0.2, seed=0)
    val = t[split == "val"].groupby("label").size().to_dict()
    assert val == {0: 12, 1: 6, 2: 2}


def test_same_seed_same_split_other_seed_other_split():
    t = _table()
    a, b = assign_splits(t, 0.2, seed=1), assign_splits(t, 0.2, seed=1)
    c = assign_splits(t, 0.2, seed=2)
    assert a.equals(b) and not a.equals(c)


def test_test_fraction_is_of_the_whole():
    split = assign_splits(_table(), val_fraction=0.1, test_fraction=0.2, seed=0)
    assert split.value_counts().to_dict() == {"train": 70, "test": 20, "val": 10}


def test_groups_never_straddle():
    t = _table(groups=True)
    split = assign_splits(t, 0.2, test_fraction=0.2, seed=3)
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
