"""One place for what must happen after every task, even a failed one (important inside a multirun)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from imgcls.utils.logging import get_logger

log = get_logger(__name__)


def task_wrapper(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Log the failure, always close W&B (so the next multirun job gets its own run), print the output dir."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception:
            log.exception(f"Task '{cfg.get('task_name', task.__name__)}' failed")
            raise
        finally:
            log.info(f"Output dir: {cfg.paths.output_dir}")
            _finish_wandb()

    return wrapped


def _finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            log.info("Closing the W&B run")
            wandb.finish()
