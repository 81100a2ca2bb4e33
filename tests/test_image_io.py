"""Decoding: every PIL mode becomes the requested channels, EXIF orientation is applied, bad files are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgcls.data.image_io import BadImageError, crop_image, is_image_file, load_image


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "CMYK", "I;16", "I", "1"])
@pytest.mark.parametrize("channels", [1, 3])
def test_any_mode_becomes_requested_channels(tmp_path, mode, channels):
    img = Image.new("RGB", (12, 8), (200, 100, 50)).convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16", "I") else "x.png")
    img.save(path)
    arr = load_image(path, channels)
    assert arr.dtype == np.uint8 and arr.shape == (8, 12, channels)


def test_16bit_is_scaled_not_clipped(tmp_path):
    arr16 = np.full((4, 4), 65535 // 2, dtype=np.uint16)
    Image.fromarray(arr16).save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png", 1)
    assert 120 <= int(out[0, 0, 0]) <= 135  # half of full scale, not 255


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "x.png")
    assert load_image(tmp_path / "x.png", 3).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "x.jpg", exif=exif)
    assert load_image(tmp_path / "x.jpg").shape[:2] == (20, 10)


def test_unreadable_image_error_names_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    with pytest.raises(BadImageError, match="broken.jpg"):
        load_image(bad)


def test_hidden_and_non_image_files_are_not_images():
    assert is_image_file("a.JPG") and is_image_file("b.jpeg") and is_image_file("c.png")
    assert not is_image_file("._a.jpg") and not is_image_file("notes.txt") and not is_image_file(".DS_Store")


def test_crops():
    img = np.arange(10 * 20).reshape(10, 20, 1).astype(np.uint8)
    assert crop_image(img, "center", 0.5).shape == (5, 10, 1)
    assert crop_image(img, "center", [4, 6]).shape == (4, 6, 1)
    assert crop_image(img, "bbox", bbox=[2, 1, 12, 5]).shape == (4, 10, 1)
    assert crop_image(img, "none").shape == img.shape
    with pytest.raises(ValueError, match="data.crop.mode"):
        crop_image(img, "diagonal")
