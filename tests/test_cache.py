"""The pre-processing cache: reused when nothing changed, rebuilt when anything did, never left half-written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from imgcls.data import FolderSource, ImageDataModule


def _dm(root, cache_dir, **kw) -> ImageDataModule:
    args = dict(image_size=24, split_seed=0, loader={"batch_size": 8, "num_workers": 0}, cache_dir=str(cache_dir))
    return ImageDataModule(FolderSource(str(root)), root=str(root), **{**args, **kw})


def test_cache_is_built_once_and_reused(image_tree, tmp_path):
    first = _dm(image_tree, tmp_path).cache_file()
    built_at = first.stat().st_mtime_ns
    again = _dm(image_tree, tmp_path).cache_file()  # a new DataModule, as in the next run or multirun job
    assert again == first and again.stat().st_mtime_ns == built_at
    arr = np.load(first, mmap_mode="r")
    assert arr.dtype == np.uint8 and arr.shape == (60, 27, 27, 3)  # fitted: floor(24 / timm's crop_pct 0.875)
    assert first.with_suffix(".json").exists()


def test_cache_rebuilds_when_data_or_preprocessing_change(image_tree, tmp_path, caplog):
    root = shutil.copytree(image_tree, tmp_path / "tree")
    base = _dm(root, tmp_path / "cache").cache_file()
    with caplog.at_level("INFO"):  # the user is told why a new cache is built, and that the old one is unused
        assert _dm(root, tmp_path / "cache", resize={"mode": "letterbox"}).cache_file() != base
    assert "Building a new cache: the pre-processing differs from " + base.name in caplog.text
    assert (
        "(size [27, 27] -> [24, 24]; resize.mode center -> border; resize.fill (not recorded) -> [124, 116, 104])"
        in caplog.text
    )
    assert _dm(root, tmp_path / "cache", image_size=16).cache_file() != base
    assert _dm(root, tmp_path / "cache", crop={"mode": "center", "size": 0.8}).cache_file() != base
    assert _dm(root, tmp_path / "cache", channels=1).cache_file() != base
    victim = next((root / "square").glob("*.png"))
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed (new mtime)
    assert _dm(root, tmp_path / "cache").cache_file() != base
    (root / "square" / "extra.png").write_bytes(victim.read_bytes())  # a file was added
    assert np.load(_dm(root, tmp_path / "cache").cache_file(), mmap_mode="r").shape[0] == 61
    assert len({p.name for p in (tmp_path / "cache").glob("*.npy")}) == 7


def test_cached_and_streamed_eval_images_are_identical(image_tree, tmp_path):
    batches = []
    for cache in (True, False):
        dm = _dm(image_tree, tmp_path, cache=cache)
        dm.setup("fit")
        batches.append(next(iter(dm.val_dataloader()))["image"])
    assert batches[0].dtype == torch.uint8 and torch.equal(batches[0], batches[1])


KILLED_BUILD = """
import sys, time, pandas as pd
from pathlib import Path
import imgcls
from imgcls.feeding.cache import build_cache
from imgcls.data.dataset import ImageDataset
from imgcls.data.transforms import build_eval_transform

class Slow(ImageDataset):
    def __getitem__(self, i):
        time.sleep(0.05)
        return super().__getitem__(i)

table = pd.DataFrame({"path": sorted(str(p) for p in Path(sys.argv[1]).rglob("[!.]*.png"))})
build_cache(Slow(table, build_eval_transform(16)), Path(sys.argv[2]), batch_size=2)
"""


@pytest.mark.slow  # a real process, killed mid-build
def test_killed_build_leaves_no_cache_and_next_build_works(image_tree, tmp_path):
    target = tmp_path / "cache" / "tree_16x16_x.npy"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(image_tree), str(target)])
    deadline = time.time() + 120
    while not list(target.parent.glob(".*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the ~1.5 s build
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(target.parent.glob(".*.tmp")), "the build should have been killed mid-way"
    assert not target.exists()  # nothing a later run could trust

    import pandas as pd

    from imgcls.data.dataset import ImageDataset
    from imgcls.data.transforms import build_eval_transform
    from imgcls.feeding.cache import build_cache

    table = pd.DataFrame({"path": sorted(str(p) for p in image_tree.rglob("[!.]*.png"))})
    build_cache(ImageDataset(table, build_eval_transform(16)), target)
    assert np.load(target).shape == (30, 16, 16, 3)
    assert not list(target.parent.glob(".*.tmp"))  # the stale temp file was cleaned up


def test_cache_reader_matches_the_array_and_refuses_a_truncated_file(image_tree, tmp_path):
    import pickle

    import pytest

    from imgcls.feeding.cache import CacheReader

    path = _dm(image_tree, tmp_path).cache_file()
    reader = CacheReader(path)
    full = np.load(path)
    assert len(reader) == len(full)
    for row in (0, 17, len(full) - 1):
        got = reader[row]
        assert np.array_equal(got, full[row]) and got.flags.writeable
    assert np.array_equal(pickle.loads(pickle.dumps(reader))[5], full[5])  # as a spawned worker gets it

    cut = tmp_path / "cut.npy"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(OSError, match="cut.npy is truncated; delete it to have it rebuilt"):
        CacheReader(cut)
