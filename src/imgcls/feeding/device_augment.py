"""Augmentation of whole batches on the device, each image with its own random parameters.

What `data.placement=device` (feeding/resident.py) runs instead of the per-image albumentations pipeline. It is
translated from that pipeline (data/device_transforms.py), so a preset means the same thing on both paths:
RandomResizedCrop (or the evaluation's centre crop), HorizontalFlip, VerticalFlip, Affine, ColorJitter,
GaussianBlur, GaussNoise and CoarseDropout, with albumentations' argument meanings.

Written here rather than taken from kornia for two reasons: every image's parameters must be a pure function of
its draw seed (the `EpochSampler` contract: exact resume, any DDP layout), which kornia's global-RNG draws are
not; and crop, flips and affine are fused into one inverse map, so a batch is resampled once (`grid_sample`)
instead of once per op. Colour jitter is one 3x3 matrix per image. Differences from the host pipeline, by
design: geometry always runs first (then the other ops in the listed order), colour jitter applies brightness,
contrast, saturation, hue in that order (albumentations shuffles them), and
values are clipped once at the end. Parameters are drawn on the host, once per epoch for all images (`draw`);
`__call__` never reads a device value back, so it never waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from imgcls.feeding.device_ops import CoarseDropout, ColorJitter, GaussianBlur, GaussNoise, Warp

PixelOp = ColorJitter | GaussianBlur | GaussNoise | CoarseDropout


@dataclass
class DeviceAugment:
    """The warp, then the pixel ops; `draw` -> per-image parameters (host), `__call__` -> the batch (device)."""

    warp: Warp
    ops: list[PixelOp] = field(default_factory=list)

    def __post_init__(self) -> None:
        probe = np.zeros(1, np.int64)  # each op's parameter count, from one draw
        self.cuts = np.cumsum([0, 10] + [op.draw(probe, 0).shape[1] for op in self.ops]).tolist()

    def draw(self, seeds: np.ndarray) -> np.ndarray:
        """(N, P) float32 parameters (each op's columns in turn) for the images whose draw seeds are `seeds`."""
        parts = [self.warp.draw(seeds, 0)] + [op.draw(seeds, 10 * (i + 1)) for i, op in enumerate(self.ops)]
        return np.concatenate(parts, axis=1)

    def __call__(self, images: torch.Tensor, params: torch.Tensor, seed: int) -> torch.Tensor:
        """uint8 (B, C, H, W) fitted images -> float (B, C, h, w) in 0..1 (the model's `normalize` takes both).
        `seed` (the batch's first draw seed) seeds the noise fields, the one draw made on the device."""
        cuts = self.cuts
        if self.warp.identity:  # no crop, flip or affine drawn: the centre crop, by slicing
            top, left, h, w = self.warp.crop_box()
            x = images[:, :, top : top + h, left : left + w].float() / 255.0
        else:
            x = self.warp.apply(images.float() / 255.0, params[:, : cuts[1]])
        for op, start, stop in zip(self.ops, cuts[1:-1], cuts[2:]):
            x = op.apply(x, params[:, start:stop], seed)
        return x.clamp_(0.0, 1.0)
