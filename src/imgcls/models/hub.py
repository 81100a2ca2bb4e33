"""`model.pretrained=true`: timm's own weights for `model.name`, from the local Hugging Face cache or the hub.

timm would ask the hub first and, with no network, retry for about a minute before failing. Here the local cache
is looked at first (no network at all when the weights are there, whatever `HF_HUB_OFFLINE` says); only when they
are missing is the hub asked, after a quick reachability check, so an offline run fails in seconds with one line.
The user's `HF_HUB_OFFLINE`, `HF_HUB_CACHE`/`HF_HOME` and `HF_ENDPOINT` are read (by huggingface_hub), never set.
"""

from __future__ import annotations

import os
from typing import Any

import timm

from imgcls.models.weights import ModelConfigError

# timm's hub file names (timm/models/_hub.py): safetensors first, as timm prefers it.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # either keeps huggingface_hub off the network
_TRUE = {"1", "ON", "YES", "TRUE"}  # the values huggingface_hub reads as set


def pretrained_overlay(name: str) -> dict[str, Any]:
    """What `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=...)` needs: the cached file when
    the weights are in the cache, nothing when the hub will serve them; a ModelConfigError when neither can."""
    from huggingface_hub import constants

    repo, revision, files = _hub_location(name)
    cached = cached_weights(repo, revision, files)
    if cached is not None:
        return {"file": cached}
    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
    fix = (
        "download them once where the hub is reachable, set model.pretrained_path=/path/to/weights, "
        "or train from scratch with model.pretrained=false"
    )
    offline = next(
        (v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v, "").upper() in _TRUE), None
    )
    if offline:
        raise ModelConfigError(
            f"model.pretrained=true: timm's weights for model.name='{name}' ({repo}) are not in {where} and "
            f"{offline}={os.environ[offline]} keeps the hub away: {fix}"
        )
    reason = hub_unreachable(constants.ENDPOINT)
    if reason:
        raise ModelConfigError(
            f"model.pretrained=true: timm's weights for model.name='{name}' ({repo}) are not in {where} and "
            f"{constants.ENDPOINT} cannot be reached ({reason}): {fix}"
        )
    return {}


def _hub_location(name: str) -> tuple[str, str | None, tuple[str, ...]]:
    """(repo id, revision, candidate file names) of timm's default (or tagged: `convnext_tiny.fb_in22k`) weights."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an architecture timm knows with a tag it does not (resnet18.bogus)
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        raise ModelConfigError(
            f"model.pretrained=true: timm has no hub weights for model.name='{name}' "
            f"(tags with weights: {', '.join(timm.list_pretrained(name.split('.')[0] + '*')[:5]) or 'none'}): "
            "pick a tagged name, or set model.pretrained_path=/path/to/weights"
        )
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return repo, revision or None, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES


def cached_weights(repo: str, revision: str | None, files: tuple[str, ...] = HUB_FILES) -> str | None:
    """The local path of the first of `files` the Hugging Face cache holds for `repo` (no network), else None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in files:
        path = try_to_load_from_cache(repo, filename, revision=revision)
        if isinstance(path, str):  # not None, not the "known to be missing" marker
            return path
    return None


def hub_unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """None if `endpoint` answers within `timeout` seconds (through the user's proxy settings), else why not."""
    from huggingface_hub import get_session

    try:
        status = get_session().head(endpoint, timeout=timeout).status_code
    except Exception as exc:  # any failure to connect: DNS, refused, timeout, proxy, TLS
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return f"HTTP {status} (a proxy or portal in the way?)" if status >= 400 else None
