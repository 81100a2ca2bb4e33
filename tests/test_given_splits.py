"""Data that arrives split keeps its split: a `train/ val/ test/` folder tree and a CSV `split` column give exactly
those rows in split.csv; k-fold over the given train + val stays possible; mistakes are one line naming the
folder or column."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CLASSES, FAST, draw_shape, run_task

from imgcls.data import CsvSource, DataConfigError, FolderSource
from imgcls.data.inputs import read_inputs
from imgcls.data.split import assign_splits

COUNTS = {"train": 8, "val": 3, "test": 2}  # per class


def split_tree(root: Path, counts=COUNTS, val_name: str = "val") -> Path:
    """root/<train|val|test>/<class>/<n>.png"""
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for name in CLASSES:
            folder = root / (val_name if split == "val" else split) / name
            folder.mkdir(parents=True)
            for i in range(n):
                draw_shape(name, rng).save(folder / f"{i:03d}.png")
    return root


def expected_split(paths) -> list[str]:
    return [Path(p).parts[-3].replace("validation", "val") for p in paths]


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_a_split_folder_tree_is_used_as_it_is(tmp_path, val_name):
    found = FolderSource(str(split_tree(tmp_path / "data", val_name=val_name))).discover()
    assert found.class_names == sorted(CLASSES)
    assert found.table["given_split"].tolist() == expected_split(found.table["path"])
    split = assign_splits(found.table, val_fraction=0.5, test_fraction=0.3, seed=1)  # the fractions are unused
    assert split["split"].tolist() == expected_split(found.table["path"])
    assert split["split"].value_counts().to_dict() == {s: n * len(CLASSES) for s, n in COUNTS.items()}


def test_training_writes_the_given_split_to_split_csv(tmp_path):
    root = split_tree(tmp_path / "data")
    run_task("train", "data=folder", f"data.root={root}", *FAST, run_dir=tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "split.csv")
    assert rows["split"].tolist() == expected_split(rows["path"])
    assert rows["label_name"].tolist() == [Path(p).parent.name for p in rows["path"]]  # classes, not splits
    assert (tmp_path / "run" / "metrics.json").exists()


def test_no_val_folder_carves_val_out_of_train(tmp_path):
    found = FolderSource(str(split_tree(tmp_path / "data", {"train": 10, "test": 2}))).discover()
    split = assign_splits(found.table, val_fraction=0.2, seed=0)["split"]
    given = found.table["given_split"]
    assert (split[given == "test"] == "test").all()  # the given test split stays
    assert split[given == "train"].value_counts().to_dict() == {"train": 24, "val": 6}


def test_k_folds_cut_the_given_train_and_val_and_keep_test(tmp_path):
    found = FolderSource(str(split_tree(tmp_path / "data"))).discover()
    given = found.table["given_split"]
    folds = [assign_splits(found.table, 0.1, seed=0, n_folds=3, fold=k) for k in range(3)]
    for split in folds:
        assert (split["split"][given == "test"] == "test").all() and (split["fold"][given == "test"] == -1).all()
    validated = np.concatenate([np.flatnonzero(s["split"] == "val") for s in folds])
    assert sorted(validated) == list(np.flatnonzero(given != "test"))  # each train/val row validates once


def test_folders_named_train_and_test_can_be_classes(tmp_path):
    root = split_tree(tmp_path / "data")
    shutil.rmtree(root / "val")
    found = FolderSource(str(root), given_splits=False).discover()
    assert found.class_names == ["test", "train"] and "given_split" not in found.table


def test_a_class_only_in_val_is_one_line_naming_it(tmp_path):
    root = split_tree(tmp_path / "data")
    shutil.copytree(root / "val" / "bar", root / "val" / "star")
    with pytest.raises(DataConfigError, match=r"class\(es\) \['star'\] are in the given val split"):
        FolderSource(str(root)).discover()


def test_an_empty_given_split_is_named(tmp_path):
    root = split_tree(tmp_path / "data")
    shutil.rmtree(root / "test")
    (root / "test").mkdir()
    with pytest.raises(DataConfigError, match=r"test'? \(the given test split\) has no images"):
        FolderSource(str(root)).discover()


def test_val_and_validation_together_is_an_error(tmp_path):
    root = split_tree(tmp_path / "data")
    shutil.copytree(root / "val", root / "validation")
    with pytest.raises(DataConfigError, match="are both the val split: keep one"):
        FolderSource(str(root)).discover()


def _manifest(tmp_path, splits) -> Path:
    root = split_tree(tmp_path / "data", {"train": 4})
    paths = sorted((root / "train").rglob("*.png"))
    pd.DataFrame(
        {"path": [str(p.relative_to(root)) for p in paths], "label": [p.parent.name for p in paths], "split": splits}
    ).to_csv(root / "labels.csv", index=False)
    return root


def test_a_csv_split_column_is_used_as_it_is(tmp_path):
    splits = ["train", "Train", "val", "test"] * 3  # 4 images x 3 classes; any case; "valid" works too
    root = _manifest(tmp_path, splits)
    found = CsvSource(str(root)).discover()
    split = assign_splits(found.table, val_fraction=0.5, seed=3)
    assert split["split"].tolist() == [{"Train": "train"}.get(s, s) for s in splits]
    assert "given_split" not in CsvSource(str(root), split_column=None).discover().table


def test_a_csv_split_value_that_is_not_a_split_names_the_row(tmp_path):
    root = _manifest(tmp_path, ["train", "train", "val", "holdout"] * 3)
    with pytest.raises(DataConfigError, match=r"labels.csv: row 5 has split='holdout': use train, val or test"):
        CsvSource(str(root)).discover()


def test_a_csv_class_only_in_test_names_the_column(tmp_path):
    splits = ["train"] * 8 + ["test"] * 4  # the last class (alphabetically: square) only in test
    root = _manifest(tmp_path, splits)
    with pytest.raises(DataConfigError, match=r"column 'split': class\(es\) \['square'\] are in the given test split"):
        CsvSource(str(root)).discover()


def test_labels_follow_the_class_folders_in_every_split(tmp_path):
    found = FolderSource(str(split_tree(tmp_path / "data"))).discover()
    names = [found.class_names[i] for i in found.table["label"]]
    assert names == [Path(p).parent.name for p in found.table["path"]]


@pytest.mark.parametrize(
    "layout,problem",
    [(("train", "val", "unlabeled"), "also holds ['unlabeled']"), (("val", "test"), "has no train/")],
)
def test_a_root_that_looks_split_but_is_not_is_one_line(tmp_path, layout, problem):
    root = split_tree(tmp_path / "data", {name: 1 for name in ("train", "val", "test")})
    for folder in root.iterdir():
        if folder.name not in layout:
            shutil.rmtree(folder)
    for extra in set(layout) - {"train", "val", "test"}:
        shutil.copytree(root / "val", root / extra)
    with pytest.raises(DataConfigError, match=f"looks split .* but {re.escape(problem)}: .*given_splits=false"):
        FolderSource(str(root)).discover()


def test_a_listed_class_without_training_images_is_named(tmp_path):
    root = split_tree(tmp_path / "data")
    with pytest.raises(DataConfigError, match=r"class\(es\) \['star'\] have no training images in the given split"):
        FolderSource(str(root), class_names=[*sorted(CLASSES), "star"]).discover()


def test_a_given_val_makes_val_fraction_unused(tmp_path):
    found = FolderSource(str(split_tree(tmp_path / "data"))).discover()
    assert (assign_splits(found.table, val_fraction=0.0)["split"] == found.table["given_split"]).all()


def test_predict_reads_the_csv_split_as_training_does(tmp_path):
    root = _manifest(tmp_path, ["train", "Validation", " val ", "test"] * 3)
    rows = read_inputs(str(root / "labels.csv"), sorted(CLASSES), split="val")
    assert len(rows) == 6


def test_a_given_splits_value_that_is_not_an_option_is_named(tmp_path):
    with pytest.raises(DataConfigError, match=r"^data.source.given_splits='maybe': use auto or false$"):
        FolderSource(str(tmp_path), given_splits="maybe")
