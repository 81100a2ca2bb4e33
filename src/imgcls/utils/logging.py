"""A rank-aware logger: under DDP only rank 0 speaks, so a message is not printed N times."""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.utilities import rank_zero_only


class _RankZeroAdapter(logging.LoggerAdapter):
    def log(self, level: int, msg: Any, *args: Any, rank_zero: bool = True, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        rank = getattr(rank_zero_only, "rank", 0) or 0
        if rank_zero and rank != 0:
            return
        msg, kwargs = self.process(msg, kwargs)
        self.logger.log(level, msg, *args, **kwargs)


def get_logger(name: str) -> logging.LoggerAdapter:
    """`logging.getLogger(name)` that logs on global rank 0 only (pass `rank_zero=False` to log everywhere)."""
    return _RankZeroAdapter(logging.getLogger(name), {})
