"""Build any timm classifier by name, optionally from a local weights file (hubs are unreachable offline)."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import timm
import torch
from torch import nn

from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

# Wrappers that prefix state-dict keys: torch.compile, DDP, and our LightningModule's `model` attribute.
_PREFIXES = ("_orig_mod.", "module.", "model.")


class ModelConfigError(ConfigError):
    """A model config that cannot work; the message names the key and the fix."""


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


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove wrapper prefixes shared by all keys (repeatedly: `model._orig_mod.conv1.weight` -> `conv1.weight`)."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


def load_tensors(path: str | os.PathLike, key: str, expected: str, allowed: Iterable[type] = ()) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain containers (plus `allowed` types), never pickled code.

    A refused, truncated or foreign file fails with one line naming `key`, the file and what to use instead
    (`expected`), not torch's paragraph, which suggests `weights_only=False`: the one thing not to do here.
    """
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        code = next((m.group(1) for m in map(re.compile(r"GLOBAL (\S+)").search, lines) if m), None)
        if code:
            raise ModelConfigError(
                f"{key}='{path}' holds pickled code ({code}), not just tensors: refused "
                f"without running it (weights_only=True); use {expected}"
            ) from exc
        if isinstance(exc, EOFError) or any("zip archive" in line or "unexpected EOF" in line for line in lines):
            reason = lines[0].split(". ")[0] if lines else type(exc).__name__
            raise ModelConfigError(
                f"{key}='{path}' is truncated or corrupted ({reason}): copy it again "
                f"(compare its size with the original) or use {expected}"
            ) from exc
        # torch's explanation follows a "WeightsUnpickler error:" line; the paragraph around it is advice.
        reason = next(
            (after for before, after in zip(lines, lines[1:]) if before.endswith("WeightsUnpickler error:")),
            lines[0] if lines else type(exc).__name__,
        )
        raise ModelConfigError(
            f"{key}='{path}' is not a PyTorch weights file or holds objects weights_only=True "
            f"refuses ({reason}): use {expected}"
        ) from exc


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A timm/torch state dict, a Lightning checkpoint or a safetensors file, prefixes removed; tensors only."""
    if not os.path.isfile(path):
        raise ModelConfigError(f"model.pretrained_path='{path}' does not exist: give a local weights file")
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        raw: Any = load_file(str(path))
    else:
        raw = load_tensors(path, "model.pretrained_path", "a timm/torch state dict, a Lightning .ckpt or .safetensors")
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
        raise ModelConfigError(
            f"model.pretrained_path='{path}': no key matches model '{model.__class__.__name__}' "
            f"(first file keys: {list(state)[:3]}); is it the same architecture as model.name?"
        )
    log.info(
        f"Loaded {loaded}/{len(own)} tensors from {path}"
        + (f"; re-initialised (shape differs): {skipped}" if skipped else "")
        + (f"; {len(unexpected)} unused keys" if unexpected else "")
    )


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
    """`timm.create_model` with checked name, our data's classes/channels, and local weights only.

    With `image_size` (the data's [h, w]) the model is also checked to accept that input (`check_input_size`).
    """
    check_model_name(name)
    if pretrained and not pretrained_path:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ModelConfigError(
                "model.pretrained=true would download weights, but this run is offline "
                "(HF_HUB_OFFLINE=1): set model.pretrained_path=/path/to/weights instead"
            )
    model = timm.create_model(
        name,
        pretrained=bool(pretrained and not pretrained_path),
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
