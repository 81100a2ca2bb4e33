"""Lightning's CSVLogger, except that a resumed run continues its `metrics.csv` instead of deleting it."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger

from imgcls.utils.compat import csv_writer, set_csv_header
from imgcls.utils.io import atomic_write_text


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
    appear). Rows are also flushed at every checkpoint, so a kill loses none that the checkpoint covers."""

    def __init__(self, *args: Any, resume_at: tuple[int, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_at = tuple(resume_at) if resume_at is not None else None

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if (created := csv_writer(self)) is not None:
            return created
        path = Path(self.log_dir) / "metrics.csv"
        kept = rows_before(path, *self.resume_at) if self.resume_at is not None and path.is_file() else None
        writer = super().experiment  # Lightning's writer deletes an existing metrics.csv here
        if kept and kept[0]:
            header, rows = kept
            out = io.StringIO()
            table = csv.DictWriter(out, fieldnames=header)
            table.writeheader()
            table.writerows(rows)
            atomic_write_text(path, out.getvalue())
            set_csv_header(writer, header)
        return writer

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self.save()
