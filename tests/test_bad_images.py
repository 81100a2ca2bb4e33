"""Unreadable images are found once before the split, skipped and listed (or stop the run); odd but readable
images (CMYK, alpha, palette, 16-bit, grayscale, EXIF-rotated) are kept and decoded right."""

from __future__ import annotations

import builtins
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FAST, draw_shape, run_main, run_task
from PIL import Image

from imgcls.data import BadImageError, FolderSource, ImageDataModule, ImageDataset, load_image
from imgcls.feeding.image_io import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels

CLASSES = ("bar", "circle", "square")


def _huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height pixels, with almost no data: costs nothing to write."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # IHDR CRC
    path.write_bytes(bytes(data))


def _exif_rotated(path: Path) -> None:
    """Stored 40 wide x 20 high, left half red, right half blue; EXIF 6 = rotate 90 degrees clockwise to
    display: displayed 20 wide x 40 high, red on top."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, quality=95, exif=exif)


def make_tree(root: Path, per_class: int = 6) -> dict[str, list[Path]]:
    """3 classes x `per_class` good images, plus every odd-but-readable kind and every unreadable kind.

    Returns {"good": [...], "odd": [...], "bad": [...], "loop": [...]}; "bad" is in discovery order and includes
    the symlink loop (FolderSource keeps symlinks so the check can list them); "loop" is that link alone.
    """
    rng = np.random.default_rng(0)
    files: dict[str, list[Path]] = {"good": [], "odd": [], "bad": [], "loop": []}
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / name / f"{i:03d}.{'jpg' if i % 2 else 'png'}"
            draw_shape(name, rng, size=32).save(path)
            files["good"].append(path)
    bar, circle, square = (root / c for c in CLASSES)
    rgb = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))

    odd = {
        bar / "odd_cmyk.jpg": lambda p: rgb.convert("CMYK").save(p),
        bar / "odd_gray.jpg": lambda p: rgb.convert("L").save(p),
        circle / "odd_rgba.png": lambda p: rgb.convert("RGBA").save(p),
        circle / "odd_la.png": lambda p: rgb.convert("LA").save(p),
        circle / "odd_palette.png": lambda p: rgb.convert("P").save(p, transparency=0),
        square / "odd_16bit.png": lambda p: Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(p),
        square / "odd_exif_rotated.jpg": _exif_rotated,
    }
    for path, write in odd.items():
        write(path)
    files["odd"] = list(odd)

    jpeg = bar / "000_full.jpg"  # a temporary full JPEG, cut to make the truncated one
    draw_shape("bar", rng, size=64).save(jpeg, quality=95)
    bad = {
        bar / "bad_truncated.jpg": lambda p: p.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size * 2 // 3]),
        bar / "bad_zero_bytes.png": lambda p: p.write_bytes(b""),
        circle / "bad_not_an_image.jpg": lambda p: p.write_text("id,label\n1,circle\n"),
        circle / "bad_huge.png": lambda p: _huge_png(p, 20_000, 10_000),  # 200 MP > the default limit
        square / "bad_no_permission.png": lambda p: (rgb.save(p), os.chmod(p, 0)),
    }
    for path, write in bad.items():
        write(path)
    jpeg.unlink()
    loop = circle / "bad_symlink_loop.jpg"
    os.symlink(loop.name, loop)
    files["loop"] = [loop]
    files["bad"] = sorted([*bad, loop], key=lambda p: (CLASSES.index(p.parent.name), p.name))  # FolderSource's order
    return files


def _root_reads_anything(path: Path) -> bool:
    """Root ignores file permissions: chmod 000 does not make a file unreadable there."""
    try:
        with open(path, "rb"):
            return True
    except PermissionError:
        return False


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """The tree; where permissions do not bite (root), opening the no-permission file is refused as it would be."""
    files = make_tree(tmp_path / "tree")
    noperm = next(p for p in files["bad"] if "no_permission" in p.name)
    if _root_reads_anything(noperm):
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(noperm):
                raise PermissionError(13, "Permission denied", str(noperm))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    yield files
    os.chmod(noperm, 0o644)  # let pytest clean up


@pytest.fixture(autouse=True)
def _default_pixel_limit():
    yield
    set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)  # a test's DataModule may have changed the process-wide limit


def _dm(root: Path, tmp_path: Path, **kw) -> ImageDataModule:
    args = dict(
        image_size=32,
        split_seed=0,
        val_fraction=0.25,
        loader={"batch_size": 8, "num_workers": 0},
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "run"),
    )
    return ImageDataModule(FolderSource(str(root)), root=str(root), **{**args, **kw})


REASONS = {
    "truncated": "truncated",
    "zero_bytes": "empty file",
    "not_an_image": "not an image",
    "huge": "exceeds the pixel limit",
    "no_permission": "no permission",
    "symlink_loop": "symlink loop",
}


def _expected_reason(path: str) -> str:
    return next(reason for kind, reason in REASONS.items() if f"bad_{kind}" in path)


@pytest.mark.parametrize("cache", [True, False])
def test_skip_keeps_readable_files_and_lists_the_bad_ones(tree, tmp_path, cache):
    dm = _dm(tree["good"][0].parents[1], tmp_path, cache=cache)
    dm.prepare_data()
    dm.setup("fit")
    kept = set(dm.table["path"])
    assert kept == {str(p) for p in tree["good"] + tree["odd"]}
    assert not kept & {str(p) for p in tree["bad"] + tree["loop"]}  # so no split holds a bad file
    assert set(dm.table["split"]) == {"train", "val"}
    listed = pd.read_csv(tmp_path / "run" / "bad_images.csv")
    assert list(listed.columns) == ["path", "reason"]
    assert listed["path"].tolist() == [str(p) for p in tree["bad"]]
    for path, reason in zip(listed["path"], listed["reason"]):
        assert _expected_reason(path) in reason, (path, reason)
    assert "data.max_image_pixels" in listed.set_index("path").loc[str(tree["bad"][2]), "reason"]
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert set(split["path"]) == kept
    assert dm.table.groupby("label").size().tolist() == [8, 9, 8]  # 6 good + the readable odd ones per class
    assert dm.train_class_counts().sum() == (dm.table["split"] == "train").sum()
    # Nothing is left to fail mid-epoch: every image of every split loads.
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert sum(len(batch["target"]) for batch in loader) > 0


@pytest.mark.parametrize("cache", [True, False])
def test_error_names_the_first_bad_file_and_the_fix(tree, tmp_path, cache):
    dm = _dm(tree["good"][0].parents[1], tmp_path, cache=cache, on_bad_image="error")
    dm.prepare_data()
    with pytest.raises(BadImageError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    first = tree["bad"][0]
    assert caught.value.path == str(first) and f"'{first}'" in message
    assert "truncated" in message and "data.on_bad_image=skip" in message
    assert f"{len(tree['bad'])} of " in message


def test_unknown_policy_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="data.on_bad_image='ignore' is not an option: use skip or error"):
        _dm(tmp_path, tmp_path, on_bad_image="ignore")


@pytest.mark.parametrize("cache", [True, False])
def test_check_is_remembered_and_shared_by_every_rank(tree, tmp_path, monkeypatch, cache):
    """Local rank 0 checks in prepare_data; another rank (or the next run) reads the list and decodes nothing."""
    root = tree["good"][0].parents[1]
    first = _dm(root, tmp_path, cache=cache)
    first.prepare_data()

    def no_decoding(*args, **kwargs):
        raise AssertionError("the check ran again")

    monkeypatch.setattr("imgcls.feeding.checks.decode_all", no_decoding)
    monkeypatch.setattr("imgcls.feeding.cache.decode_all", no_decoding)
    other = _dm(root, tmp_path, cache=cache, output_dir=None)  # setup only, as on ranks > 0
    other.setup("fit")
    first.setup("fit")
    assert other.bad_images().equals(first.bad_images())
    assert other.table[["path", "split"]].equals(first.table[["path", "split"]])


def test_with_the_cache_on_its_build_is_the_only_decoding_pass(tree, tmp_path, monkeypatch):
    import imgcls.feeding.cache as cache

    passes = []
    real = cache.decode_all
    monkeypatch.setattr(cache, "decode_all", lambda *a, **k: passes.append(a) or real(*a, **k))
    monkeypatch.setattr("imgcls.feeding.checks.decode_all", lambda *a, **k: pytest.fail("a second decoding pass"))
    dm = _dm(tree["good"][0].parents[1], tmp_path, cache=True)
    dm.prepare_data()
    assert len(passes) == 1 and len(dm.bad_images()) == len(tree["bad"])


def test_a_fixed_file_is_checked_again(tree, tmp_path):
    root = tree["good"][0].parents[1]
    dm = _dm(root, tmp_path, cache=False)
    assert len(dm.bad_images()) == len(tree["bad"])
    Image.new("RGB", (32, 32)).save(tree["bad"][1], format="PNG")  # the empty file, replaced by an image
    assert len(_dm(root, tmp_path, cache=False).bad_images()) == len(tree["bad"]) - 1


def test_symlink_loop_is_listed_when_a_source_lists_it(tree, tmp_path):
    """Any source's symlink loop is checked and listed (here a source listing only good files and the loop)."""

    class Listed:
        def prepare(self) -> None:
            pass

        def discover(self):
            from imgcls.data.sources import Discovered

            paths = [*tree["good"], *tree["loop"]]
            labels = [CLASSES.index(p.parent.name) for p in paths]
            return Discovered(pd.DataFrame({"path": [str(p) for p in paths], "label": labels}), list(CLASSES))

    dm = ImageDataModule(
        Listed(),
        root=str(tmp_path),
        image_size=32,
        val_fraction=0.25,
        loader={"num_workers": 0},
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "run"),
    )
    dm.setup("fit")
    listed = pd.read_csv(tmp_path / "run" / "bad_images.csv")
    assert listed["path"].tolist() == [str(tree["loop"][0])] and "symlink loop" in listed["reason"][0]
    assert len(dm.table) == len(tree["good"])


