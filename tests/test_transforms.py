"""Augmentation presets: geometry happens at the target size, output stays uint8, flips follow data.flips."""

from __future__ import annotations

import copy
import functools

import albumentations as A
import numpy as np
import pytest
from helpers import compose
from omegaconf import OmegaConf

from imgcls.data.transforms import build_eval_transform, build_train_transform

PRESETS = ["none", "basic", "strong", "randaugment", "trivialaugment", "augmix", "autoaugment"]


def _preset(name: str) -> dict:
    """A preset as the CLI composes it; composed once per name (Hydra's compose is the slow part of these tests)."""
    return copy.deepcopy(_composed(name))


@functools.cache
def _composed(name: str) -> dict:
    return OmegaConf.to_container(compose("train", [f"augment={name}"]).augment)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_output_target_size_uint8(name):
    tf = build_train_transform([24, 40], _preset(name))
    img = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    out = tf(image=img)["image"]
    assert out.dtype == np.uint8 and out.shape == (24, 40, 3)


@pytest.mark.parametrize("name", PRESETS)
def test_first_op_brings_image_to_target_size(name):
    """Resize/crop first: every later op (rotation, colour, noise) works on the small image."""
    ops = build_train_transform(32, _preset(name)).transforms
    assert isinstance(ops[0], (A.Resize, A.RandomResizedCrop))
    assert not any(isinstance(op, (A.Resize, A.RandomResizedCrop)) for op in ops[1:])


def test_strong_has_the_promised_ops():
    kinds = {type(op) for op in build_train_transform(32, _preset("strong")).transforms}
    for op in (
        A.RandomResizedCrop,
        A.HorizontalFlip,
        A.Affine,
        A.ColorJitter,
        A.GaussianBlur,
        A.GaussNoise,
        A.CoarseDropout,
    ):
        assert op in kinds, op
    assert A.VerticalFlip not in kinds
    assert all(
        op.p < 1
        for op in build_train_transform(32, _preset("strong")).transforms
        if isinstance(op, (A.GaussianBlur, A.GaussNoise, A.CoarseDropout))
    )


def test_flips_only_where_data_allows():
    aug = {**_preset("basic"), "vflip": {"_target_": "albumentations.VerticalFlip", "p": 0.5}}
    kinds = {type(op) for op in build_train_transform(32, aug, flips=[]).transforms}
    assert A.HorizontalFlip not in kinds and A.VerticalFlip not in kinds
    kinds = {type(op) for op in build_train_transform(32, aug, flips=["horizontal", "vertical"]).transforms}
    assert A.HorizontalFlip in kinds and A.VerticalFlip in kinds


def test_eval_is_deterministic():
    tf = build_eval_transform(16)
    img = np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    assert np.array_equal(tf(image=img)["image"], tf(image=img)["image"])


def test_any_albumentations_op_is_added_from_the_config_in_order():
    """`+augment.<key>={_target_: ...}` appends an op; the config's order is the pipeline's; p=0 or null drops it."""
    cfg = compose("train", ["augment=basic", "+augment.sharpen={_target_: albumentations.Sharpen, p: 0.3}"])
    ops = build_train_transform(32, OmegaConf.to_container(cfg.augment)).transforms
    assert [type(op) for op in ops] == [A.Resize, A.HorizontalFlip, A.Affine, A.Sharpen]
    assert ops[-1].p == 0.3
    aug = {**_preset("strong"), "blur": None, "noise": {**_preset("strong")["noise"], "p": 0}}
    kinds = {type(op) for op in build_train_transform(32, aug).transforms}
    assert A.GaussianBlur not in kinds and A.GaussNoise not in kinds and A.CoarseDropout in kinds


def test_the_crop_gets_the_data_size_and_a_later_resize_is_warned_about(caplog):
    ops = build_train_transform([24, 40], _preset("strong")).transforms
    assert isinstance(ops[0], A.RandomResizedCrop) and tuple(ops[0].size) == (24, 40)
    aug = {**_preset("basic"), "shrink": {"_target_": "albumentations.RandomScale", "scale_limit": 0.1}}
    with caplog.at_level("WARNING"):
        build_train_transform(32, aug)
    assert "augment.shrink (RandomScale) changes the size" in caplog.text


@pytest.mark.parametrize(
    "key,spec,message",
    [
        ("hflip", 0.5, r"augment.hflip=0.5 is not an augmentation op.*augment.hflip.p="),
        ("color_jitter", {"p": 0.5}, r"augment.color_jitter=\{'p': 0.5\} is not an augmentation op.*_target_"),
        ("x", {"_target_": "albumentations.Nope", "p": 0.5}, r"augment.x._target_='albumentations.Nope' cannot be"),
        (
            "blur",
            {"_target_": "albumentations.GaussianBlur", "kernel": [3, 5]},
            r"augment.blur.kernel is not an argument of albumentations.GaussianBlur: use one of blur_limit",
        ),
        (
            "random_erasing",
            {"_target_": "imgcls.data.policies.RandomErasing", "mode": "blur"},
            r"^augment.random_erasing: mode='blur': use one of const, rand, pixel$",
        ),
    ],
)
def test_an_op_without_target_or_with_an_unknown_argument_is_an_error(key, spec, message):
    """Old-style values (`hflip: 0.5`), an op added without `_target_` (`+augment.color_jitter.p=0.5` on a preset
    without jitter) and an argument albumentations would only warn about all stop, naming the key."""
    with pytest.raises(ValueError, match=message):
        build_train_transform(32, {**_preset("basic"), key: spec})
