"""A run resumed in its run dir continues its logs: metrics.csv keeps the rows up to the checkpoint's step, and
W&B continues the same run (one id per run dir, in wandb_id.txt)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from imgcls.resume.runs import wandb_run_id
from imgcls.resume.state import saved_position


def continue_logs(cfg: DictConfig, output_dir: Path, checkpoint: Mapping[str, Any] | None) -> None:
    """Set `logger.csv.resume_at` from the `checkpoint` being resumed (None: a new run) and `logger.wandb.id`."""
    loggers = cfg.get("logger") or {}
    with open_dict(cfg):
        if checkpoint is not None and (loggers.get("csv") or {}).get("_target_", "").startswith("imgcls."):
            position = saved_position(checkpoint)
            epoch = position[0] if position else int(checkpoint.get("epoch", 0)) + 1
            cfg.logger.csv.resume_at = [epoch, int(checkpoint.get("global_step", 0))]
        if loggers.get("wandb") and loggers.wandb.get("id") is None and rank_zero_only.rank == 0:
            cfg.logger.wandb.id = wandb_run_id(output_dir)
