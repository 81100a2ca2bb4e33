"""The EDA report shows exactly training's split: the same files (unreadable ones left out), the same sides."""

from __future__ import annotations

import json
import shutil

import hydra
import pandas as pd
import pytest
from helpers import compose

from imgcls.tasks.eda import eda


@pytest.mark.slow
def test_eda_shows_the_split_training_makes(image_tree, tmp_path):
    root = shutil.copytree(image_tree, tmp_path / "tree")
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG not really")  # training skips it (on_bad_image=skip)
    data = ["data=folder", f"data.root={root}", f"paths.data_dir={tmp_path / 'data'}", "loader.num_workers=0"]

    train = hydra.utils.instantiate(compose("train", [*data, f"paths.output_dir={tmp_path / 'train'}"]).data)
    train.setup()
    summary = eda(compose("eda", [*data, f"paths.output_dir={tmp_path / 'eda'}"]))

    assert summary["images"] == len(train.table) == 60
    assert summary["unreadable"] == [str(root / "circle" / "broken.png")]
    assert summary["split_counts"] == train.table["split"].value_counts().to_dict()
    shown = pd.read_csv(tmp_path / "eda" / "split.csv")
    assert shown[["path", "split"]].equals(train.table[["path", "split"]].reset_index(drop=True))
    assert json.loads((tmp_path / "eda" / "eda.json").read_text())["unreadable"] == summary["unreadable"]
    assert "broken.png" in (tmp_path / "eda" / "report.md").read_text()
