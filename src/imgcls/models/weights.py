"""Weights files read safely: tensors only (never pickled code), wrapper prefixes removed, a stem of another channel
count adapted. Used for `model.pretrained_path` (factory.py) and for checkpoints (checkpoint.py)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

# Wrappers that prefix state-dict keys: torch.compile, DDP, and our LightningModule's `model` attribute.
_PREFIXES = ("_orig_mod.", "module.", "model.")


class ModelConfigError(ConfigError):
    """A model config that cannot work; the message names the key and the fix."""


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
