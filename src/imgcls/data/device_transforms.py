"""The training pipeline of data/transforms.py, translated for `data.placement=device` (feeding/resident.py).

The ops keep albumentations' meanings (the same config keys and ranges); which ones exist on the device and how
they differ from the host's is said in feeding/device_augment.py. An op without a device version stops the run
at start-up, naming its `augment.<key>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A

from imgcls.data.resize import CenterCrop, centre_start
from imgcls.feeding.device_augment import DeviceAugment, PixelOp
from imgcls.feeding.device_ops import CoarseDropout, ColorJitter, GaussianBlur, GaussNoise, Warp
from imgcls.utils.errors import ConfigError

SUPPORTED = (
    "RandomResizedCrop, HorizontalFlip, VerticalFlip, Affine, ColorJitter, GaussianBlur, GaussNoise, CoarseDropout"
)
_BORDERS = {0: "zeros", 1: "border", 2: "reflection", 4: "reflection"}  # cv2.BORDER_* -> grid_sample padding


def device_augment(
    pipeline: A.Compose, fitted: Sequence[int], channels: int, name_of: Callable[[Any], str]
) -> DeviceAugment:
    """The device version (feeding/device_augment.py) of a training pipeline that data/transforms.py built for
    cached (fitted) images; `name_of(op)` names an op's config key for the error when it has no device version."""
    fitted = (int(fitted[0]), int(fitted[1]))
    box, size, rrc = fitted, None, None
    geometry: dict[str, Any] = {}
    ops: list[PixelOp] = []
    for op in pipeline.transforms:
        if isinstance(op, CenterCrop):
            box = tuple(op.size)
        elif isinstance(op, A.RandomResizedCrop):
            rrc, size = (tuple(op.scale), tuple(op.ratio)), tuple(op.size)
        elif isinstance(op, A.Resize):
            size = (op.height, op.width)
        elif isinstance(op, A.HorizontalFlip | A.VerticalFlip):
            geometry["hflip" if isinstance(op, A.HorizontalFlip) else "vflip"] = float(op.p)
        elif isinstance(op, A.Affine):
            geometry.update(_affine(op, name_of(op)))
        elif isinstance(op, A.ColorJitter):
            ops.append(ColorJitter(op.p, op.brightness, op.contrast, op.saturation, op.hue, channels))
        elif isinstance(op, A.GaussianBlur):
            ops.append(GaussianBlur(op.p, tuple(op.blur_limit), tuple(op.sigma_limit)))
        elif isinstance(op, A.GaussNoise) and op.noise_scale_factor == 1:
            ops.append(GaussNoise(op.p, tuple(op.std_range), tuple(op.mean_range), bool(op.per_channel)))
        elif isinstance(op, A.CoarseDropout) and isinstance(op.fill, int | float):
            ops.append(
                CoarseDropout(op.p, op.num_holes_range, op.hole_height_range, op.hole_width_range, op.fill / 255)
            )
        else:
            raise ConfigError(
                f"{name_of(op)} ({type(op).__name__}) has no device version: data.placement=device runs "
                f"{SUPPORTED} (numeric fill, noise_scale_factor=1); remove it or use data.placement=host"
            )
    size = tuple(size or box)
    for op in ops:
        if isinstance(op, CoarseDropout):
            op.size = size
    at = (centre_start(fitted[0], box[0]), centre_start(fitted[1], box[1]))  # where data/resize.py's crop starts
    return DeviceAugment(Warp(fitted, size, tuple(box), at, rrc, **geometry), ops)


def _affine(op: A.Affine, key: str) -> dict[str, Any]:
    """albumentations Affine's drawn ranges -> Warp's `affine`, `fill`, `padding`; what it cannot do is an error."""
    if op.fit_output or op.balanced_scale or op.border_mode not in _BORDERS:
        raise ConfigError(
            f"{key}: data.placement=device runs Affine with border_mode 0, 1, 2 or 4 and without fit_output or "
            "balanced_scale: change it or use data.placement=host"
        )
    if not isinstance(op.fill, int | float):
        raise ConfigError(f"{key}.fill={op.fill!r}: data.placement=device takes one number (0..255)")
    affine = dict(
        p=float(op.p),
        rotate=tuple(op.rotate),
        scale=op.scale,
        translate=op.translate_percent or op.translate_px,  # fractions of the size, or pixels
        translate_percent=op.translate_percent is not None,
        shear=op.shear,
        keep_ratio=bool(op.keep_ratio),
    )
    return {"affine": affine, "fill": float(op.fill) / 255.0, "padding": _BORDERS[op.border_mode]}
