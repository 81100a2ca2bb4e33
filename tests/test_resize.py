"""`data.resize`: images become the model input as timm evaluates them (the aspect kept: centre crop, or a
letterbox), the choice comes from the model's pretrained config, is stored in the checkpoint, and predict
runs the checkpoint's choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, run_task
from PIL import Image, ImageDraw
from timm.data.transforms_factory import transforms_imagenet_eval

from imgcls.data import FolderSource, ImageDataModule
from imgcls.data.dataset import ImageDataset
from imgcls.data.resize import Resize
from imgcls.data.transforms import build_eval_transform, spec_eval_transform
from imgcls.models.checkpoint import load_classifier
from imgcls.utils.errors import ConfigError


def circle(height: int = 90, width: int = 180, diameter: int = 80, background: int = 255) -> np.ndarray:
    """A black disc centred on a wide white canvas: round in, round out, unless the aspect changes."""
    img = Image.new("RGB", (width, height), (background,) * 3)
    top, left = (height - diameter) // 2, (width - diameter) // 2
    ImageDraw.Draw(img).ellipse((left, top, left + diameter - 1, top + diameter - 1), fill=(0, 0, 0))
    return np.asarray(img)


def disc_aspect(img: np.ndarray) -> float:
    """Width / height of the dark disc's bounding box."""
    ys, xs = np.nonzero(img[:, :, 0] < 64)
    return (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)


def resolved(**config) -> Resize:
    return Resize.resolve({"model": "resnet18", **config}, channels=3)


@pytest.mark.parametrize("mode", ["center", "squash", "border", "letterbox", "stretch"])
def test_the_input_keeps_the_aspect_unless_the_mode_changes_it(mode):
    out = build_eval_transform(32, resolved(mode=mode))(image=circle())["image"]
    assert out.shape == (32, 32, 3)
    if mode in ("center", "border", "letterbox"):
        assert disc_aspect(out) == pytest.approx(1.0, abs=0.1)
    else:  # a 2:1 canvas squeezed into a square: the disc is half as wide as it is high
        assert disc_aspect(out) == pytest.approx(0.5, abs=0.1)
    if mode == "letterbox":  # the whole canvas, centred, padded with the mean above and below
        fill = np.array([round(255 * v) for v in (0.485, 0.456, 0.406)], np.uint8)
        assert (out[:7] == fill).all() and (out[-7:] == fill).all() and (out[10:22, 0] == 255).all()
    if mode == "center":  # the centre square of the canvas: white left and right of the disc, no padding
        assert (out[16, :1] == 255).all() and (out[16, 16] == 0).all()


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
@pytest.mark.parametrize("size", [32, (24, 40)])
def test_the_same_pixels_as_timm_eval_transform(mode, size):
    """Side by side with timm's own eval pipeline (PIL resize + torchvision crop): the same geometry, and the
    pixels within the resampling difference (area vs PIL's anti-aliased bilinear)."""
    rng = np.random.default_rng(0)
    base = circle(120, 200, 90).astype(np.float32)
    image = np.clip(base * 0.6 + np.linspace(0, 100, 200)[None, :, None] + rng.normal(0, 3, base.shape), 0, 255)
    image = image.astype(np.uint8)
    timm_tf = transforms_imagenet_eval(size, crop_pct=0.8, crop_mode=mode, interpolation="bilinear", normalize=False)
    theirs = timm_tf(Image.fromarray(image)).permute(1, 2, 0).numpy().astype(np.float32)
    ours = build_eval_transform(size, resolved(mode=mode, crop_pct=0.8))(image=image)["image"].astype(np.float32)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() < 4.0  # a geometry off by a few pixels is ~15 here


def test_the_centre_is_where_timm_puts_it():
    """ResNets' crop_pct 0.95 at 224 leaves an odd margin (235 - 224): torchvision rounds the offset up (6), a floor
    division would shift every input a pixel (5). Noise makes any shift visible."""
    image = np.random.default_rng(0).integers(0, 256, (235, 235, 3), dtype=np.uint8)
    timm_tf = transforms_imagenet_eval(224, crop_pct=0.95, interpolation="bilinear", normalize=False)
    theirs = timm_tf(Image.fromarray(image)).permute(1, 2, 0).numpy()
    ours = build_eval_transform(224, resolved(crop_pct=0.95))(image=image)["image"]
    assert np.array_equal(ours, theirs) and np.array_equal(ours, image[6:230, 6:230])


