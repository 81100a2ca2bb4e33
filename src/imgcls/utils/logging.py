"""What a run prints: a rank-aware logger (under DDP only rank 0 speaks, so a message is not printed N times),
and the known warnings it does not print."""

from __future__ import annotations

import logging
import os
import warnings
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


def silence_known_warnings() -> None:
    """Warnings that are expected by design here and would only teach users to ignore warnings."""
    # We override on_after_batch_transfer in the LightningModule on purpose (normalise on the device).
    warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`.*")
    # Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for users to do.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    # Our CSVLogger writes metrics.csv into the run dir, which Hydra has already filled (.hydra/, <task>.log) before
    # any logger exists, so Lightning warns for every new run; the one file it means (metrics.csv) our logger
    # handles itself (a resumed run keeps its rows: resume/csv_logger.py).
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    # Lightning's adverts (litlogger, litmodels) and its note that a ModelSummary is configured (ours, in
    # callbacks/default.yaml) come as info messages that no setting turns off.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)  # added once


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(("💡 Tip:", "Trainer already configured with model summary callbacks"))
