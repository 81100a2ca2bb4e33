"""Albumentations pipelines built from the `augment` config group.

One builder serves every preset: `augment/none|basic|strong.yaml` only differ in which ops they list, and every
op is an albumentations transform named by `_target_`, so any albumentations op can be added from YAML.
Rules that keep the CPU fast: every pipeline first brings the image to the target size (random-resized-crop or
resize), so rotation, colour and noise run on the small image; everything stays uint8 (normalisation happens on
the device, see `imgcls.models.classifier`).
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import hydra
import hydra.errors

from imgcls.data.resize import Resize
from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

# Training crops resize bilinearly: INTER_AREA costs ~0.9 ms vs ~0.17 ms per 384x512 image, and with the cache
# on they only ever resize the already-small cached image. (The deterministic resize, data/resize.py, shrinks
# with INTER_AREA: it runs once per image, into the cache.)
_TRAIN_RESIZE = dict(interpolation=cv2.INTER_LINEAR)


def as_hw(image_size: int | Sequence[int], key: str = "data.image_size") -> tuple[int, int]:
    """`data.image_size` (or `key`) may be an int (square) or [height, width]."""
    hw = [image_size, image_size] if isinstance(image_size, numbers.Integral) else image_size
    if isinstance(hw, str) or len(hw) != 2 or not all(isinstance(v, numbers.Integral) and v > 0 for v in hw):
        shown = list(image_size) if isinstance(image_size, Sequence) and not isinstance(image_size, str) else image_size
        raise ConfigError(f"{key}={shown!r} is not a size: use an int (square, e.g. 224) or [height, width]")
    return int(hw[0]), int(hw[1])


def build_eval_transform(
    image_size: int | Sequence[int], resize: Resize | None = None, fitted: Sequence[int] | None = None, fit: bool = True
) -> A.Compose:
    """Validation/test/predict: deterministic, the centre of the fitted image (data/resize.py; default: a
    stretch). `fitted` is the fitted size (default timm's `image_size / crop_pct`); `fit=False` when images
    arrive fitted already (from the cache)."""
    size, resize = as_hw(image_size), resize or Resize()
    fitted = tuple(fitted or resize.fitted_size(size))
    return A.Compose(([resize.fit_op(fitted)] if fit else []) + resize.eval_ops(fitted, size))


def spec_eval_transform(spec: Mapping[str, Any]) -> tuple[A.Compose, tuple[int, int]]:
    """The evaluation pipeline a checkpoint was validated with (from its `data_spec`) and the size its images
    are decoded for: what predict, and anything deploying the model, must run to see what validation saw."""
    size, resize = as_hw(spec["image_size"]), Resize.from_spec(spec)
    fitted = tuple((spec.get("resize") or {}).get("fitted") or resize.fitted_size(size))
    return build_eval_transform(size, resize, fitted), fitted


# Keys of the augment group that are not ops: the preset's name and mixup (batch-level, on the device).
NOT_OPS = ("name", "mixup")
_MIRRORS = {A.HorizontalFlip: "horizontal", A.VerticalFlip: "vertical"}
# Albumentations' modules whose ops change the image size: after the first step they are slow, and wrong.
_SIZE_MODULES = (".crops.", ".geometric.resize", ".geometric.pad")


def build_op(key: str, spec: Any, **fixed: Any) -> A.BasicTransform:
    """One albumentations op from its `_target_` config (`augment.<key>`); `fixed` are arguments the builder owns
    (the output size). Albumentations only warns about an argument it does not take: here that is an error."""
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(
            f"{key}={spec!r} is not an augmentation op: an op is a `_target_` config, e.g. "
            f"{key}={{_target_: albumentations.<Op>, p: 0.5}} (a preset's op is changed with {key}.p=..., "
            "see configs/augment/)"
        )
    module, _, name = str(spec["_target_"]).rpartition(".")
    try:  # not hydra.utils.get_class: it logs its own multi-line error before raising
        op_class = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{key}._target_='{spec['_target_']}' cannot be imported: name an op "
            "by its full path, e.g. albumentations.ColorJitter"
        ) from exc
    accepted = inspect.signature(op_class).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(spec) - set(accepted) - {"_target_", "_partial_", "_convert_", "_args_"})
        if unknown:
            raise ConfigError(
                f"{key}.{unknown[0]} is not an argument of {spec['_target_']}: use one of "
                f"{', '.join(k for k in accepted if k not in fixed)}"
            )
    try:
        return hydra.utils.instantiate(spec, **fixed)
    except hydra.errors.InstantiationException as exc:  # the op refused a value: name the op's key, in one line
        cause = exc.__cause__ or exc
        raise ConfigError(f"{key}: {' '.join(str(cause).split())}") from exc


def build_train_transform(
    image_size: int | Sequence[int],
    augment: Mapping[str, Any] | None,
    flips: Sequence[str] = ("horizontal",),
    resize: Resize | None = None,
    fitted: Sequence[int] | None = None,
    fit: bool = True,
) -> A.Compose:
    """Training pipeline from the `augment` group; `flips` are the mirrorings that keep labels (from `data.flips`).

    With `resize` (data/resize.py) the image is first fitted (`fit`; skipped for cached images, fitted
    already), as for evaluation. The first step then brings it to `image_size`: `augment.random_resized_crop`
    (an op whose size the builder sets) or, without one, what evaluation does (the centre crop; without
    `resize` a plain resize). Every other key with a `_target_` is an albumentations op, applied in the order the
    config lists it (`+augment.sharpen={_target_: albumentations.Sharpen, p: 0.2}` appends one); null switches one
    off, as does p=0. A mirror that `data.flips` says changes the label is left out, with a warning.
    """
    aug = dict(augment or {})
    h, w = as_hw(image_size)
    crop = aug.pop("random_resized_crop", None)
    ops: list[A.BasicTransform] = []
    if resize is not None:
        fitted = tuple(fitted or resize.fitted_size((h, w)))
        ops += [resize.fit_op(fitted, fast=True)] if fit else []
    if crop:
        ops.append(build_op("augment.random_resized_crop", crop, size=(h, w), **_TRAIN_RESIZE))
    else:
        ops += resize.eval_ops(fitted, (h, w)) if resize is not None else [A.Resize(h, w, **_TRAIN_RESIZE)]
    for key, spec in aug.items():
        if key in NOT_OPS or spec is None:
            continue
        op = build_op(f"augment.{key}", spec)
        if float(getattr(op, "p", 1.0)) <= 0:
            continue
        axis = _MIRRORS.get(type(op))
        if axis is not None and axis not in flips:
            log.warning(f"augment.{key} ignored: data.flips={list(flips)} says a {axis} mirror changes the label")
            continue
        if any(part in type(op).__module__ for part in _SIZE_MODULES):
            log.warning(
                f"augment.{key} ({type(op).__name__}) changes the size after the first step brought the image to "
                "data.image_size: slower (ops should run on the small image), and batches need that size; resize "
                "or crop in augment.random_resized_crop instead"
            )
        ops.append(op)
    return A.Compose(ops)