def test_unset_values_come_from_the_models_pretrained_config():
    vit = Resize.resolve({"model": "vit_tiny_patch16_224"}, channels=3)
    assert (vit.mode, vit.crop_pct, vit.interpolation, vit.fill) == ("center", 0.9, "bicubic", (128, 128, 128))
    assert Resize.resolve({"model": "resnet18"}, channels=3).crop_pct == 0.95
    assert Resize.resolve({"model": "resnet18"}, channels=1).fill == (114,)  # the grayscale mean of ImageNet's
    assert Resize.resolve({"model": "resnet18"}, channels=1, mean=[0.1307]).fill == (33,)  # data.mean wins
    assert Resize.resolve({"model": "resnet18", "mode": "letterbox", "crop_pct": 0.5}, channels=3).crop_pct == 1.0
    assert resolved(crop_pct=1.0).fitted_size((224, 224)) == (224, 224)
    assert resolved(crop_pct=0.875).fitted_size((224, 160)) == (256, 182)  # timm's scale_size


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"mode": "pad"},
            "data.resize.mode='pad' is not a mode: use one of center, squash, border, letterbox, stretch",
        ),
        ({"crop_pct": 1.5}, "data.resize.crop_pct=1.5 must be in (0, 1]"),
        ({"interpolation": "cubic"}, "data.resize.interpolation='cubic' is not one of"),
        ({"fill": [0, 0]}, "data.resize.fill=[0, 0] must be 0..255, one value or one per channel (3)"),
        ({"crop": 1}, "data.resize.crop is not a setting"),
    ],
)
def test_a_wrong_setting_is_named_in_one_line(config, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        resolved(**config)


def test_a_larger_cache_size_gives_the_same_field_of_view():
    """data.cache_size only changes the resolution the crops come from: evaluation still sees the centre."""
    image = circle(100, 100, 90)
    at_default = build_eval_transform(32, resolved(crop_pct=0.5))(image=image)["image"]
    at_double = build_eval_transform(32, resolved(crop_pct=0.5), fitted=(128, 128))(image=image)["image"]
    assert np.abs(at_default.astype(int) - at_double.astype(int)).mean() < 6  # the disc fills both
    assert (at_default[0, 0] == 0).all() and (at_double[0, 0] == 0).all()  # only its centre is seen


def test_a_checkpoint_without_a_resize_record_stretches_as_before():
    transform, fitted = spec_eval_transform({"image_size": [32, 32]})
    assert fitted == (32, 32)
    assert disc_aspect(transform(image=circle())["image"]) == pytest.approx(0.5, abs=0.1)


@pytest.fixture(scope="module")
def circles(tmp_path_factory):
    """Two classes of wide (2:1) images, a disc and a square."""
    root = tmp_path_factory.mktemp("circles")
    for name in ("disc", "box"):
        (root / name).mkdir()
        for i in range(10):
            img = circle(60, 120, 40 + i, background=200 + 5 * i)
            if name == "box":
                img = img.copy()
                img[10:50, 40:80] = 0
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("cache", [True, False])
def test_the_datamodule_fits_validates_and_records_the_choice(circles, tmp_path, cache):
    dm = ImageDataModule(
        FolderSource(str(circles)),
        root=str(circles),
        image_size=32,
        resize={"mode": "letterbox", "model": "resnet18"},
        val_fraction=0.5,
        loader={"batch_size": 4, "num_workers": 0},
        cache=cache,
        cache_dir=str(tmp_path),
    )
    dm.setup("fit")
    image = dm.val_set[0]["image"]
    disc = dm.val_set.targets[0] == dm.class_names.index("disc")
    if disc:
        assert disc_aspect(image) == pytest.approx(1.0, abs=0.15)
    assert (image[:7] == [124, 116, 104]).all()  # the letterbox pads: the model's mean
    assert dm.spec["resize"] == {
        "mode": "letterbox",
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fill": [124, 116, 104],
        "fitted": [32, 32],
    }


@pytest.fixture(scope="module")
def letterbox_run(circles, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("letterbox_run")
    run_task(
        "train", "data=folder", f"data.root={circles}", "data.val_fraction=0.5", "data.resize.mode=letterbox", *FAST,
        run_dir=run_dir,
    )  # fmt: skip
    return run_dir


@pytest.mark.slow
def test_predict_runs_the_checkpoints_choice(letterbox_run, circles, tmp_path):
    """The checkpoint says letterbox: predict's input is the run's validation input, not the default centre crop."""
    ckpt = torch.load(letterbox_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    spec = ckpt["hyper_parameters"]["data_spec"]
    assert spec["resize"]["mode"] == "letterbox"
    transform, fitted = spec_eval_transform(spec)
    image = circle(60, 120, 44)
    assert (transform(image=image)["image"][:7] == spec["resize"]["fill"]).all()  # padded as in training

    run_task(
        "predict", f"ckpt_path={letterbox_run / 'checkpoints' / 'last.ckpt'}", f"input={letterbox_run / 'split.csv'}",
        "split=val", "ema=false", run_dir=tmp_path,
    )  # fmt: skip
    predicted = pd.read_csv(tmp_path / "predictions.csv")
    # The run's own evaluation input (its config's resize, as the DataModule builds it), through the model:
    config = Resize.resolve({"mode": "letterbox", "model": "test_resnet"}, channels=3)
    rows = ImageDataset(predicted[["path"]], build_eval_transform(32, config))
    model = load_classifier(letterbox_run / "checkpoints" / "last.ckpt", ema=False)
    images = torch.stack([torch.as_tensor(rows[i]["image"]).permute(2, 0, 1) for i in range(len(rows))])
    with torch.no_grad():
        expected = model.log_probs(model(model.normalize(images))).exp().numpy()
    top = expected[np.arange(len(expected)), predicted["pred"].to_numpy()]
    assert np.allclose(predicted["prob"].to_numpy(), top, atol=1e-5)
    assert (expected.argmax(1) == predicted["pred"].to_numpy()).all()


def test_a_run_begun_before_data_resize_keeps_stretching_when_resumed():
    from imgcls.resume import resumed_data

    old = {"hyper_parameters": {"data_spec": {"image_size": [32, 32]}}}
    new = {"hyper_parameters": {"data_spec": {"image_size": [32, 32], "resize": resolved().as_dict()}}}
    assert resumed_data(old) == {"resize": {"mode": "stretch"}}
    assert resumed_data(new) == {} and resumed_data(None) == {}
    kept = Resize.resolve(resumed_data(old)["resize"], channels=3)
    assert (kept.mode, kept.crop_pct, kept.cache_settings()) == ("stretch", 1.0, Resize().cache_settings())
