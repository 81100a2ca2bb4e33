"""Augmentation presets: geometry happens at the target size, output stays uint8, flips follow data.flips."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from helpers import compose
from omegaconf import OmegaConf

from imgcls.data.transforms import build_eval_transform, build_train_transform

PRESETS = ["none", "basic", "strong"]


def _preset(name: str) -> dict:
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
    aug = {**_preset("basic"), "vflip": 0.5}
    kinds = {type(op) for op in build_train_transform(32, aug, flips=[]).transforms}
    assert A.HorizontalFlip not in kinds and A.VerticalFlip not in kinds
    kinds = {type(op) for op in build_train_transform(32, aug, flips=["horizontal", "vertical"]).transforms}
    assert A.HorizontalFlip in kinds and A.VerticalFlip in kinds


def test_eval_is_deterministic():
    tf = build_eval_transform(16)
    img = np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    assert np.array_equal(tf(image=img)["image"], tf(image=img)["image"])
