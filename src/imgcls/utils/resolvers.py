"""OmegaConf resolvers used by the configs; registered when `imgcls` task modules are imported."""

from __future__ import annotations

import netrc
import os

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


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("imgcls.wandb_offline", wandb_offline, replace=True)
