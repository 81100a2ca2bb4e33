"""Spawned DDP processes (`trainer=ddp_cpu`: ddp_spawn) log where the run logs and print no known warning.

Each spawned process is a new interpreter: Hydra set up logging (the console and `<run dir>/<task>.log`) and the
task filtered the known warnings in the main process only, so whatever rank 0 logged during fit or test was
lost and every rank printed the warnings a run otherwise silences. Made in the main process, `SpawnedLogging`
keeps the root logger's handlers as set up there; Lightning pickles its callbacks into each spawned process, and
there, as it is unpickled (before the DataModule's setup or any hook runs), it sets the same handlers up.
Lightning's own loggers print to the console only (they do not propagate: Lightning was imported before logging
was set up), in the main process as in spawned ones.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from lightning.pytorch.callbacks import Callback

from imgcls.utils.logging import global_rank, silence_known_warnings


class SpawnedLogging(Callback):
    """A callback only to travel with the others into spawned processes: it has no hooks."""

    def __init__(self) -> None:
        self.main_process = os.getpid()
        root = logging.getLogger()
        self.level = root.level
        # (log file or None for the console stream, its stream name, formatter, level) for each root handler
        self.handlers: list[tuple[str | None, str, logging.Formatter | None, int]] = []
        for handler in root.handlers:
            if isinstance(handler, logging.FileHandler):
                self.handlers.append((handler.baseFilename, "", handler.formatter, handler.level))
            elif isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr):
                name = "stdout" if handler.stream is sys.stdout else "stderr"
                self.handlers.append((None, name, handler.formatter, handler.level))

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if os.getpid() == self.main_process:  # a copy in the same process (deepcopy): nothing to set up
            return
        silence_known_warnings()
        root = logging.getLogger()
        if root.handlers:  # something in this process set logging up already
            return
        root.setLevel(self.level)
        for filename, stream, formatter, level in self.handlers:
            handler = logging.FileHandler(filename) if filename else logging.StreamHandler(getattr(sys, stream))
            handler.setFormatter(formatter)
            handler.setLevel(level)
            handler.addFilter(_rank_zero_or_warning)
            root.addHandler(handler)


def _rank_zero_or_warning(record: logging.LogRecord) -> bool:
    """Other ranks' info lines (botocore's, litdata's: libraries that do not check the rank) would repeat rank
    0's; their warnings and errors are theirs. (The rank is known by the time anything is logged.)"""
    return record.levelno >= logging.WARNING or global_rank() == 0
