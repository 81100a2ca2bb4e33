"""data=mask: labels from the competition layout, person-grouped splits and folds, corrections, sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from imgcls.data import DataConfigError, ImageDataModule
from imgcls.extras.competition import MaskSource
from imgcls.resume.sampler import EpochSampler, balanced_weights

KIND_TO_MASK = {**{f"mask{i}": 0 for i in range(1, 6)}, "incorrect_mask": 1, "normal": 2}


def _dm(root, **kw) -> ImageDataModule:
    source = MaskSource(str(root), corrections=kw.pop("corrections", "none"))
    args = dict(
        image_size=[32, 24], split_seed=0, val_fraction=0.2, cache=False, loader={"batch_size": 8, "num_workers": 0}
    )
    return ImageDataModule(source, root=str(root), **{**args, **kw})


def _expected_label(path: str) -> int:
    """Decoded independently from the names: <id>_<gender>_<race>_<age>/<kind>.<ext>."""
    folder, file = path.split("/")[-2:]
    _, gender, _, age = folder.split("_")
    band = 0 if int(age) < 30 else 1 if int(age) < 60 else 2
    return KIND_TO_MASK[file.rsplit(".", 1)[0]] * 6 + (gender == "female") * 3 + band


def test_every_label_is_mask_gender_age_and_hidden_files_are_skipped(mask_root):
    found = MaskSource(str(mask_root)).discover()
    table = found.table
    assert len(table) == 40 * 7 and found.tasks == {"mask": 3, "gender": 2, "age": 3}
    assert all(_expected_label(p) == label for p, label in zip(table["path"], table["label"]))
    assert not any("/._" in p for p in table["path"])
    assert len(list((mask_root / "train" / "images").rglob("._*")))  # the junk was there to skip
    assert found.class_names[0] == "wear/male/<30" and found.class_names[17] == "normal/female/>=60"
    assert table.groupby("group").size().eq(7).all()


@pytest.mark.parametrize("n_folds", [None, 5])
def test_no_person_on_both_sides_of_any_split(mask_root, n_folds):
    folds = range(n_folds or 1)
    for fold in folds:
        dm = _dm(mask_root, n_folds=n_folds, fold=fold)
        dm.setup()
        assert dm.table.groupby("group")["split"].nunique().max() == 1
        assert set(dm.table["split"]) == {"train", "val"}
    if n_folds:  # every person validates in exactly one fold
        fold_of = dm.table.groupby("group")["fold"].agg(["nunique", "first"])
        assert fold_of["nunique"].eq(1).all() and sorted(fold_of["first"].unique()) == list(range(n_folds))


def test_split_csv_has_group_and_fold(mask_root, tmp_path):
    dm = _dm(mask_root, n_folds=5, fold=2, output_dir=str(tmp_path))
    dm.setup()
    split = pd.read_csv(tmp_path / "split.csv", dtype={"group": str})
    assert {"group", "fold", "split"} <= set(split.columns)
    assert set(split.loc[split["split"] == "val", "fold"]) == {2}


def test_a_second_datamodule_has_exactly_the_same_samples(mask_root):
    first, second = _dm(mask_root), _dm(mask_root)
    first.setup()
    second.setup()
    assert len(second.table) == len(first.table) == 280
    assert first.table[["path", "label", "split"]].equals(second.table[["path", "label", "split"]])


def test_corrections_change_exactly_the_listed_people(mask_root, tmp_path):
    base = MaskSource(str(mask_root)).discover().table
    people = sorted(base["group"].unique())
    flip, swap = people[:2], people[2:3]
    fixes = tmp_path / "fixes.yaml"
    fixes.write_text("gender_flip: [" + ", ".join(f'"{p}"' for p in flip) + f']\nmask_swap: ["{swap[0]}"]\n')
    fixed = MaskSource(str(mask_root), corrections=str(fixes)).discover().table
    assert fixed["path"].equals(base["path"])
    changed = set(base.loc[base["label"] != fixed["label"], "group"])
    assert changed == set(flip) | set(swap)
    rows = base["group"].isin(flip)
    assert (fixed.loc[rows, "gender"] == 1 - base.loc[rows, "gender"]).all()
    rows = base["group"].isin(swap)
    before, after = base.loc[rows, "mask"].to_numpy(), fixed.loc[rows, "mask"].to_numpy()
    assert list(after) == [{1: 2, 2: 1}.get(m, m) for m in before] and set(before) == {0, 1, 2}


def test_known_corrections_ship_and_bad_ones_are_named(mask_root):
    from imgcls.extras.competition.mask import load_corrections

    known = load_corrections("known")
    assert {"006359", "001498-1", "004432"} <= known["gender_flip"] and "000020" in known["mask_swap"]
    with pytest.raises(DataConfigError, match="data.source.corrections='nope'"):
        load_corrections("nope")


def test_layout_errors_name_the_fix(tmp_path):
    with pytest.raises(DataConfigError, match="no train/train.csv"):
        MaskSource(str(tmp_path)).discover()
    with pytest.raises(DataConfigError, match="data.source.age_bands"):
        MaskSource(str(tmp_path), age_bands=[60, 30])


def test_submission_template_in_info_csv_order(mask_root):
    sub = MaskSource(str(mask_root)).submission()
    info = pd.read_csv(mask_root / "eval" / "info.csv", dtype=str)
    assert list(sub.template["ImageID"]) == list(info["ImageID"]) and sub.column == "ans"
    assert [p.rsplit("/", 1)[1] for p in sub.table["path"]] == list(info["ImageID"])


def test_weighted_sampler_balances_classes_and_agrees_across_ranks():
    labels = np.array([0] * 90 + [1] * 10)

    def weighted(num_samples):
        return EpochSampler(len(labels), seed=3, weights=balanced_weights(labels), num_samples=num_samples)

    sampler = weighted(2000)
    drawn = labels[[index for index, _ in sampler]]
    assert 0.4 < drawn.mean() < 0.6  # the 10% class is drawn about half the time
    again = weighted(2000)
    assert list(again) == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != list(again)
    # Under DDP Lightning wraps it: the two ranks' shares are disjoint positions of one and the same draw.
    ranks = [DistributedSamplerWrapper(weighted(100), num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    shares = [list(r) for r in ranks]
    draw = list(weighted(100))
    assert sorted(shares[0] + shares[1]) == sorted(draw)


def test_datamodule_weighted_sampler_and_class_counts(mask_root):
    dm = _dm(mask_root, sampler="weighted")
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, EpochSampler) and loader.sampler.weights is not None
    counts = dm.train_class_counts()
    assert counts.shape == (18,) and counts.sum() == (dm.table["split"] == "train").sum()
    assert dm.spec["tasks"] == {"mask": 3, "gender": 2, "age": 3}
    with pytest.raises(DataConfigError, match="data.sampler='balanced'"):
        _dm(mask_root, sampler="balanced")