def test_parallel_check_agrees_with_the_serial_one(tree):
    from imgcls.data.bad_images import find_unreadable
    from imgcls.feeding.checks import find_bad_images

    table = FolderSource(str(tree["good"][0].parents[1])).discover().table
    serial = find_unreadable(table, 3, {}, None, num_workers=0)
    probe = ImageDataset(table, None, 3, {}, decode_size=(1, 1))
    assert find_bad_images(probe, None, num_workers=2, batch_size=4).equals(serial)
    assert serial["path"].tolist() == [str(p) for p in tree["bad"]]


@pytest.mark.parametrize("kind", ["csv", "mask"])
def test_every_source_goes_through_the_check(kind, mask_root, tmp_path):
    """The check lives in the DataModule, after discovery: a manifest and the competition layout get it too."""
    from helpers import make_manifest

    from imgcls.data import CsvSource
    from imgcls.extras.competition import MaskSource

    if kind == "csv":
        root = tmp_path / "data"
        make_manifest(root, per_class=6)
        source = CsvSource(str(root), "labels.csv")
    else:
        root = shutil.copytree(mask_root, tmp_path / "competition")
        source = MaskSource(str(root))
    table = source.discover().table
    victim = Path(table["path"].iloc[3])
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    dm = ImageDataModule(
        source,
        root=str(root),
        image_size=32,
        val_fraction=0.25,
        loader={"batch_size": 8, "num_workers": 0},
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "run"),
    )
    dm.setup("fit")
    assert len(dm.table) == len(table) - 1 and str(victim) not in set(dm.table["path"])
    assert pd.read_csv(tmp_path / "run" / "bad_images.csv")["path"].tolist() == [str(victim)]


