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
from torch.utils.data import Dataset

from imgcls.data.labels import is_multilabel, multi_hot
from imgcls.feeding.cache import CacheReader
from imgcls.feeding.image_io import load_image


class ImageDataset(Dataset):
    """Samples from a discovery table (`path`, optional `label`, `row`, bbox columns); items are dicts.

    `{"image": uint8[C,H,W], "target": int64 (multi-label: float32[num_classes] 0/1), "index": int64}`;
    `index` is the row in the table, so predictions can be written back in input order (and de-duplicated under DDP).

    With `cache_file` the pre-processed image is read from the memory-mapped cache (row = `table.row`),
    otherwise it is decoded and cropped from the file, at reduced JPEG scale when `decode_size` allows.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        transform: A.Compose,
        channels: int = 3,
        crop: dict[str, Any] | None = None,
        decode_size: Sequence[int] | None = None,
        cache_file: str | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.paths = table["path"].tolist()
        self.targets = _targets(table, num_classes)
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
        return {"image": transformed(self.transform, self.read(index)), "target": self.targets[index], "index": index}

    def reseed(self, seed: int) -> None:
        """Albumentations keeps its own RNG; without this every worker would apply identical augmentations."""
        self.transform.set_random_seed(seed)

    def seed_item(self, seed: int) -> None:
        """Give the whole pipeline one fresh generator pair seeded with `seed` (~15 us; albumentations'
        `set_random_seed` takes ~60 us, building two generators per transform)."""
        self._nodes = seed_pipeline(self.transform, seed, self._nodes)


def transformed(transform: A.Compose, image: np.ndarray) -> np.ndarray:
    """`transform` applied to one uint8 HxWxC image, HxWxC out (cv2 drops a single channel axis on some ops)."""
    img = transform(image=image)["image"]
    return img[:, :, None] if img.ndim == 2 else img


def seed_pipeline(transform: A.Compose, seed: int, nodes: list[Any] | None = None) -> list[Any]:
    """Give every node of `transform` one fresh generator pair seeded with `seed`; returns the nodes (collected
    once: pass them back in)."""
    if nodes is None:
        nodes = list(_pipeline_nodes(transform))
    generator, py_random = np.random.Generator(np.random.PCG64(seed)), random.Random(seed)
    for node in nodes:
        node.random_generator, node.py_random = generator, py_random
    return nodes


def _targets(table: pd.DataFrame, num_classes: int | None) -> np.ndarray:
    """(N,) int64 class indices (-1 = unlabelled), or (N, num_classes) float32 multi-hot for a `labels` table."""
    if is_multilabel(table) and num_classes is not None:  # without num_classes: a decode-only pass (cache, checks)
        return multi_hot(table["labels"], num_classes)
    return table["label"].to_numpy(np.int64) if "label" in table else np.full(len(table), -1, np.int64)


def _pipeline_nodes(transform: Any) -> Iterator[Any]:
    """A Compose and every transform inside it (OneOf, SomeOf and nested Compose included)."""
    yield transform
    for child in getattr(transform, "transforms", None) or ():
        yield from _pipeline_nodes(child)
