"""The batched device ops of feeding/device_augment.py: a fused warp and the pixel ops, albumentations' meanings.

Each op has `draw(seeds, stream) -> (N, k)` parameters (host, numpy: a pure function of each image's draw seed)
and `apply(batch, params, ...)` on the device, for a whole batch at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def uniforms(seeds: np.ndarray, count: int, stream: int) -> np.ndarray:
    """(N, count) floats in [0, 1): a pure function of each seed, the column and `stream` (splitmix64)."""
    with np.errstate(over="ignore"):
        z = seeds.astype(np.int64).view(np.uint64)[:, None] ^ np.uint64(stream * 0x632BE59BD9B4E019 & (2**64 - 1))
        z = z + (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        z = (z ^ (z >> np.uint64(30))) * _MIX[0]
        z = (z ^ (z >> np.uint64(27))) * _MIX[1]
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _lerp(bounds: Sequence[float], u: np.ndarray) -> np.ndarray:
    return bounds[0] + (bounds[1] - bounds[0]) * u


@dataclass
class Warp:
    """Crop + flips + affine as one inverse map per image: output pixel -> fitted-image pixel.

    `box` is the deterministic crop (h, w) taken from the centre (the evaluation's), `rrc` the random-resized
    crop's (scale, ratio) instead; either is then resized to `size`. Affine: albumentations' Affine about the
    image centre (rotate and shear in degrees, scale and translate_percent per axis).
    """

    fitted: tuple[int, int]
    size: tuple[int, int]
    box: tuple[int, int]
    box_at: tuple[int, int] = (0, 0)  # where the centre crop starts (top, left): data/resize.py's placement
    rrc: tuple[tuple[float, float], tuple[float, float]] | None = None
    hflip: float = 0.0
    vflip: float = 0.0
    affine: dict[str, Any] | None = None
    fill: float = 0.0
    padding: str = "zeros"

    @property
    def identity(self) -> bool:
        """No randomness and no resize: a plain crop (then `crop_box` slices instead of resampling)."""
        return self.rrc is None and not self.hflip and not self.vflip and not self.affine and self.box == self.size

    def crop_box(self) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the deterministic centre crop."""
        return (*self.box_at, *self.box)

    def draw(self, seeds: np.ndarray, stream: int) -> np.ndarray:
        """(N, 10) float32 per seed: the `affine_grid` matrix (6) and the crop's pixel bounds (4)."""
        n, (H, W), (h, w) = len(seeds), self.fitted, self.size
        u = uniforms(seeds, 26, stream)
        if self.rrc is None:
            top, left, ch, cw = self.crop_box()
            y0, x0, ch, cw = (np.full(n, v, np.float64) for v in (top, left, ch, cw))
        else:
            y0, x0, ch, cw = self._random_crop(u[:, :22])
        sign_x = np.where(u[:, 22] < self.hflip, -1.0, 1.0)
        sign_y = np.where(u[:, 23] < self.vflip, -1.0, 1.0)
        inverse, shift = self._affine_inverse(seeds, stream, n)
        # input = centre + D @ F @ inverse @ (p - shift), p in output pixels about the output centre.
        scale = np.stack([cw / w * sign_x, ch / h * sign_y], axis=1)  # D @ F (diagonal)
        a = scale[:, :, None] * inverse  # (N, 2, 2)
        centre = np.stack([x0 + cw / 2 - W / 2, y0 + ch / 2 - H / 2], axis=1)
        b = centre - np.einsum("nij,nj->ni", a, shift)
        to_norm_in = np.array([2.0 / W, 2.0 / H])
        theta_a = to_norm_in[None, :, None] * a * np.array([w / 2.0, h / 2.0])[None, None, :]
        theta = np.concatenate([theta_a, (to_norm_in * b)[:, :, None]], axis=2).reshape(n, 6)
        box = np.stack([x0, y0, x0 + cw - 1, y0 + ch - 1], axis=1)  # the crop's first and last pixel, x then y
        return np.concatenate([theta, box], axis=1).astype(np.float32)

    def _random_crop(self, u: np.ndarray) -> tuple[np.ndarray, ...]:
        """torchvision/albumentations RandomResizedCrop: 10 tries of (area, aspect), else the clamped whole."""
        (H, W), (scale, ratio) = self.fitted, self.rrc
        area = H * W * _lerp(scale, u[:, :10])
        aspect = np.exp(_lerp(np.log(ratio), u[:, 10:20]))
        cw, ch = np.round(np.sqrt(area * aspect)), np.round(np.sqrt(area / aspect))
        ok = (cw >= 1) & (cw <= W) & (ch >= 1) & (ch <= H)
        first = ok.argmax(axis=1)
        rows = np.arange(len(u))
        cw, ch = cw[rows, first], ch[rows, first]
        whole = W / H
        fw, fh = (
            (W, round(W / ratio[0])) if whole < ratio[0] else (round(H * ratio[1]), H) if whole > ratio[1] else (W, H)
        )
        found = ok.any(axis=1)
        cw, ch = np.where(found, cw, fw), np.where(found, ch, fh)
        y0 = np.floor(u[:, 20] * (H - ch + 1))
        x0 = np.floor(u[:, 21] * (W - cw + 1))
        return y0, x0, ch, cw

    def _affine_inverse(self, seeds: np.ndarray, stream: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2, 2) inverse of the affine's linear part and (N, 2) its shift in output pixels (identity: not
        applied)."""
        inverse, shift = np.tile(np.eye(2), (n, 1, 1)), np.zeros((n, 2))
        if not self.affine:
            return inverse, shift
        aff, (h, w) = self.affine, self.size
        u = uniforms(seeds, 8, stream + 1)
        on = u[:, 0] < aff["p"]
        angle = -np.deg2rad(_lerp(aff["rotate"], u[:, 1]))  # albumentations: positive = counter-clockwise
        sx = _lerp(aff["scale"]["x"], u[:, 2])
        sy = sx if aff["keep_ratio"] else _lerp(aff["scale"]["y"], u[:, 3])
        unit_x, unit_y = (w, h) if aff["translate_percent"] else (1, 1)
        tx, ty = _lerp(aff["translate"]["x"], u[:, 4]) * unit_x, _lerp(aff["translate"]["y"], u[:, 5]) * unit_y
        hx = -np.tan(np.deg2rad(_lerp(aff["shear"]["x"], u[:, 6])))  # albumentations' shear directions
        hy = -np.tan(np.deg2rad(_lerp(aff["shear"]["y"], u[:, 7])))
        cos, sin = np.cos(angle), np.sin(angle)
        rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)
        shear = np.stack([np.stack([np.ones(n), hx], -1), np.stack([hy, np.ones(n)], -1)], 1)
        forward = rotation @ shear * np.stack([sx, sy], -1)[:, None, :]
        inverse[on], shift[on] = np.linalg.inv(forward[on]), np.stack([tx, ty], -1)[on]
        return inverse, shift

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, C, h, w): one bilinear resample of the whole batch.

        A point that the affine maps outside the crop gets the border albumentations would give the cropped
        image (`fill`, the nearest edge pixel, or the reflection), not the fitted image's pixels around the crop.
        """
        (H, W), (h, w) = self.fitted, self.size
        grid = F.affine_grid(params[:, :6].view(-1, 2, 3), [x.shape[0], x.shape[1], h, w], align_corners=False)
        scale = grid.new_tensor([W / 2.0, H / 2.0])
        pixels = (grid + 1) * scale - 0.5  # input pixel coordinates (pixel centres at integers)
        low, high = params[:, None, None, 6:8], params[:, None, None, 8:10]  # the crop's first/last pixel, x and y
        if self.padding == "border":
            pixels = torch.minimum(torch.maximum(pixels, low), high)
        elif self.padding == "reflection":
            span = (high - low).clamp(min=1)
            t = torch.remainder(pixels - low, 2 * span)
            pixels = low + torch.where(t > span, 2 * span - t, t)
        out = F.grid_sample(x, (pixels + 0.5) / scale - 1, mode="bilinear", padding_mode="border", align_corners=False)
        if self.padding == "zeros" and self.affine:
            inside = ((pixels >= low - 0.5) & (pixels <= high + 0.5)).all(dim=-1)
            out = torch.where(inside[:, None], out, torch.full_like(out, self.fill))
        return out