def test_odd_modes_decode_and_exif_rotation_is_applied(tree, tmp_path):
    for path in tree["odd"]:
        for channels in (1, 3):
            assert load_image(path, channels).dtype == np.uint8
    rotated = next(p for p in tree["odd"] if "exif" in p.name)
    arr = load_image(rotated)
    assert arr.shape == (40, 20, 3)  # displayed upright: 20 wide, 40 high
    top, bottom = arr[:16].reshape(-1, 3).mean(0), arr[24:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red on top, blue below

    dm = _dm(rotated.parents[1], tmp_path)  # the cached (32x32) image is rotated too
    dm.setup("fit")
    row = dm.table.index[dm.table["path"] == str(rotated)][0]
    split = dm.table.loc[row, "split"]
    dataset = dm.train_set if split == "train" else dm.val_set
    cached = dataset.read(int((dm.table.loc[:row, "split"] == split).sum()) - 1)
    assert cached[:12, :, 0].mean() > 200 and cached[20:, :, 2].mean() > 200


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's, at half the limit
def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 40)).save(path)
    set_max_image_pixels(1000)
    with pytest.raises(BadImageError, match=r"exceeds the pixel limit of 1,000 .*data.max_image_pixels"):
        load_image(path)
    set_max_image_pixels(None)  # no limit
    _huge_png(tmp_path / "huge.png", 20_000, 10_000)
    with pytest.raises(BadImageError, match="truncated|corrupt"):  # past the guard, the missing data shows
        load_image(tmp_path / "huge.png")
    set_max_image_pixels(1600)  # exactly the image's pixels: allowed
    assert load_image(path).shape == (40, 40, 3)


