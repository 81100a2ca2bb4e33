"""The uint8 batches a deployed model is fed: each image through its checkpoint's evaluation pre-processing
(data/transforms.py::spec_eval_transform), exactly as predict feeds the checkpoint itself."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from imgcls.data.dataset import ImageDataset
from imgcls.data.transforms import spec_eval_transform
from imgcls.feeding.loaders import make_loader


def eval_batches(
    spec: Mapping[str, Any], table: pd.DataFrame, loader: Mapping[str, Any]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 NCHW images, their row positions in `table`) per batch."""
    transform, fitted = spec_eval_transform(spec)
    dataset = ImageDataset(table, transform, spec["channels"], spec["crop"], decode_size=fitted)
    for batch in make_loader(dataset, loader, train=False):
        yield batch["image"].numpy(), np.asarray(batch["index"])