_GRAY = np.array([0.299, 0.587, 0.114])


@dataclass
class ColorJitter:
    """Brightness, contrast, saturation as x -> K x + alpha * mean(gray(x)) (one 3x3 K per image), then the hue
    turned in HSV (value and saturation kept), as albumentations' ColorJitter does with its four factors."""

    p: float
    brightness: tuple[float, float]
    contrast: tuple[float, float]
    saturation: tuple[float, float]
    hue: tuple[float, float]
    channels: int = 3

    def draw(self, seeds: np.ndarray, stream: int) -> np.ndarray:
        u = uniforms(seeds, 5, stream)
        on = u[:, 0] < self.p
        b, c = np.where(on, _lerp(self.brightness, u[:, 1]), 1.0), np.where(on, _lerp(self.contrast, u[:, 2]), 1.0)
        if self.channels == 1:
            return np.stack([c * b, (1 - c) * b], axis=1).astype(np.float32)
        s, hue = np.where(on, _lerp(self.saturation, u[:, 3]), 1.0), np.where(on, _lerp(self.hue, u[:, 4]), 0.0)
        # brightness scales, contrast blends with the mean gray, saturation with each pixel's gray: all linear
        sat = s[:, None, None] * np.eye(3) + (1 - s)[:, None, None] * np.ones((3, 1)) * _GRAY
        k = (c * b)[:, None, None] * sat
        return np.concatenate([k.reshape(-1, 9), ((1 - c) * b)[:, None], hue[:, None]], axis=1).astype(np.float32)

    def apply(self, x: torch.Tensor, params: torch.Tensor, seed: int) -> torch.Tensor:
        gray = x if self.channels == 1 else torch.einsum("c,bchw->bhw", x.new_tensor(_GRAY), x)[:, None]
        mean = gray.mean(dim=(1, 2, 3))
        if self.channels == 1:
            return x * params[:, 0, None, None, None] + (params[:, 1] * mean)[:, None, None, None]
        out = torch.einsum("bij,bjhw->bihw", params[:, :9].view(-1, 3, 3), x)
        out = (out + (params[:, 9] * mean)[:, None, None, None]).clamp(0.0, 1.0)
        return _turn_hue(out, params[:, 10]) if self.hue != (0.0, 0.0) else out


