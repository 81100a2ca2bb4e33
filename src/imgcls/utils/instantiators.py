"""Build callbacks and loggers from their config groups (each entry with a `_target_` is one object)."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls.utils.logging import get_logger

log = get_logger(__name__)


def instantiate_group(cfg: DictConfig | None, kind: str) -> dict[str, Any]:
    """Every `_target_` entry of a group by its key, announced; entries set to null (switched off) are skipped."""
    objects: dict[str, Any] = {}
    if not cfg:
        log.warning(f"No {kind} configured")
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"the {kind} config must be a mapping of name -> {{_target_: ...}}, got {type(cfg).__name__}")
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info(f"Instantiating {kind} <{conf._target_}>")
            objects[str(name)] = hydra.utils.instantiate(conf)
    return objects
