"""How an image becomes the model's input: timm's eval pre-processing (`crop_pct`, `crop_mode`), or a letterbox.

Two steps, so the slow one is done once. `fit` brings the whole (pre-cropped, see `data.crop`) image to the
*fitted size* — `image_size / crop_pct` (timm's `scale_size`) — keeping its aspect: it is what the cache holds.
`eval_ops` then take the model input out of the fitted image: a centre crop of `image_size` (no resampling at
the default cache size). Training crops come from the fitted image too, so train and eval see the same pixels.

    center     shorter side to the fitted size, centre crop          timm crop_mode=center (its default)
    squash     both sides to the fitted size, centre crop            timm crop_mode=squash
    border     longer side to the fitted size, pad, centre crop      timm crop_mode=border
    letterbox  the whole image, padded to the input's aspect         border at crop_pct=1
    stretch    both sides to image_size (the aspect changes)         squash at crop_pct=1

Unset values come from the model's pretrained config (`timm.models.get_pretrained_cfg`), as
`timm.data.resolve_model_data_config` gives them; the resolved choice is stored in the checkpoint (`data_spec`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import timm
from timm.data import DEFAULT_CROP_MODE, DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN

from imgcls.utils.config import fit_channels
from imgcls.utils.errors import ConfigError

MODES = ("center", "squash", "border", "letterbox", "stretch")
_FULL = {"letterbox": "border", "stretch": "squash"}  # modes that are another at crop_pct=1
# Enlarging uses the model's interpolation; shrinking always uses area averaging (anti-aliased, like the PIL
# resize timm runs; cv2's bilinear/bicubic alias when they shrink).
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}
# For a name timm has no pretrained config for: timm's own defaults (bilinear: cv2's cheapest smooth enlargement).
_TIMM_DEFAULTS = {
    "crop_mode": DEFAULT_CROP_MODE,
    "crop_pct": DEFAULT_CROP_PCT,
    "interpolation": "bilinear",
    "mean": IMAGENET_DEFAULT_MEAN,
}


def model_data_config(model_name: str | None) -> dict[str, Any]:
    """crop_mode, crop_pct, interpolation and mean of `model_name`'s pretrained config (timm's defaults if none)."""
    cfg = timm.models.get_pretrained_cfg(model_name) if model_name else None
    found = {k: getattr(cfg, k, None) for k in _TIMM_DEFAULTS} if cfg is not None else {}
    return {k: found.get(k) or v for k, v in _TIMM_DEFAULTS.items()}


@dataclass(frozen=True)
class Resize:
    """A resolved `data.resize` (plain values: it goes into the checkpoint as `data_spec["resize"]`)."""

    mode: str = "stretch"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    fill: tuple[int, ...] = (0,)

    @classmethod
    def resolve(cls, config: Mapping[str, Any] | None, channels: int, mean: Sequence[float] | None = None) -> Resize:
        """`data.resize` with its nulls filled from the pretrained config of `data.resize.model` (the run's
        model); `mean` is `data.mean` (null: the model's), the padding's default."""
        config = dict(config or {})
        unknown = sorted(set(config) - {"mode", "crop_pct", "interpolation", "fill", "model"})
        if unknown:
            raise ConfigError(f"data.resize.{unknown[0]} is not a setting: use mode, crop_pct, interpolation, fill")
        timm_cfg = model_data_config(config.get("model"))
        mode = config.get("mode") or timm_cfg["crop_mode"]
        if mode not in MODES:
            raise ConfigError(f"data.resize.mode='{mode}' is not a mode: use one of {', '.join(MODES)}")
        crop_pct = 1.0 if mode in _FULL else float(config.get("crop_pct") or timm_cfg["crop_pct"])
        if not 0.0 < crop_pct <= 1.0:
            raise ConfigError(f"data.resize.crop_pct={crop_pct} must be in (0, 1] (timm's default is 0.875)")
        interpolation = config.get("interpolation") or timm_cfg["interpolation"]
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"data.resize.interpolation='{interpolation}' is not one of {', '.join(INTERPOLATIONS)}")
        fill = config.get("fill")
        if fill is None:  # the normalisation mean: padding becomes 0 after normalisation (timm's border fill)
            fill = [round(255 * v) for v in fit_channels(mean or timm_cfg["mean"], channels)]
        fill = [fill] if isinstance(fill, (int, float)) else list(fill)
        if len(fill) not in (1, channels) or not all(0 <= v <= 255 for v in fill):
            raise ConfigError(f"data.resize.fill={fill} must be 0..255, one value or one per channel ({channels})")
        return cls(mode, crop_pct, interpolation, tuple(int(v) for v in fill))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Resize:
        """The checkpoint's choice; a checkpoint from before `data.resize` stretched its images."""
        stored = {k: v for k, v in (spec.get("resize") or {}).items() if k != "fitted"}
        return cls(**{**stored, "fill": tuple(stored["fill"])}) if stored else cls()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fill": list(self.fill)}

    def fitted_size(self, size: Sequence[int]) -> tuple[int, int]:
        """timm's `scale_size`: `floor(size / crop_pct)` per side."""
        return math.floor(size[0] / self.crop_pct), math.floor(size[1] / self.crop_pct)

    def fit_op(self, fitted: Sequence[int], fast: bool = False) -> A.ImageOnlyTransform:
        """The whole image -> `fitted` (h, w), aspect kept unless the mode squashes: done once, before the cache.
        `fast` shrinks by less than 2x bilinearly (~0.24 vs ~1.1 ms for 384x384 -> 256x256): for uncached training
        images, decoded every epoch and random-resized-cropped right after; larger factors still average."""
        mode, interpolation = _FULL.get(self.mode, self.mode), INTERPOLATIONS[self.interpolation]
        return Fit(mode, tuple(fitted), interpolation, self.fill, fast)

    def cache_settings(self) -> dict[str, Any]:
        """What the fitted pixels depend on besides the size (the cache's key): the padding only when there is
        padding, so a sweep over models of one crop_pct shares one cache."""
        mode = _FULL.get(self.mode, self.mode)
        return {
            "mode": mode,
            "interpolation": self.interpolation,
            **({"fill": list(self.fill)} if mode == "border" else {}),
        }

    def eval_ops(self, fitted: Sequence[int], size: Sequence[int]) -> list[A.BasicTransform]:
        """A fitted image -> the model input: the centre `crop_pct` (exactly `size` pixels at the default
        fitted size), resized only when the fitted size was changed (`data.cache_size`)."""
        scale = self.fitted_size(size)
        crop = tuple(min(f, round(s * f / sc)) for s, f, sc in zip(size, fitted, scale))
        ops: list[A.BasicTransform] = []
        if crop != tuple(fitted):
            ops.append(CenterCrop(crop))
        if crop != tuple(size):
            ops.append(resize_op(size, self.interpolation))
        return ops


def resize_op(size: Sequence[int], interpolation: str = "bilinear") -> A.Resize:
    """A deterministic resize: area averaging to shrink (no aliasing), the model's interpolation to enlarge."""
    return A.Resize(*size, interpolation=INTERPOLATIONS[interpolation], area_for_downscale="image")


def _resize(img: np.ndarray, h: int, w: int, interpolation: int, fast: bool = False) -> np.ndarray:
    if (h, w) == img.shape[:2]:
        return img
    if h <= img.shape[0] and w <= img.shape[1]:  # shrinking
        flag = cv2.INTER_LINEAR if fast and 2 * h > img.shape[0] and 2 * w > img.shape[1] else cv2.INTER_AREA
    else:
        flag = interpolation
    out = cv2.resize(img, (w, h), interpolation=flag)
    return out[:, :, None] if out.ndim == 2 else out


class Fit(A.ImageOnlyTransform):
    """Resize a whole image to (h, w): `center` crops the longer side, `border` pads it, `squash` stretches."""

    def __init__(
        self, mode: str, size: tuple[int, int], interpolation: int, fill: Sequence[int], fast: bool = False
    ) -> None:
        super().__init__(p=1.0)
        self.mode, self.size, self.interpolation, self.fill = mode, tuple(size), interpolation, tuple(fill)
        self.fast = fast

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        fh, fw = self.size
        h, w = img.shape[:2]
        if self.mode == "squash":
            return _resize(img, fh, fw, self.interpolation, self.fast)
        if self.mode == "center":  # crop the centre of the source first: only the kept part is resampled
            ratio = min(h / fh, w / fw)
            ch, cw = min(h, round(fh * ratio)), min(w, round(fw * ratio))
            top, left = centre_start(h, ch), centre_start(w, cw)
            return _resize(img[top : top + ch, left : left + cw], fh, fw, self.interpolation, self.fast)
        ratio = max(h / fh, w / fw)  # border: the whole image fits, the rest is `fill`
        nh, nw = max(1, min(fh, round(h / ratio))), max(1, min(fw, round(w / ratio)))
        inner = _resize(img, nh, nw, self.interpolation, self.fast)
        out = np.empty((fh, fw, img.shape[2]), np.uint8)
        out[:] = np.asarray(self.fill if len(self.fill) == img.shape[2] else self.fill * img.shape[2], np.uint8)
        top, left = (fh - nh) // 2, (fw - nw) // 2
        out[top : top + nh, left : left + nw] = inner
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mode", "size", "interpolation", "fill", "fast")


def centre_start(size: int, crop: int) -> int:
    """Where a centred crop starts: torchvision's (and so timm's) rounding, not floor division."""
    return int(round((size - crop) / 2.0))


class CenterCrop(A.ImageOnlyTransform):
    """The centre (h, w) of an image, placed as torchvision's `CenterCrop` places it (albumentations' floors)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(p=1.0)
        self.size = tuple(size)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        (h, w), (ch, cw) = img.shape[:2], self.size
        top, left = centre_start(h, ch), centre_start(w, cw)
        return img[top : top + ch, left : left + cw]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size",)
