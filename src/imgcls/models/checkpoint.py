"""Rebuild a trained classifier from its checkpoint alone (model name, classes, pre-processing, weights)."""

from __future__ import annotations

import os
from typing import Any

import torch

from imgcls.models.classifier import Classifier
from imgcls.models.factory import ModelConfigError


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """`torch.load(weights_only=True)`: a checkpoint can't run code; Lightning's AttributeDict is allowed."""
    if not os.path.isfile(path):
        raise ModelConfigError(f"ckpt_path='{path}' does not exist: pass a .ckpt from <run dir>/checkpoints/")
    from lightning.fabric.utilities.data import AttributeDict

    try:
        with torch.serialization.safe_globals([AttributeDict]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelConfigError(f"ckpt_path='{path}' cannot be loaded safely (weights_only=True): {exc}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "data_spec" not in ckpt.get("hyper_parameters", {}):
        raise ModelConfigError(f"ckpt_path='{path}' is not an imgcls training checkpoint (no state_dict/data_spec); "
                               "for plain timm weights use model.pretrained_path in training instead")
    return ckpt


def load_classifier(path: str | os.PathLike) -> Classifier:
    """A `Classifier` in eval mode with the checkpoint's weights; its `hparams.data_spec` drives predict."""
    ckpt = read_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    # Keys added later (head, loss, ...) fall back to the defaults older checkpoints were trained with.
    model = Classifier(name=hp["name"], data_spec=hp["data_spec"], drop_rate=hp.get("drop_rate", 0.0),
                       model_kwargs=hp.get("model_kwargs"), label_smoothing=hp.get("label_smoothing", 0.0),
                       channels_last=hp.get("channels_last", False), head=hp.get("head", "single"),
                       loss=hp.get("loss", "ce"), focal_gamma=hp.get("focal_gamma", 2.0),
                       class_weights=hp.get("class_weights", "none"))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
