"""Lightning's CSVLogger, except that `metrics.csv` is the run's: a resumed run continues it instead of deleting
it, and under ddp_spawn the test stage's processes continue what fit's wrote."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.utilities import rank_zero_only

from imgcls.utils.compat import csv_writer, set_csv_header
from imgcls.utils.io import atomic_write_text
from imgcls.utils.logging import get_logger

log = get_logger(__name__)


def rows_before(path: Path, epoch: int, step: int) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows up to the last one logged before (`epoch`, `step`): where a resumed run starts
    training again. Later rows were logged by the killed run after its last checkpoint; the resumed run trains
    those steps again and logs them again. (Rows without an epoch, e.g. the LR monitor's, are cut at the same
    place, by their position in the file.)"""
    text = path.read_text()
    if text and not text.endswith("\n"):  # killed while appending: the last line is partial
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    last = -1
    for i, row in enumerate(rows):
        try:
            row_epoch, row_step = int(float(row.get("epoch") or "nan")), int(float(row.get("step") or "nan"))
        except (TypeError, ValueError):  # no epoch (LR monitor, throughput rows) or a damaged row
            continue
        if row_epoch < epoch or (row_epoch == epoch and row_step < step):
            last = i
    return list(reader.fieldnames or []), rows[: last + 1]


class CSVLogger(_LightningCSVLogger):
    """Set `resume_at=(epoch, global_step)` (train does, when it resumes a checkpoint in this run dir) to keep
    the rows logged before that point and append after them (Lightning rewrites the header if new columns
    appear). Rows are also flushed at every checkpoint, so a kill loses none that the checkpoint covers.

    The file is made ready once, where the logger is made (rank 0); in each process the writer then continues
    it under the header it has. DDP spawn runs each stage (fit, then test) in new processes, with the main
    process's writer unpickled: knowing no columns, Lightning's would fail to rewrite the rows fit wrote."""

    _process: int | None = None  # the process whose writer knows the file's header

    def __init__(self, *args: Any, resume_at: tuple[int, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_at = tuple(resume_at) if resume_at is not None else None
        self._start_file()

    @rank_zero_only
    def _start_file(self) -> None:
        """A resumed run keeps the rows logged before its checkpoint; a new run in a used run dir starts a new
        file (as Lightning warns it will), said in the log."""
        path = Path(self.log_dir) / "metrics.csv"
        if _aside(path).is_file() and not path.is_file():  # killed while a writer was being made
            os.replace(_aside(path), path)
        if not path.is_file():
            return
        if self.resume_at is None:
            log.info(f"Starting a new {path}: the one there was of an earlier run (ckpt_path=last resumes it)")
            path.unlink()
            return
        header, rows = rows_before(path, *self.resume_at)
        if not header:  # killed before its first row
            path.unlink()
            return
        out = io.StringIO()
        table = csv.DictWriter(out, fieldnames=header)
        table.writeheader()
        table.writerows(rows)
        atomic_write_text(path, out.getvalue())

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        path = Path(self.log_dir) / "metrics.csv"
        writer = csv_writer(self)
        if writer is None:  # Lightning's writer deletes an existing metrics.csv as it is made: this run's rows
            if path.is_file():  # (see _start_file) are moved aside meanwhile, by renames a kill cannot tear
                os.replace(path, _aside(path))
            writer = super().experiment
            if _aside(path).is_file():
                os.replace(_aside(path), path)
        if self._process != os.getpid():  # first use in this process: continue the file under its header
            self._process = os.getpid()
            set_csv_header(writer, _header(path))
        return writer

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self.save()


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.kept")


def _header(path: Path) -> list[str]:
    """The columns of a metrics.csv (none if there is no file yet)."""
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return next(csv.reader(file), [])
