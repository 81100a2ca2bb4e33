"""Photo-like JPEGs for benchmarks: smooth shading, soft shapes and sensor noise, like real photos to a decoder.

`python -m imgcls.extras.synth_photos --out DIR --images 600 --width 512 --height 384` writes DIR/<class>/<n>.jpg.
Flat synthetic images decode far faster than photos; noise and texture keep the JPEG decode cost realistic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("ellipse", "box", "stripe")


def photo(rng: np.random.Generator, kind: str, width: int, height: int) -> np.ndarray:
    """One RGB uint8 image: a lit gradient background, a soft-edged shape, texture and noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    tilt = rng.uniform(-0.25, 0.25, 2).astype(np.float32)
    img = base[None, None, :] + (xx * tilt[0] + yy * tilt[1])[..., None]
    img += 18 * np.sin(xx / rng.uniform(6, 20) + yy / rng.uniform(6, 20))[..., None]  # texture
    mask = np.zeros((height, width), np.float32)
    cx, cy = rng.integers(width // 4, 3 * width // 4), rng.integers(height // 4, 3 * height // 4)
    sx, sy = rng.integers(width // 10, width // 4), rng.integers(height // 10, height // 4)
    if kind == "ellipse":
        cv2.ellipse(mask, (int(cx), int(cy)), (int(sx), int(sy)), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    elif kind == "box":
        cv2.rectangle(mask, (int(cx - sx), int(cy - sy)), (int(cx + sx), int(cy + sy)), 1.0, -1)
    else:
        cv2.line(mask, (0, int(cy)), (width - 1, int(cy + rng.integers(-sy, sy))), 1.0, int(max(3, sy // 3)))
    mask = cv2.GaussianBlur(mask, (0, 0), 3)[..., None]
    img = img * (1 - mask) + (255 - base)[None, None, :] * mask
    img += rng.normal(0, 8, img.shape).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def make_photo_folder(
    out: str | Path, images: int = 600, width: int = 512, height: int = 384, seed: int = 0, quality: int = 90
) -> Path:
    """Write `images` JPEGs into out/<class>/ (balanced); skipped when the folder is already complete."""
    out = Path(out)
    marker = out / f".complete-{images}-{width}x{height}-{seed}"
    if marker.exists():
        return out
    rng = np.random.default_rng(seed)
    for i in range(images):
        kind = CLASSES[i % len(CLASSES)]
        (out / kind).mkdir(parents=True, exist_ok=True)
        rgb = photo(rng, kind, width, height)
        cv2.imwrite(str(out / kind / f"{i:05d}.jpg"), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    marker.touch()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_photo_folder(args.out, args.images, args.width, args.height, args.seed))


class PhotoSource:
    """`data=photos`: a generated folder of photo-like JPEGs (made once under `root`), read as an ImageFolder."""

    def __init__(self, root: str, images: int = 600, width: int = 512, height: int = 384, seed: int = 0) -> None:
        self.root, self.images, self.width, self.height, self.seed = root, images, width, height, seed

    def prepare(self) -> None:
        make_photo_folder(self.root, self.images, self.width, self.height, self.seed)

    def discover(self):  # noqa: ANN201  (a sources.Discovered)
        from imgcls.data.sources import FolderSource

        return FolderSource(self.root).discover()


if __name__ == "__main__":
    main()
