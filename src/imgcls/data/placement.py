"""`data.placement`: where training batches are made. host = loader workers (feeding/loaders.py); device = the
pre-processing cache held on the training device and whole batches augmented there (feeding/resident.py).

`DevicePlacement` is the DataModule's device half: the training pipeline translated for the device (an op
without a device version stops the run at start-up), the images moved there once, and the loaders. Opt-in, not
chosen automatically: the device ops match albumentations' closely but not bit for bit (see
feeding/device_augment.py), so a run's augmentation never changes behind the user's back; the log suggests it
when the cache is small.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch

from imgcls.data.dataset import ImageDataset
from imgcls.data.device_transforms import device_augment
from imgcls.data.resize import CenterCrop, Resize, centre_start
from imgcls.feeding.resident import ResidentLoader, load_resident
from imgcls.resume.sampler import EpochSampler
from imgcls.utils.errors import DataConfigError

PLACEMENTS = ("host", "device")
SMALL_DATA_BYTES = 2**30  # a cache this small is worth holding on the device: the log says so


def check_placement(value: str, cache: bool) -> str:
    if value not in PLACEMENTS:
        raise DataConfigError(f"data.placement={value!r} is not an option: use host or device")
    if value == "device" and not cache:
        raise DataConfigError(
            "data.placement=device holds the pre-processed cache on the device: set data.cache=true (with a "
            "data.cache_dir) or use data.placement=host"
        )
    return value


def augment_key(augment: Mapping[str, Any]) -> Callable[[Any], str]:
    """op -> the `augment.<key>` whose `_target_` built it (for errors about it)."""

    def name_of(op: Any) -> str:
        name = type(op).__name__
        for key, spec in augment.items():
            if isinstance(spec, Mapping) and str(spec.get("_target_", "")).rsplit(".", 1)[-1] == name:
                return f"augment.{key}"
        return f"augment ({name})"

    return name_of


class DevicePlacement:
    """data.placement=device for one DataModule: `augment` (the translated training pipeline), `eval_crop` and the
    resident images, loaded on first use onto the device the loaders are asked for."""

    def __init__(
        self,
        train_transform: A.Compose,
        augment: Mapping[str, Any],
        fitted: Sequence[int],
        image_size: Sequence[int],
        resize: Resize,
        channels: int,
    ) -> None:
        self.augment = device_augment(train_transform, fitted, channels, augment_key(augment))
        self.eval_crop = _eval_crop(resize, tuple(fitted), tuple(image_size))
        self._images: torch.Tensor | None = None

    def loader(
        self,
        cache_file: Any,
        device: torch.device,
        dataset: ImageDataset,
        batch_size: int,
        *,
        sampler: EpochSampler | None = None,
        start: tuple[int, int] | None = None,
        rank: int = 0,
        world: int = 1,
        drop_last: bool = False,
    ) -> ResidentLoader:
        """Training (with `sampler`): augmented on the device; evaluation: the centre crop, each rank a share. The
        cache's images are moved to `device` on first use (again only if the device changes)."""
        if self._images is None or self._images.device != device:
            self._images = load_resident(cache_file, device)
        train = sampler is not None
        return ResidentLoader(
            self._images,
            dataset.rows,
            dataset.targets,
            batch_size,
            augment=self.augment if train else None,
            sampler=sampler,
            crop=None if train else self.eval_crop,
            rank=rank,
            world_size=world,
            drop_last=drop_last,
            start=start,
        )

    def samples(self, dataset: ImageDataset, picks: np.ndarray, seed: int) -> list[dict[str, Any]]:
        """Training images `picks` through the device pipeline, as uint8 HxWxC (for augmented_samples.png)."""
        seeds = np.random.default_rng(seed).integers(0, 2**63 - 1, size=len(picks), dtype=np.int64)
        images = torch.from_numpy(np.stack([dataset.read(int(i)) for i in picks])).permute(0, 3, 1, 2)
        out = self.augment(images, torch.from_numpy(self.augment.draw(seeds)), int(seeds[0]))
        out = (out * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [{"image": image, "target": dataset.targets[i]} for image, i in zip(out, picks)]


def _eval_crop(resize: Resize, fitted: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The evaluation's centre crop of a cached image as (top, left, h, w), when that is all evaluation does (the
    default); None when it also resizes (a changed data.cache_size): evaluation then stays on the host, so its
    pixels stay exactly predict's."""
    ops = resize.eval_ops(fitted, size)
    if any(not isinstance(op, CenterCrop) for op in ops):
        return None
    h, w = ops[0].size if ops else fitted
    return centre_start(fitted[0], h), centre_start(fitted[1], w), h, w
