"""Unreadable images are found once per dataset, before the split, never half-way through an epoch.

With the cache on, its build decodes every image anyway and lists the failures (feeding/cache.py); with it off, a
cheap pass decodes every file at reduced size (JPEGs at 1/8 scale: libjpeg still reads the whole file, so a
truncated one fails). Either way the result is a CSV (`row,path,reason`) in the cache folder, named by a hash of
the files and settings: every DDP rank reads the same list, and a later run on unchanged files does not check
again. The DataModule then drops those files or stops (`data.on_bad_image`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from imgcls.feeding.collate import collate_images
from imgcls.feeding.image_io import BadImageError
from imgcls.feeding.workers import seed_worker
from imgcls.utils.io import atomic_write_text, file_lock

BAD_COLUMNS = ["row", "path", "reason"]
CHECK_VERSION = 1  # bump when what counts as unreadable changes: remembered checks are then redone

Bad = tuple[int, str, str]  # (row in the table, path, reason)


class _Tolerant(Dataset):
    """An ImageDataset whose unreadable items come back as a reason instead of an exception.

    `pixels=False` only decodes (`read`, at the dataset's reduced decode size) and returns no image.
    """

    def __init__(self, dataset: Any, pixels: bool) -> None:
        self.dataset, self.pixels = dataset, pixels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = None
        try:
            if self.pixels:
                image = self.dataset[index]["image"]
            else:
                self.dataset.read(index)
        except BadImageError as exc:
            return {"index": index, "image": None, "bad": (index, exc.path, exc.reason)}
        return {"index": index, "image": image, "bad": None}


def _collate(items: list[dict[str, Any]]) -> tuple[np.ndarray, Any, list[Bad]]:
    """(rows, a uint8 (B, C, H, W) batch with unreadable images black or None, the unreadable ones)."""
    rows = np.array([it["index"] for it in items], np.int64)
    bad = [it["bad"] for it in items if it["bad"] is not None]
    good = next((it["image"] for it in items if it["image"] is not None), None)
    if good is None:
        return rows, None, bad
    blank = np.zeros_like(good)
    batch = collate_images(
        [{"image": blank if it["image"] is None else it["image"], "target": -1, "index": it["index"]} for it in items]
    )
    return rows, batch["image"], bad


def decode_all(
    dataset: Any, num_workers: int, batch_size: int, label: str, pixels: bool = True
) -> Iterator[tuple[np.ndarray, Any, list[Bad]]]:
    """Every item of `dataset` in row order, batched, with a progress bar: `(rows, images or None, unreadable)`."""
    # Its own generator: iterating a DataLoader draws a base seed from the global torch RNG, which would make the
    # run that builds the cache/check train differently from every later run with the same seed.
    loader = DataLoader(
        _Tolerant(dataset, pixels),
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle=False,
        collate_fn=_collate,
        worker_init_fn=seed_worker if num_workers else None,
        generator=torch.Generator(),
    )
    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=len(dataset))
        for batch in loader:
            yield batch
            progress.advance(task, len(batch[0]))


def bad_list_path(cache: Path) -> Path:
    """Where a cache build lists the images it could not decode."""
    return cache.with_suffix(".bad.csv")


def write_bad_list(path: Path, bad: list[Bad]) -> None:
    atomic_write_text(path, pd.DataFrame(sorted(bad), columns=BAD_COLUMNS).to_csv(index=False))


def read_bad_list(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"row": np.int64, "path": str, "reason": str}, keep_default_na=False)


def find_bad_images(probe: Dataset, record: Path | None, num_workers: int = 0, batch_size: int = 64) -> pd.DataFrame:
    """`row,path,reason` of the items of `probe` that cannot be decoded (rows in its order).

    `probe` is a dataset whose `read(i)` decodes item i (an ImageDataset at a tiny decode size: JPEGs decode at
    1/8 scale). Read from `record` when an earlier check or the cache build left it; else every item is decoded,
    in `num_workers` processes, and the result saved there (under a lock: concurrent ranks check once).
    """
    if record is not None and record.exists():
        return read_bad_list(record)
    with file_lock(record.with_suffix(".lock")) if record is not None else nullcontext():
        if record is not None and record.exists():  # checked by another process while we waited
            return read_bad_list(record)
        workers = min(num_workers, len(probe) // batch_size)  # a worker per batch at most: start-up costs
        bad = [
            b
            for _, _, found in decode_all(probe, workers, batch_size, f"Checking {len(probe)} images", pixels=False)
            for b in found
        ]
        if record is None:
            return pd.DataFrame(sorted(bad), columns=BAD_COLUMNS)
        write_bad_list(record, bad)
    return read_bad_list(record)
