"""Albumentations pipelines built from the `augment` config group.

One builder serves every preset: `augment/none|basic|strong.yaml` only differ in which keys are set.
Rules that keep the CPU fast: every pipeline first brings the image to the target size (random-resized-crop or
resize), so rotation, colour and noise run on the small image; everything stays uint8 (normalisation happens on
the device, see `imgcls.models.classifier`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2

from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

# The deterministic resize (validation, predict, and the cache, which is built once) shrinks with INTER_AREA
# against aliasing. Training crops are resized bilinearly: INTER_AREA costs ~0.9 ms vs ~0.17 ms per
# 384x512 image, and with the cache on they only ever resize the already-small cached image.
_EVAL_RESIZE = dict(interpolation=cv2.INTER_LINEAR, area_for_downscale="image")
_TRAIN_RESIZE = dict(interpolation=cv2.INTER_LINEAR)


def as_hw(image_size: int | Sequence[int], key: str = "data.image_size") -> tuple[int, int]:
    """`data.image_size` (or `key`) may be an int (square) or [height, width]."""
    hw = [image_size, image_size] if isinstance(image_size, numbers.Integral) else image_size
    if isinstance(hw, str) or len(hw) != 2 or not all(isinstance(v, numbers.Integral) and v > 0 for v in hw):
        shown = list(image_size) if isinstance(image_size, Sequence) and not isinstance(image_size, str) else image_size
        raise ConfigError(f"{key}={shown!r} is not a size: use an int (square, e.g. 224) or [height, width]")
    return int(hw[0]), int(hw[1])


def build_eval_transform(image_size: int | Sequence[int]) -> A.Compose:
    """Validation/test/predict: a deterministic resize only (the crop is pre-processing, done before)."""
    h, w = as_hw(image_size)
    return A.Compose([A.Resize(h, w, **_EVAL_RESIZE)])


def _range(value: float | Sequence[float]) -> tuple[float, float]:
    return (-float(value), float(value)) if isinstance(value, (int, float)) else (float(value[0]), float(value[1]))


def build_train_transform(image_size: int | Sequence[int], augment: Mapping[str, Any] | None,
                          flips: Sequence[str] = ("horizontal",)) -> A.Compose:
    """Training pipeline from the `augment` group; `flips` are the mirrorings that keep labels (from `data.flips`)."""
    aug = dict(augment or {})
    h, w = as_hw(image_size)
    ops: list[A.BasicTransform] = []

    rrc = aug.get("random_resized_crop")
    if rrc:
        ops.append(A.RandomResizedCrop((h, w), scale=tuple(rrc.get("scale", (0.08, 1.0))),
                                       ratio=tuple(rrc.get("ratio", (3 / 4, 4 / 3))), **_TRAIN_RESIZE))
    else:
        ops.append(A.Resize(h, w, **_TRAIN_RESIZE))

    for key, axis, op in (("hflip", "horizontal", A.HorizontalFlip), ("vflip", "vertical", A.VerticalFlip)):
        p = float(aug.get(key) or 0.0)
        if p <= 0:
            continue
        if axis not in flips:
            log.warning(f"augment.{key}={p} ignored: data.flips={list(flips)} says a {axis} mirror changes the label")
            continue
        ops.append(op(p=p))

    affine = aug.get("affine")
    if affine and affine.get("p", 0) > 0:
        ops.append(A.Affine(rotate=_range(affine.get("rotate", 0)), translate_percent=_range(affine.get("translate", 0)),
                            scale=tuple(affine.get("scale", (1.0, 1.0))), shear=_range(affine.get("shear", 0)),
                            border_mode=cv2.BORDER_CONSTANT, fill=0, p=float(affine["p"])))

    jitter = aug.get("color_jitter")
    if jitter and jitter.get("p", 0) > 0:
        ops.append(A.ColorJitter(brightness=jitter.get("brightness", 0.0), contrast=jitter.get("contrast", 0.0),
                                 saturation=jitter.get("saturation", 0.0), hue=jitter.get("hue", 0.0),
                                 p=float(jitter["p"])))

    blur = aug.get("blur")
    if blur and blur.get("p", 0) > 0:
        ops.append(A.GaussianBlur(blur_limit=tuple(blur.get("kernel", (3, 5))), p=float(blur["p"])))

    noise = aug.get("noise")
    if noise and noise.get("p", 0) > 0:
        ops.append(A.GaussNoise(std_range=tuple(noise.get("std", (0.02, 0.08))), p=float(noise["p"])))

    dropout = aug.get("coarse_dropout")
    if dropout and dropout.get("p", 0) > 0:
        ops.append(A.CoarseDropout(num_holes_range=tuple(dropout.get("holes", (1, 4))),
                                   hole_height_range=tuple(dropout.get("size", (0.05, 0.2))),
                                   hole_width_range=tuple(dropout.get("size", (0.05, 0.2))),
                                   fill=0, p=float(dropout["p"])))
    return A.Compose(ops)
