"""Decode any image file into the uint8 array the pipeline expects.

One function serves training, validation, the cache (later) and predict, so an image looks the same
everywhere: EXIF orientation applied, any PIL mode (L, LA, RGBA, P, CMYK, I;16, ...) turned into 1 or 3 channels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# Transparent pixels are composited onto white: the usual background of scans, icons and product shots.
_BACKGROUND = 255


class BadImageError(RuntimeError):
    """An image file that cannot be decoded; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image '{path}': {reason}")


def is_image_file(name: str) -> bool:
    """Image by extension, never a hidden file (macOS `._x.jpg` resource forks look like JPEGs but are not)."""
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _to_uint8(img: Image.Image) -> Image.Image:
    """High-bit-depth modes (I;16, I, F) scaled to 8 bits by their real range, not clipped."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return img
    arr = arr.astype(np.float32)
    if img.mode.startswith("I;16") or (arr.max(initial=0) > 255 and arr.max() <= 65535):
        arr = arr / 257.0
    elif img.mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (_BACKGROUND,) * 3 + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_channels(img: Image.Image, channels: int) -> np.ndarray:
    """PIL image of any mode -> uint8 array HxWxC with C = `channels` (1 or 3)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_uint8(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        img = _flatten_alpha(img)
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        img = img.convert(target)  # CMYK, P, 1, YCbCr ... handled by PIL's own converters
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Read `path` as uint8 HxWxC, EXIF orientation applied; any failure becomes a `BadImageError` naming the file."""
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            return to_channels(img, channels)
    except BadImageError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        raise BadImageError(path, f"{type(exc).__name__}: {exc}") from exc


def crop_image(img: np.ndarray, mode: str | None, size: float | Sequence | None = None,
               bbox: Sequence[float] | None = None) -> np.ndarray:
    """Pre-processing crop before any resize: `center` (fraction or [h, w] pixels) or `bbox` (x0, y0, x1, y1)."""
    if not mode or mode == "none":
        return img
    h, w = img.shape[:2]
    if mode == "center":
        if size is None:
            raise ValueError("data.crop.size is required for crop mode 'center' (a fraction like 0.875 or [h, w])")
        if isinstance(size, (int, float)) and float(size) <= 1.0:
            ch, cw = round(h * float(size)), round(w * float(size))
        else:
            ch, cw = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        ch, cw = min(ch, h), min(cw, w)
        top, left = (h - ch) // 2, (w - cw) // 2
        return img[top:top + ch, left:left + cw]
    if mode == "bbox":
        if bbox is None:
            raise ValueError("crop mode 'bbox' needs the data.crop.columns (x0, y0, x1, y1) in the manifest")
        x0, y0, x1, y1 = (int(round(float(v))) for v in bbox)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(w, x1), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            return img  # an empty or inverted box keeps the whole image rather than crashing an epoch
        return img[y0:y1, x0:x1]
    raise ValueError(f"data.crop.mode must be one of none|center|bbox, got '{mode}'")
