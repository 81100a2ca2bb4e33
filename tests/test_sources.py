"""Discovery: folder/CSV/MNIST sources produce one table; mistakes give errors naming the key or file."""

from __future__ import annotations

import shutil

import pytest

from imgcls.data import CsvSource, DataConfigError, FolderSource, MnistSource
from imgcls.utils.io import EXPORTED


def test_folder_discovery(image_tree):
    found = FolderSource(str(image_tree)).discover()
    assert found.class_names == ["bar", "circle", "square"]
    assert len(found.table) == 60  # the hidden `._000.jpg` is not counted
    assert found.table.groupby("label").size().tolist() == [20, 20, 20]


def test_missing_root_names_key_and_path(tmp_path):
    with pytest.raises(DataConfigError, match=r"data.root='.*nowhere' does not exist"):
        FolderSource(str(tmp_path / "nowhere")).discover()
    with pytest.raises(DataConfigError, match="data.root is not set"):
        FolderSource(None).discover()


def test_empty_class_folder_is_an_error(image_tree, tmp_path):
    root = shutil.copytree(image_tree, tmp_path / "tree")
    (root / "empty").mkdir()
    with pytest.raises(DataConfigError, match=r"class folder '.*empty' has no images"):
        FolderSource(str(root)).discover()


def test_csv_discovery_and_groups(tmp_path):
    from helpers import make_manifest

    csv = make_manifest(tmp_path, per_class=4, groups=True)
    found = CsvSource(str(tmp_path), csv.name).discover()
    assert found.class_names == ["bar", "circle", "square"]
    assert len(found.table) == 12 and "group" in found.table


def test_csv_unknown_label_names_row(manifest):
    with pytest.raises(DataConfigError, match=r"row 42 has label 'bar' not in data.source.class_names"):
        CsvSource(str(manifest.parent), manifest.name, class_names=["circle", "square"]).discover()


def test_csv_missing_file_is_named(tmp_path, manifest):
    (tmp_path / "labels.csv").write_text("path,label\nnope.png,a\n")
    with pytest.raises(DataConfigError, match="nope.png"):
        CsvSource(str(tmp_path), "labels.csv").discover()


def test_mnist_export_is_real_and_loads_as_folder(mnist_root):
    found = MnistSource(str(mnist_root)).discover()
    assert len(found.table) == 5000 and found.class_names == [str(d) for d in range(10)]
    counts = found.table.groupby("label").size()
    assert counts.min() > 400  # real MNIST is roughly balanced
    MnistSource(str(mnist_root)).prepare()  # second call: a no-op, nothing re-exported
    assert len(list(mnist_root.glob("*/*.png"))) == 5000


def test_concurrent_mnist_exports_both_succeed(tmp_path):
    """Two ranks/jobs preparing at once: one exports, the other waits and finds it done (nothing deleted)."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "mnist5k"
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: MnistSource(str(root)).prepare(), range(2)))
    assert len(list(root.glob("*/*.png"))) == 5000 and (root / EXPORTED).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mnist5k.") and p.is_dir()]
