"""Build any timm classifier by name, optionally from a local weights file (hubs are unreachable offline)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import nn

from imgcls.utils.logging import get_logger

log = get_logger(__name__)

# Wrappers that prefix state-dict keys: torch.compile, DDP, and our LightningModule's `model` attribute.
_PREFIXES = ("_orig_mod.", "module.", "model.")


class ModelConfigError(ValueError):
    """A model config that cannot work; the message names the key and the fix."""


def check_model_name(name: str) -> None:
    """Unknown `model.name` -> the closest timm names, instead of timm's bare RuntimeError."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
    hint = f"closest timm names: {', '.join(close)}" if close else "list them with `python -c \"import timm; print(timm.list_models('*resnet*'))\"`"
    raise ModelConfigError(f"model.name='{name}' is not a timm model; {hint}")


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove wrapper prefixes shared by all keys (repeatedly: `model._orig_mod.conv1.weight` -> `conv1.weight`)."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A timm/torch state dict, a Lightning checkpoint or a safetensors file, prefixes removed; tensors only."""
    if not os.path.isfile(path):
        raise ModelConfigError(f"model.pretrained_path='{path}' does not exist: give a local weights file")
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        raw: Any = load_file(str(path))
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelConfigError(f"model.pretrained_path='{path}' is not a loadable weights file "
                                   f"(only tensors are accepted, no pickled code): {exc}") from exc
    for key in ("state_dict", "model", "state_dict_ema", "model_state"):
        if isinstance(raw, Mapping) and isinstance(raw.get(key), Mapping):
            raw = raw[key]
            break
    return strip_prefixes({k: v for k, v in raw.items() if isinstance(v, torch.Tensor)})


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> None:
    """Load matching weights; a classifier of another size (ImageNet's 1000 classes) is left freshly initialised.

    A stem with another channel count (RGB weights, grayscale data) is adapted like timm does for hub weights.
    """
    from timm.models import adapt_input_conv

    state = read_state_dict(path)
    own = model.state_dict()
    stem = model.pretrained_cfg.get("first_conv") if hasattr(model, "pretrained_cfg") else None
    if stem and f"{stem}.weight" in state and f"{stem}.weight" in own:
        w = state[f"{stem}.weight"]
        if w.ndim == 4 and w.shape[1] != own[f"{stem}.weight"].shape[1]:
            state[f"{stem}.weight"] = adapt_input_conv(own[f"{stem}.weight"].shape[1], w)
    skipped = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    for key in skipped:
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = len(own) - len(missing)
    if loaded == 0:
        raise ModelConfigError(f"model.pretrained_path='{path}': no key matches model '{model.__class__.__name__}' "
                               f"(first file keys: {list(state)[:3]}); is it the same architecture as model.name?")
    log.info(f"Loaded {loaded}/{len(own)} tensors from {path}"
             + (f"; re-initialised (shape differs): {skipped}" if skipped else "")
             + (f"; {len(unexpected)} unused keys" if unexpected else ""))


def create_classifier(name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False,
                      pretrained_path: str | None = None, drop_rate: float = 0.0,
                      kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """`timm.create_model` with checked name, our data's classes/channels, and local weights only."""
    check_model_name(name)
    if pretrained and not pretrained_path:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ModelConfigError("model.pretrained=true would download weights, but this run is offline "
                                   "(HF_HUB_OFFLINE=1): set model.pretrained_path=/path/to/weights instead")
    model = timm.create_model(name, pretrained=bool(pretrained and not pretrained_path), num_classes=num_classes,
                              in_chans=in_chans, drop_rate=drop_rate, **dict(kwargs or {}))
    if pretrained_path:
        load_pretrained(model, pretrained_path)
    return model
