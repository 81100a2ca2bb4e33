"""The image operations of timm's augmentation policies (data/policies.py), on uint8 HxWxC arrays.

Each takes its argument in its own units (degrees, a blend factor, bits...) and is one `cv2.LUT`,
`cv2.warpAffine` or `cv2.addWeighted` on the already-small image; each agrees with timm's PIL op
(`timm/data/auto_augment.py`) to rounding (tests/test_policies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from timm.data import IMAGENET_DEFAULT_MEAN

# timm's fill for uncovered pixels: the ImageNet mean, (124, 116, 104) (0 after timm's normalisation)
FILL = tuple(round(255 * v) for v in IMAGENET_DEFAULT_MEAN)
_IDENTITY = np.arange(256, dtype=np.float32)


def fill_for(channels: int) -> tuple[int, ...]:
    """FILL for an image of `channels` channels: grayscale gets the mean's grey."""
    return FILL if channels == 3 else (sum(FILL) // 3,) * channels


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(table, 0, 255).astype(np.uint8)).reshape(img.shape)


def _per_channel(img: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([fn(np.ascontiguousarray(img[..., c])) for c in range(img.shape[-1])], axis=-1)


def _autocontrast(img: np.ndarray, _: Any = None) -> np.ndarray:
    def stretch(ch: np.ndarray) -> np.ndarray:
        lo, hi = int(ch.min()), int(ch.max())
        return ch if hi <= lo else _lut(ch, (_IDENTITY - lo) * (255.0 / (hi - lo)))

    return _per_channel(img, stretch)


def _equalize(ch: np.ndarray) -> np.ndarray:
    """PIL's ImageOps.equalize (what timm runs; cv2.equalizeHist spreads the levels differently)."""
    hist = np.bincount(ch.ravel(), minlength=256)
    step = (int(hist.sum()) - int(hist[np.flatnonzero(hist)[-1]])) // 255
    if not step:
        return ch
    return _lut(ch, (step // 2 + np.concatenate([[0], np.cumsum(hist)[:-1]])) // step)


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.shape[-1] == 3 else img[..., 0]


def _blend(img: np.ndarray, degenerate: np.ndarray, factor: float) -> np.ndarray:
    """PIL's ImageEnhance: degenerate + factor * (img - degenerate), saturated to uint8."""
    return cv2.addWeighted(img, factor, degenerate, 1.0 - factor, 0.0).reshape(img.shape)


def _color(img: np.ndarray, factor: float) -> np.ndarray:
    return img if img.shape[-1] == 1 else _blend(img, cv2.cvtColor(_gray(img), cv2.COLOR_GRAY2RGB), factor)


def _contrast(img: np.ndarray, factor: float) -> np.ndarray:
    mean = float(_gray(img).mean())
    return _lut(img, mean + factor * (_IDENTITY - mean))


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0  # PIL's ImageFilter.SMOOTH


def _sharpness(img: np.ndarray, factor: float) -> np.ndarray:
    smooth = cv2.filter2D(img, -1, _SMOOTH).reshape(img.shape)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = img[0], img[-1], img[:, 0], img[:, -1]  # PIL keeps the border
    return _blend(img, smooth, factor)


def _warp(img: np.ndarray, matrix: list[list[float]]) -> np.ndarray:
    """An affine map from output to input pixels (PIL's convention), uncovered pixels filled with FILL."""
    h, w = img.shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    out = cv2.warpAffine(img, np.float32(matrix), (w, h), flags=flags, borderValue=fill_for(img.shape[-1]))
    return out.reshape(img.shape)


def _rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    return _warp(img, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -degrees, 1.0).tolist())


OPS: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {
    "Identity": lambda img, _: img,
    "AutoContrast": _autocontrast,
    "Equalize": lambda img, _: _per_channel(img, _equalize),
    "Invert": lambda img, _: cv2.bitwise_not(img).reshape(img.shape),
    "Posterize": lambda img, bits: img & np.uint8((0xFF << (8 - int(bits))) & 0xFF),
    "Solarize": lambda img, thresh: _lut(img, np.where(_IDENTITY >= thresh, 255 - _IDENTITY, _IDENTITY)),
    "SolarizeAdd": lambda img, add: _lut(img, np.where(_IDENTITY < 128, _IDENTITY + add, _IDENTITY)),
    "Brightness": lambda img, factor: _lut(img, _IDENTITY * factor),
    "Color": _color,
    "Contrast": _contrast,
    "Sharpness": _sharpness,
    "Rotate": _rotate,
    "ShearX": lambda img, s: _warp(img, [[1, s, 0], [0, 1, 0]]),
    "ShearY": lambda img, s: _warp(img, [[1, 0, 0], [s, 1, 0]]),
    "TranslateX": lambda img, frac: _warp(img, [[1, 0, frac * img.shape[1]], [0, 1, 0]]),
    "TranslateY": lambda img, frac: _warp(img, [[1, 0, 0], [0, 1, frac * img.shape[0]]]),
}
