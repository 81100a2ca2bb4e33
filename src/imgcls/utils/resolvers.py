"""OmegaConf resolvers used by the configs; registered by the entry points before Hydra composes."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """W&B goes online only with credentials: without them, online mode fails at once (offline never does)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        return not (os.path.isfile(path) and netrc.netrc(path).authenticators("api.wandb.ai"))
    except (OSError, netrc.NetrcParseError):
        return True


def sweep_group() -> str:
    """In a multirun: the sweep folder's name, so W&B groups a sweep's jobs; else "" (no group)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        cfg = HydraConfig.get()
        return Path(cfg.sweep.dir).name if cfg.mode == RunMode.MULTIRUN else ""
    except Exception:  # no Hydra context (tests composing configs, notebooks)
        return ""


def default_monitor(task: str, prefix: str = "val") -> str:
    """The checkpoint metric of a task kind (`monitor` in train.yaml): macro-F1, or for multi-label data the mean
    average precision over classes (threshold-free; the thresholds are tuned on validation afterwards); `prefix`
    val_ema: the EMA weights' (experiment=finetune)."""
    return f"{prefix}/map" if task == "multilabel" else f"{prefix}/f1"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("imgcls.monitor", default_monitor, replace=True)
    OmegaConf.register_new_resolver("imgcls.wandb_offline", wandb_offline, replace=True)
    OmegaConf.register_new_resolver("imgcls.sweep_group", sweep_group, replace=True)
