"""Decode any image file into the uint8 array the pipeline expects.

One function serves training, validation, the cache (later) and predict, so an image looks the same
everywhere: EXIF orientation applied, any PIL mode (L, LA, RGBA, P, CMYK, I;16, ...) turned into 1 or 3 channels.
"""

from __future__ import annotations

import errno
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from imgcls.utils.errors import ConfigError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# Transparent pixels are composited onto white: the usual background of scans, icons and product shots.
_BACKGROUND = 255

# The decompression-bomb guard is PIL's own: Image.open raises above 2 x Image.MAX_IMAGE_PIXELS, before decoding
# anything. The default limit is PIL's default error threshold, so what PIL opens today stays readable; PIL's
# warning (at half the threshold) is silenced: either the image is over the limit and listed as unreadable, or not.
DEFAULT_MAX_IMAGE_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
_max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class BadImageError(ConfigError):
    """An image file that cannot be decoded; the message names the file and the reason (an input to fix, so
    the command line shows it as one line, like a wrong setting)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image '{path}': {reason}")


def set_max_image_pixels(limit: int | None) -> None:
    """Images with more pixels are unreadable, in this process and the loader workers it forks (None = no limit)."""
    global _max_pixels
    _max_pixels = int(limit) if limit else None
    Image.MAX_IMAGE_PIXELS = -(-_max_pixels // 2) if _max_pixels else None  # PIL errors above twice this


def _reason(path: str | os.PathLike, exc: BaseException) -> str:
    """Why `path` could not be decoded, in words a user can act on (the exception follows in brackets)."""
    raw = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Image.DecompressionBombError):
        return (
            f"exceeds the pixel limit of {_max_pixels or 0:,} (decompression-bomb guard; if the image is "
            f"genuine, raise data.max_image_pixels, null = no limit) ({raw})"
        )
    if isinstance(exc, FileNotFoundError):
        return f"file not found (deleted, or a broken symlink) ({raw})"
    if isinstance(exc, PermissionError):
        return f"no permission to read the file ({raw})"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return f"symlink loop ({raw})"
    if isinstance(exc, UnidentifiedImageError):
        try:
            empty = os.path.getsize(path) == 0
        except OSError:
            empty = False
        return "empty file (0 bytes)" if empty else "not an image, or a format PIL cannot read (unidentified)"
    if "truncated" in str(exc) or "Premature end" in str(exc):  # PIL's words, libjpeg-turbo's (simplejpeg)
        return f"truncated image data ({raw})"
    return f"corrupt or undecodable image ({raw})"


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


def crop_box(
    width: int, height: int, mode: str | None, size: float | Sequence | None = None, bbox: Sequence[float] | None = None
) -> tuple[int, int, int, int] | None:
    """The pre-processing crop as (x0, y0, x1, y1) in full-resolution pixels, or None for no crop.

    `center` takes a fraction (0.875) or [h, w] pixels; `bbox` takes the sample's (x0, y0, x1, y1).
    """
    if not mode or mode == "none":
        return None
    if mode == "center":
        if size is None:
            raise ValueError("data.crop.size is required for crop mode 'center' (a fraction like 0.875 or [h, w])")
        if isinstance(size, (int, float)) and float(size) <= 1.0:
            ch, cw = round(height * float(size)), round(width * float(size))
        else:
            ch, cw = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        ch, cw = min(ch, height), min(cw, width)
        top, left = (height - ch) // 2, (width - cw) // 2
        return left, top, left + cw, top + ch
    if mode == "bbox":
        if bbox is None:
            raise ValueError("crop mode 'bbox' needs the data.crop.columns (x0, y0, x1, y1) in the manifest")
        x0, y0, x1, y1 = (int(round(float(v))) for v in bbox)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if x1 <= x0 or y1 <= y0:
            return None  # an empty or inverted box keeps the whole image rather than crashing an epoch
        return x0, y0, x1, y1
    raise ValueError(f"data.crop.mode must be one of none|center|bbox, got '{mode}'")


_ORIENTATION = 0x0112  # EXIF tag; 1 = upright, 5-8 swap width and height


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # a corrupt EXIF block must not make a readable image unreadable
        return 1


def _decode_jpeg(
    data: bytes, mode: str, channels: int, size: tuple[int, int], reduced: tuple[int, int] | None
) -> np.ndarray:
    """A baseline/progressive RGB or gray JPEG decoded by libjpeg-turbo through simplejpeg: the same pixels as
    PIL's decoder (both libjpeg-turbo, accurate IDCT) at 2.6x its images/s on the bench's 384x512 photos.
    `reduced` (w, h): decode at the power-of-2 DCT scale PIL's `draft` would choose, not libjpeg's other n/8
    scales, so cached pixels do not depend on the decoder. Strict: a truncated or corrupt file raises, as PIL
    does."""
    width, height = size
    if reduced is not None:
        factor = 1
        while (
            factor < 8
            and math.ceil(width / (factor * 2)) >= reduced[0]
            and math.ceil(height / (factor * 2)) >= reduced[1]
        ):
            factor *= 2
        reduced = (math.ceil(width / factor), math.ceil(height / factor))
    extra = {"min_width": reduced[0], "min_height": reduced[1]} if reduced is not None else {}
    arr = simplejpeg.decode_jpeg(data, colorspace="GRAY" if mode == "L" else "RGB", **extra)
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)  # HxWxC whatever the colorspace
    if mode == "L":  # a gray JPEG: as is, or repeated into 3 channels as PIL's convert("RGB") does
        return arr if channels == 1 else np.repeat(arr, 3, axis=2)
    if channels == 1:  # gray from colour with PIL's own weights (not the file's luma), as the PIL path gives
        return np.asarray(Image.fromarray(arr).convert("L"))[:, :, None]
    return arr


# EXIF orientation -> the numpy transform PIL's exif_transpose applies (2..8; 1 = upright)
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    turn = _ORIENT.get(orientation)
    return arr if turn is None else np.ascontiguousarray(turn(arr))


def load_image(
    path: str | os.PathLike,
    channels: int = 3,
    crop: dict | None = None,
    bbox: Sequence[float] | None = None,
    min_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read `path` as uint8 HxWxC: EXIF orientation applied, then the pre-processing crop.

    Crop coordinates refer to the displayed (EXIF-rotated) full-resolution image. `min_size` (h, w) is the
    size the crop will be resized to: when that is at most half the crop, JPEGs are decoded at 1/2, 1/4 or 1/8
    scale (libjpeg's DCT scaling, several times faster) and the crop box is scaled to match.
    Any failure becomes a `BadImageError` naming the file and the reason; so does an image with more pixels
    than `set_max_image_pixels` allows (PIL checks the header before decoding anything).
    """
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {channels}")
    crop = crop or {}
    try:
        with Image.open(path) as img:
            orientation = _orientation(img)
            full_w, full_h = (img.height, img.width) if orientation in (5, 6, 7, 8) else img.size
            box = crop_box(full_w, full_h, crop.get("mode"), crop.get("size"), bbox)
            reduced = None
            if min_size is not None and img.format == "JPEG":
                bw, bh = (box[2] - box[0], box[3] - box[1]) if box else (full_w, full_h)
                scale = max(min_size[0] / bh, min_size[1] / bw)
                if scale <= 0.5:  # the smallest DCT scale (1/2, 1/4, 1/8) that still covers the requested size
                    reduced = (math.ceil(img.width * scale), math.ceil(img.height * scale))
            if img.format == "JPEG" and img.mode in ("RGB", "L"):  # the common case, ~2.6x faster than PIL's
                arr = _orient(_decode_jpeg(Path(path).read_bytes(), img.mode, channels, img.size, reduced), orientation)
            else:
                if reduced is not None:
                    img.draft("L" if channels == 1 else "RGB", reduced)
                img.load()
                if orientation != 1:  # transposing copies the image: only when the camera says so
                    img = ImageOps.exif_transpose(img)
                arr = to_channels(img, channels)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        raise BadImageError(path, _reason(path, exc)) from exc
    if box is None:
        return arr
    h, w = arr.shape[:2]
    sx, sy = w / full_w, h / full_h  # 1.0 unless decoded at reduced scale
    x0, y0 = int(box[0] * sx), int(box[1] * sy)
    x1, y1 = max(x0 + 1, round(box[2] * sx)), max(y0 + 1, round(box[3] * sy))
    return arr[y0:y1, x0:x1]
