"""`python -m imgcls.eda` writes the report and its pictures, for the default data and a folder dataset (the eda
task in-process, tests/helpers.py's `run_task`: the config as the CLI composes it)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import run_task
from PIL import Image

pytestmark = pytest.mark.slow

PICTURES = ("class_counts.png", "image_sizes.png", "samples_per_class.png")


def test_eda_on_default_mnist(mnist_root, tmp_path):
    run_task("eda", f"paths.data_dir={mnist_root.parent}", run_dir=tmp_path)
    summary = json.loads((tmp_path / "eda.json").read_text())
    assert summary["images"] == 5000 and summary["classes"] == 10 and summary["modes"] == {"L": 5000}
    assert summary["mean"][0] == pytest.approx(0.1307, abs=0.01) and summary["std"][0] == pytest.approx(
        0.3081, abs=0.01
    )
    report = (tmp_path / "report.md").read_text()
    assert "data.mean=" in report and "Imbalance ratio" in report
    for name in PICTURES:
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG"


def test_eda_on_folder_finds_duplicates_across_classes(image_tree, tmp_path):
    root = shutil.copytree(image_tree, tmp_path / "tree")
    shutil.copy(root / "circle" / "000.png", root / "square" / "copy_of_circle.png")  # a label conflict
    run_task("eda", "data=folder", f"data.root={root}", run_dir=tmp_path / "eda")
    summary = json.loads((tmp_path / "eda" / "eda.json").read_text())
    assert summary["class_counts"] == {"bar": 20, "circle": 20, "square": 21}
    assert summary["duplicate_conflicts"] == 2
    dup = (tmp_path / "eda" / "duplicates.csv").read_text()
    assert "copy_of_circle.png" in dup and "classes differ" in dup
    for name in PICTURES:
        assert (tmp_path / "eda" / name).exists()