# With the cache on, predict's policy is checked too, with one real `python predict.py`.
@pytest.mark.slow
@pytest.mark.parametrize("cache", [True, False])
def test_training_skips_and_lists_or_stops(tree, tmp_path, cache):
    """The whole train task (in-process: the no-permission file is refused even as root, see `tree`)."""
    root, bad = tmp_path / "tree", tree["bad"]
    common = ("data=folder", f"data.root={root}", f"data.cache={str(cache).lower()}", *FAST)
    run = tmp_path / "run"
    log = run_task("train", *common, run_dir=run).log
    listed = pd.read_csv(run / "bad_images.csv")
    assert listed["path"].tolist() == [str(p) for p in bad]
    assert f"Skipped {len(bad)} unreadable images (see {run / 'bad_images.csv'})" in log
    assert not set(pd.read_csv(run / "split.csv")["path"]) & {str(p) for p in bad}

    with pytest.raises(BadImageError) as caught:
        run_task("train", *common, "data.on_bad_image=error", run_dir=tmp_path / "stop")
    assert f"cannot read image '{bad[0]}': truncated" in str(caught.value)
    assert "data.on_bad_image=skip" in str(caught.value)
    assert not (tmp_path / "stop" / "checkpoints").exists()
    if cache:  # predict applies the same policy to its inputs (the folder holds the same bad files)
        _predict_skips_and_lists_or_stops(root, bad, run / "checkpoints" / "best.ckpt", tmp_path)


def _predict_skips_and_lists_or_stops(root: Path, bad: list[Path], ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "predict"
    log = run_task("predict", f"ckpt_path={ckpt}", f"input={root}", "loader.num_workers=0", run_dir=out).log
    predicted = set(pd.read_csv(out / "predictions.csv")["path"])
    everything = {str(p) for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    assert predicted and not predicted & {str(p) for p in bad}
    assert set(pd.read_csv(out / "bad_images.csv")["path"]) == {str(p) for p in bad}
    assert predicted | {str(p) for p in bad} <= everything
    assert f"Skipped {len(bad)} unreadable input images" in log

    # What the user sees when it stops: one line, exit status 2 (predict.py's main(), in-process).
    proc = run_main(
        "predict.py",
        f"ckpt_path={ckpt}",
        f"input={root}",
        "on_bad_image=error",
        f"hydra.run.dir={tmp_path / 'predict_stop'}",
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in text and "on_bad_image=skip" in text
    assert not (tmp_path / "predict_stop" / "predictions.csv").exists()
