"""One place for what must happen after every task, even a failed one (important inside a multirun)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from imgcls.cli.user_errors import user_error
from imgcls.utils.logging import get_logger, silence_known_warnings

log = get_logger(__name__)


def task_wrapper(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Log the failure, always close W&B (so the next multirun job gets its own run), print the output dir.

    A failure caused by a setting (see cli/user_errors.py) is one line on the console, naming the key and the
    fix, and exit status 2; its traceback goes to the run's log file only. In a multirun it fails that job only
    (the sweep summary lists its line). Anything else is a bug: its traceback is shown.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> Any:
        silence_known_warnings()
        try:
            return task(cfg)
        except Exception as exc:
            error = user_error(exc, cfg)
            if error is None:
                log.exception(f"Task '{cfg.get('task_name', task.__name__)}' failed")
                raise
            log.error(f"{type(error).__name__}: {error}")
            _to_log_files(f"The traceback of the error above ({type(exc).__name__})", exc)
            if _single_run():
                raise SystemExit(2) from None
            raise error from error.__cause__  # the ConfigError raised; or one caused by what a library raised
        finally:
            log.info(f"Output dir: {cfg.paths.output_dir}")
            _finish_wandb()

    return wrapped


def _to_log_files(message: str, exc: BaseException) -> None:
    """`message` and the traceback of `exc` into the log files only (Hydra's file handler: <run dir>/<task>.log)."""
    record = logging.LogRecord(
        log.logger.name, logging.ERROR, __file__, 0, message, None, (type(exc), exc, exc.__traceback__)
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _single_run() -> bool:
    """True for `python train.py ...`; False in a multirun, where one job must fail without stopping the rest
    (and outside Hydra, e.g. a task called from a test)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN


def _finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            log.info("Closing the W&B run")
            wandb.finish()
