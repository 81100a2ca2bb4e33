"""One place for what must happen after every task, even a failed one (important inside a multirun)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from imgcls.utils.errors import ConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


def task_wrapper(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Log the failure, always close W&B (so the next multirun job gets its own run), print the output dir."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> Any:
        silence_known_warnings()
        try:
            return task(cfg)
        except ConfigError as exc:  # a setting to fix: one line, no traceback (a multirun lists it per job)
            log.error(f"{type(exc).__name__}: {exc}")
            if _single_run():
                raise SystemExit(2) from None
            raise
        except Exception:
            log.exception(f"Task '{cfg.get('task_name', task.__name__)}' failed")
            raise
        finally:
            log.info(f"Output dir: {cfg.paths.output_dir}")
            _finish_wandb()

    return wrapped


def _single_run() -> bool:
    """True for `python train.py ...`; False in a multirun, where one job must fail without stopping the rest
    (and outside Hydra, e.g. a task called from a test)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def silence_known_warnings() -> None:
    """Warnings that are expected by design here and would only teach users to ignore warnings."""
    # We override on_after_batch_transfer in the LightningModule on purpose (normalise on the device).
    warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`.*")
    # Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for users to do.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def _finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            log.info("Closing the W&B run")
            wandb.finish()
