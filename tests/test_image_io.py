"""Decoding: every PIL mode becomes the requested channels, EXIF orientation is applied, bad files are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgcls.feeding.image_io import BadImageError, crop_box, is_image_file, load_image


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


def _pil_reference(path, channels, reduced=None):
    """What PIL alone decodes (the path every non-JPEG and CMYK JPEG takes): draft, EXIF transpose, channels."""
    from PIL import ImageOps

    from imgcls.feeding.image_io import to_channels

    with Image.open(path) as img:
        if reduced:
            img.draft("L" if channels == 1 else "RGB", reduced)
        img.load()
        return to_channels(ImageOps.exif_transpose(img), channels)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_the_fast_jpeg_decoder_gives_pil_s_pixels_for_every_orientation_and_scale(
    tmp_path, orientation, channels, mode
):
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).resize((320, 192)).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "x.jpg", exif=exif, quality=90)
    assert np.array_equal(load_image(tmp_path / "x.jpg", channels), _pil_reference(tmp_path / "x.jpg", channels))
    # decoded at 1/4 scale (DCT scaling) for a 40-pixel target, as PIL's draft would, not libjpeg's 3/8
    small = load_image(tmp_path / "x.jpg", channels, min_size=(40, 40))
    reference = _pil_reference(tmp_path / "x.jpg", channels, (80, 48))
    assert small.shape == reference.shape and np.abs(small.astype(int) - reference).mean() < 0.01


def test_unreadable_image_error_names_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    with pytest.raises(BadImageError, match="broken.jpg"):
        load_image(bad)


def test_hidden_and_non_image_files_are_not_images():
    assert is_image_file("a.JPG") and is_image_file("b.jpeg") and is_image_file("c.png")
    assert not is_image_file("._a.jpg") and not is_image_file("notes.txt") and not is_image_file(".DS_Store")


def test_crop_boxes():
    assert crop_box(20, 10, "center", 0.5) == (5, 2, 15, 7)
    assert crop_box(20, 10, "center", [4, 6]) == (7, 3, 13, 7)
    assert crop_box(20, 10, "bbox", bbox=[2, 1, 12, 5]) == (2, 1, 12, 5)
    assert crop_box(20, 10, "bbox", bbox=[12, 1, 2, 5]) is None  # inverted box: keep the whole image
    assert crop_box(20, 10, "none") is None
    with pytest.raises(ValueError, match="data.crop.mode"):
        crop_box(20, 10, "diagonal")


def _photo(w: int, h: int) -> Image.Image:
    """A smooth gradient with a red square in the top-left quadrant: survives JPEG and downscaling."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2)
    arr = x.astype(np.uint8)
    arr[: h // 4, : w // 4] = (255, 0, 0)
    return Image.fromarray(arr)


def test_reduced_jpeg_decode_keeps_enough_pixels_and_the_crop(tmp_path):
    _photo(512, 384).save(tmp_path / "x.jpg", quality=95)
    full = load_image(tmp_path / "x.jpg")
    small = load_image(tmp_path / "x.jpg", min_size=(64, 64))
    assert full.shape == (384, 512, 3)
    assert 64 <= small.shape[0] < 384 / 2 and small.shape[0] / small.shape[1] == pytest.approx(0.75, abs=0.01)
    bbox = [0, 0, 128, 96]  # the red square, in full-resolution coordinates
    crop_full = load_image(tmp_path / "x.jpg", crop={"mode": "bbox"}, bbox=bbox)
    crop_small = load_image(tmp_path / "x.jpg", crop={"mode": "bbox"}, bbox=bbox, min_size=(24, 32))
    assert crop_full.shape == (96, 128, 3) and crop_small.shape[0] >= 24
    assert crop_small[..., 0].mean() > 200 and crop_small[..., 1].mean() < 60  # still the red square


def test_crop_follows_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(tmp_path / "x.jpg", exif=exif)  # displayed as 20 wide x 40 high
    assert load_image(tmp_path / "x.jpg", crop={"mode": "center", "size": [30, 10]}).shape == (30, 10, 3)
