"""The map-style dataset: decode -> pre-process crop -> augment -> uint8 CHW tensor.

Workers return uint8, never float: the host->device copy is 4x smaller and normalisation runs on the device.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from imgcls.data.batch_pool import BatchPool
from imgcls.data.cache import CacheReader
from imgcls.data.image_io import load_image


class ImageDataset(Dataset):
    """Samples from a discovery table (`path`, optional `label`, `row`, bbox columns); items are dicts.

    `{"image": uint8[C,H,W], "target": int64, "index": int64}`; `index` is the row in the table, so predictions
    can be written back in input order (and de-duplicated under DDP).

    With `cache_file` the pre-processed image is read from the memory-mapped cache (row = `table.row`),
    otherwise it is decoded and cropped from the file, at reduced JPEG scale when `decode_size` allows.
    """

    def __init__(self, table: pd.DataFrame, transform: A.Compose, channels: int = 3,
                 crop: dict[str, Any] | None = None, decode_size: Sequence[int] | None = None,
                 cache_file: str | None = None) -> None:
        self.paths = table["path"].tolist()
        self.targets = table["label"].to_numpy(np.int64) if "label" in table else np.full(len(table), -1, np.int64)
        self.rows = table["row"].to_numpy(np.int64) if "row" in table else np.arange(len(table))
        self.crop = dict(crop or {})
        columns: Sequence[str] = self.crop.get("columns") or ()
        self.boxes = table[list(columns)].to_numpy(np.float32) if self.crop.get("mode") == "bbox" and columns else None
        self.transform = transform
        self.channels = channels
        self.decode_size = tuple(decode_size) if decode_size is not None else None
        self.cache_file = cache_file
        self.cache = CacheReader(cache_file) if cache_file is not None else None
        self._nodes: list[Any] | None = None  # the transform's nodes, collected on the first seed_item

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> np.ndarray:
        """The pre-processed (decoded, cropped; resized when cached) uint8 HxWxC image, before augmentation."""
        if self.cache is not None:
            return self.cache[self.rows[index]]  # a private, writable array
        box = self.boxes[index] if self.boxes is not None else None
        return load_image(self.paths[index], self.channels, self.crop, box, self.decode_size)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """`image` is the augmented uint8 HxWxC array; `collate_images` turns a list into a CHW batch.

        `item` is a row index, or `(index, seed)` from `EpochSampler`: the augmentation is then re-seeded with
        `seed` first, so it depends on the draw alone (not on the worker or on what it transformed before).
        """
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None:
            self.seed_item(seed)
        img = self.transform(image=self.read(index))["image"]
        if img.ndim == 2:  # cv2 drops a single channel axis on some ops
            img = img[:, :, None]
        return {"image": img, "target": int(self.targets[index]), "index": index}

    def reseed(self, seed: int) -> None:
        """Albumentations keeps its own RNG; without this every worker would apply identical augmentations."""
        self.transform.set_random_seed(seed)

    def seed_item(self, seed: int) -> None:
        """Give the whole pipeline one fresh generator pair seeded with `seed` (~15 us; albumentations'
        `set_random_seed` takes ~60 us, building two generators per transform)."""
        if self._nodes is None:
            self._nodes = list(_pipeline_nodes(self.transform))
        generator, py_random = np.random.Generator(np.random.PCG64(seed)), random.Random(seed)
        for node in self._nodes:
            node.random_generator, node.py_random = generator, py_random


def _pipeline_nodes(transform: Any) -> Iterator[Any]:
    """A Compose and every transform inside it (OneOf, SomeOf and nested Compose included)."""
    yield transform
    for child in getattr(transform, "transforms", None) or ():
        yield from _pipeline_nodes(child)


def collate_images(items: list[dict[str, Any]], pool: BatchPool | None = None) -> dict[str, Any]:
    """Stack HxWxC uint8 images into one uint8 batch of shape (B, C, H, W), copying each image exactly once.

    Inside a worker the batch is written to shared memory: a reusable buffer from `pool` when one is free (see
    `imgcls.data.batch_pool`), else a fresh one as torch's default collate does; either way handing it to the
    main process copies nothing more. The CHW batch is a permuted view of the HWC buffer (channels-last
    strides); the model makes it contiguous in the format it wants on the device.
    """
    shape = (len(items), *items[0]["image"].shape)
    nbytes = int(np.prod(shape))
    worker = torch.utils.data.get_worker_info()
    taken = pool.take(worker.id, nbytes) if pool is not None and worker is not None else None
    if taken is not None:
        storage = taken[1]
    elif worker is not None:  # allocate straight in shared memory (as default_collate)
        storage = torch.UntypedStorage._new_shared(nbytes)
    else:
        storage = torch.UntypedStorage(nbytes)
    out = torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
    for i, item in enumerate(items):
        out[i] = torch.from_numpy(item["image"])
    image = out.permute(0, 3, 1, 2)
    if taken is not None:
        image = pool.handle(worker.id, taken[0], tuple(image.shape), image.stride())
    # Labels and indices travel as small numpy arrays (pickled inline): every extra tensor would cost a
    # shared-memory file and a file-descriptor hand-over (~1 ms per batch). The model makes them tensors.
    return {"image": image, "target": np.array([it["target"] for it in items], np.int64),
            "index": np.array([it["index"] for it in items], np.int64)}


def augmentation_seed(base: int, rank: int) -> int:
    """One seed per (process seed, DDP rank): ranks must not replay each other's augmentations."""
    return (base + 1_000_003 * rank) % 2**32


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: distinct, reproducible augmentation per worker, rank and epoch.

    `torch.initial_seed()` inside a worker is base_seed + worker_id, and the base seed is drawn from the
    (seeded) main-process RNG each time workers start, so non-persistent workers also change every epoch.
    """
    import cv2

    cv2.setNumThreads(0)  # OpenCV would otherwise start a thread per core in every worker
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    seed = augmentation_seed(torch.initial_seed(), int(getattr(rank_zero_only, "rank", 0) or 0))
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)
