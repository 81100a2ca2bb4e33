"""Build any timm classifier by name, with timm's pretrained weights (models/hub.py) or a local weights file."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
from torch import nn

from imgcls.models.hub import pretrained_overlay
from imgcls.models.weights import ModelConfigError, load_pretrained


def check_model_name(name: str) -> None:
    """Unknown `model.name` -> the closest timm names, instead of timm's bare RuntimeError."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
    hint = (
        f"closest timm names: {', '.join(close)}"
        if close
        else "list them with `python -c \"import timm; print(timm.list_models('*resnet*'))\"`"
    )
    raise ModelConfigError(f"model.name='{name}' is not a timm model; {hint}")


def check_input_size(model: nn.Module, name: str, image_size: int | Sequence[int], in_chans: int = 3) -> None:
    """One blank image through the model at build time (eval mode, no grad: no weight, statistic or RNG changes).

    A size the architecture cannot take (a ViT built for 224, a CNN that downsamples 4x4 to nothing) fails here
    naming `data.image_size`, instead of as a shape error inside the first training step.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[-1]))
    reason = _forward_error(model, in_chans, h, w)
    if reason is None:
        return
    timm_cfg = getattr(model, "pretrained_cfg", None) or {}
    default = list(timm_cfg.get("input_size") or (in_chans, 224, 224))[-2:]
    if timm_cfg.get("fixed_input_size"):
        fix = f"set data.image_size={default} (its fixed size)"
        if hasattr(model, "patch_embed"):  # ViT-style: timm builds the patch grid for any img_size
            fix += f", or build it for your size with ++model.model_kwargs.img_size={[h, w]} (as model=vit_tiny does)"
    else:
        scales = (f for f in (2, 4, 8, 16, 32) if _forward_error(model, in_chans, h * f, w * f) is None)
        larger = next(([h * f, w * f] for f in scales), default)
        fix = f"use a larger data.image_size, e.g. {larger} (this model's default is {default})"
    raise ModelConfigError(f"data.image_size={[h, w]} does not fit model.name='{name}' ({reason}): {fix}")


def _forward_error(model: nn.Module, in_chans: int, h: int, w: int) -> str | None:
    """None if a (1, in_chans, h, w) input goes through, else the first line of the error."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, h, w))
        return None
    except (RuntimeError, AssertionError, ValueError, IndexError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    finally:
        model.train(was_training)


def create_classifier(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    drop_rate: float = 0.0,
    kwargs: Mapping[str, Any] | None = None,
    image_size: int | Sequence[int] | None = None,
) -> nn.Module:
    """`timm.create_model` with checked name, our data's classes/channels and pretrained weights: timm's own
    (`pretrained`, from the Hugging Face cache or hub) or a local file (`pretrained_path`, which wins). Either way
    a classifier of another size is re-initialised and an RGB stem adapted to the data's channels.

    With `image_size` (the data's [h, w]) the model is also checked to accept that input (`check_input_size`).
    """
    check_model_name(name)
    from_hub = bool(pretrained and not pretrained_path)
    model = timm.create_model(
        name,
        pretrained=from_hub,
        pretrained_cfg_overlay=pretrained_overlay(name) if from_hub else None,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        **dict(kwargs or {}),
    )
    if pretrained_path:
        load_pretrained(model, pretrained_path)
    if image_size is not None:
        check_input_size(model, name, image_size, in_chans)
    return model
