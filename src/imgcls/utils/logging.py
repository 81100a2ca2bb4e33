"""A rank-aware logger: under DDP only rank 0 speaks, so a message is not printed N times."""

from __future__ import annotations

import logging
import os
from typing import Any

# The object Lightning sets `.rank` on (lightning.fabric.utilities.rank_zero re-exports it): importing it from
# lightning_utilities keeps `--help` from importing Lightning (and torch) just to log.
from lightning_utilities.core.rank_zero import rank_zero_only


def global_rank() -> int:
    """This process's global rank: Lightning's once it has set one, else the launcher's environment."""
    rank = getattr(rank_zero_only, "rank", None)
    if rank is None:  # Lightning not imported yet: the variables it reads itself (fabric/utilities/rank_zero.py)
        rank = next(
            (os.environ[k] for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK") if k in os.environ), 0
        )
    return int(rank or 0)


class _RankZeroAdapter(logging.LoggerAdapter):
    def log(self, level: int, msg: Any, *args: Any, rank_zero: bool = True, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        if rank_zero and global_rank() != 0:
            return
        msg, kwargs = self.process(msg, kwargs)
        self.logger.log(level, msg, *args, **kwargs)


def get_logger(name: str) -> logging.LoggerAdapter:
    """`logging.getLogger(name)` that logs on global rank 0 only (pass `rank_zero=False` to log everywhere)."""
    return _RankZeroAdapter(logging.getLogger(name), {})