def _turn_hue(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """RGB in 0..1 with each image's hue moved by `turn` (a fraction of the circle); HSV value and saturation
    are kept: the hue is computed, shifted and turned back into RGB with the same max and chroma."""
    high, low = x.max(dim=1).values, x.min(dim=1).values
    chroma = high - low
    r, g, b = x.unbind(dim=1)
    safe = chroma.clamp(min=1e-8)
    hue = torch.where(
        high == r, torch.remainder((g - b) / safe, 6), torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.remainder(hue + 6 * turn[:, None, None], 6)
    k = torch.remainder(hue[:, None] + x.new_tensor([5.0, 3.0, 1.0])[None, :, None, None], 6)
    return high[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0.0, 1.0)


@dataclass
class GaussianBlur:
    """An odd kernel size from `blur_limit` and a sigma from `sigma_limit` per image; one grouped convolution."""

    p: float
    blur_limit: tuple[int, int]
    sigma_limit: tuple[float, float]

    def draw(self, seeds: np.ndarray, stream: int) -> np.ndarray:
        u = uniforms(seeds, 3, stream)
        low, high = self.blur_limit[0] | 1, self.blur_limit[1] | 1
        ksize = low + 2 * np.floor(u[:, 1] * ((high - low) // 2 + 1))
        sigma = _lerp(self.sigma_limit, u[:, 2])
        sigma = np.where(sigma > 0, sigma, 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8)  # OpenCV's sigma for a size
        taps = np.arange(high) - high // 2
        kernel = np.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2)) * (np.abs(taps[None]) <= ksize[:, None] // 2)
        kernel = np.where((u[:, 0] < self.p)[:, None], kernel, taps[None] == 0)  # not blurred: a unit impulse
        return (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)

    def apply(self, x: torch.Tensor, params: torch.Tensor, seed: int) -> torch.Tensor:
        b, c, h, w = x.shape
        k = params.shape[1]
        weight = params.repeat_interleave(c, dim=0)  # (B*C, K): each image's kernel for each of its channels
        flat = F.pad(x.reshape(1, b * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
        flat = F.conv2d(flat, weight[:, None, :, None], groups=b * c)
        flat = F.conv2d(flat, weight[:, None, None, :], groups=b * c)
        return flat.view(b, c, h, w)


@dataclass
class GaussNoise:
    """Additive Gaussian noise, std (and mean) drawn per image as fractions of the value range."""

    p: float
    std_range: tuple[float, float]
    mean_range: tuple[float, float]
    per_channel: bool = True

    def draw(self, seeds: np.ndarray, stream: int) -> np.ndarray:
        u = uniforms(seeds, 3, stream)
        on = u[:, 0] < self.p
        return np.stack([on * _lerp(self.std_range, u[:, 1]), on * _lerp(self.mean_range, u[:, 2])], 1).astype(
            np.float32
        )

    def apply(self, x: torch.Tensor, params: torch.Tensor, seed: int) -> torch.Tensor:
        shape = x.shape if self.per_channel else (x.shape[0], 1, *x.shape[2:])
        generator = torch.Generator(device=x.device).manual_seed(seed % 2**63)  # the batch's noise: from its seed
        noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + noise * params[:, 0, None, None, None] + params[:, 1, None, None, None]


@dataclass
class CoarseDropout:
    """Up to `num_holes_range[1]` rectangles per image set to `fill` (sizes: fractions if floats, else pixels)."""

    p: float
    num_holes_range: tuple[int, int]
    hole_height_range: tuple[float, float]
    hole_width_range: tuple[float, float]
    fill: float
    size: tuple[int, int] = (0, 0)

    def draw(self, seeds: np.ndarray, stream: int) -> np.ndarray:
        most, (h, w) = int(self.num_holes_range[1]), self.size
        u = uniforms(seeds, 2 + 4 * most, stream)
        count = np.where(
            u[:, 0] < self.p, self.num_holes_range[0] + np.floor(u[:, 1] * (most - self.num_holes_range[0] + 1)), 0
        )
        holes = u[:, 2:].reshape(-1, most, 4)
        hh = np.maximum(
            1,
            np.round(
                _lerp(self.hole_height_range, holes[..., 0])
                * (h if isinstance(self.hole_height_range[0], float) else 1)
            ),
        )
        hw = np.maximum(
            1,
            np.round(
                _lerp(self.hole_width_range, holes[..., 1]) * (w if isinstance(self.hole_width_range[0], float) else 1)
            ),
        )
        top, left = np.floor(holes[..., 2] * (h - hh + 1)), np.floor(holes[..., 3] * (w - hw + 1))
        active = np.arange(most)[None] < count[:, None]
        bottom, right = np.where(active, top + hh, top), np.where(active, left + hw, left)  # inactive: empty
        return np.stack([top, bottom, left, right], axis=2).reshape(len(u), -1).astype(np.float32)

    def apply(self, x: torch.Tensor, params: torch.Tensor, seed: int) -> torch.Tensor:
        b, _, h, w = x.shape
        box = params.view(b, -1, 4)
        ys, xs = torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype)
        in_y = (ys >= box[..., 0, None]) & (ys < box[..., 1, None])  # (B, holes, h)
        in_x = (xs >= box[..., 2, None]) & (xs < box[..., 3, None])
        hole = (in_y[:, :, :, None] & in_x[:, :, None, :]).any(dim=1)
        return torch.where(hole[:, None], torch.full_like(x, self.fill), x)
