"""Config helpers shared by the data and model code: plain values for checkpoints, `_target_` factories."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from imgcls.utils.errors import ConfigError


def to_plain(value: Any) -> Any:
    """OmegaConf containers -> builtin dicts/lists, so what lands in a checkpoint loads with weights_only=True."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def fit_channels(values: Any, channels: int) -> list[float]:
    """Normalisation stats are per RGB channel: a grayscale input uses their mean, one value broadcasts to 3."""
    values = list(values)
    if len(values) == channels:
        return values
    if channels == 1:
        return [sum(values) / len(values)]
    return values * channels if len(values) == 1 else values[:channels]


def factory(value: Any, key: str) -> Callable[..., Any] | None:
    """The extension point every pluggable part shares (optimizer, scheduler, loss, head, class weights): a
    `_target_` config (always built as a partial, so `_partial_: true` is optional) or a Python callable -> the
    callable; None stays None. `key` names the setting in the error for anything else."""
    if isinstance(value, functools.partial):  # Hydra's nested partial: list/dict arguments still OmegaConf's
        return functools.partial(value.func, *value.args, **{k: to_plain(v) for k, v in value.keywords.items()})
    if value is None or callable(value):
        return value
    if isinstance(value, Mapping) and "_target_" in value:
        return hydra.utils.instantiate(value, _partial_=True, _convert_="all")
    raise ConfigError(f"{key}={to_plain(value)!r} is not a `_target_` config")


def _qualified(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def as_config(value: Any) -> Any:
    """The plain `_target_` config of a factory (a class, function or functools.partial of one), so a module's
    hyper-parameters can record it and be rebuilt from the record alone; plain values pass through."""
    if isinstance(value, functools.partial):
        if value.args:
            raise TypeError(f"record {value!r} with keyword arguments only, so it has a config form")
        keywords = {k: to_plain(v) for k, v in value.keywords.items()}
        return {"_target_": _qualified(value.func), "_partial_": True, **keywords}
    if callable(value) and hasattr(value, "__qualname__") and "<" not in value.__qualname__:
        return {"_target_": _qualified(value), "_partial_": True}
    if callable(value):
        raise TypeError(f"{value!r} has no importable name: pass a module-level class or function")
    return to_plain(value)
