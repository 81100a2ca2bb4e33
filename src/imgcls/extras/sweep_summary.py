"""Multirun summary: `<sweep dir>/summary.csv` gets one row per job (overrides, status, best monitored metric,
epochs, wall time, run dir, error) as each job ends, and the sweep ends with a table of them, best first.

A Hydra callback (configs/hydra/default.yaml), not code in the task, because it must also see the jobs that
raised. Hydra's BasicSweeper re-raises a failed job's exception only after the whole batch ran, which skips
`on_multirun_end`; the table is then printed at exit instead, after Hydra's error (the exit status stays 1).
Each job rewrites the CSV atomically under a file lock, as launchers may run jobs in parallel processes.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import math
import shlex
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from imgcls.utils.compat import job_return_value
from imgcls.utils.errors import ConfigError
from imgcls.utils.io import atomic_write_text, file_lock
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

COLUMNS = (
    "job",
    "status",
    "monitor",
    "mode",
    "best",
    "optimized_metric",
    "epochs",
    "wall_time_s",
    "run_dir",
    "overrides",
    "error",
)
_INTS, _FLOATS = ("job", "epochs"), ("best", "optimized_metric", "wall_time_s")


def sort_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed jobs by their best monitored value (per the row's mode, best first), then jobs without one,
    then failed jobs; ties by job number."""

    def key(row: dict[str, Any]) -> tuple:
        best = _number(row.get("best"))
        sign = 1.0 if row.get("mode") == "min" else -1.0
        return (
            row.get("status") != "completed",
            best is None,
            0.0 if best is None else sign * best,
            _number(row.get("job")) or 0,
        )

    return sorted(rows, key=key)


def write_summary(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Sort `rows` and write them as CSV (atomically: a reader never sees half a table)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sort_rows(rows):
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    return atomic_write_text(path, buf.getvalue())


def read_summary(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a summary.csv with numbers parsed back (empty cells become None); [] if there is none."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for k in _INTS + _FLOATS:
            value = _number(row.get(k))
            row[k] = None if value is None else int(value) if k in _INTS else value
        row.update({k: row.get(k) or None for k in COLUMNS if k not in _INTS + _FLOATS})
    return rows


def record_job(path: str | Path, row: dict[str, Any]) -> Path:
    """Add (or replace, by job number) one job's row and rewrite the summary, under a lock between processes."""
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock")):
        rows = [r for r in read_summary(path) if r["job"] != row["job"]]
        return write_summary(path, [*rows, row])


def print_summary(path: str | Path) -> None:
    """The summary as a rich table; overrides that every job shares are left out (they are in the CSV)."""
    import rich.console
    import rich.table

    rows = sort_rows(read_summary(path))
    if not rows:
        return
    sets = [shlex.split(r["overrides"] or "") for r in rows]
    common = set.intersection(*map(set, sets)) if len(rows) > 1 else set()
    monitor = next(
        (f"best {r['monitor']}" + (f" ({r['mode']})" if r["mode"] else "") for r in rows if r["monitor"]), "best"
    )
    failed = sum(r["status"] != "completed" for r in rows)
    table = rich.table.Table(title=f"Sweep summary: {path}", title_justify="left")
    for name in ("#", "status", "overrides", monitor, "epochs", "time", "run dir") + (("error",) if failed else ()):
        table.add_column(name, justify="right" if name in ("#", monitor, "epochs", "time") else "left")
    for row, overrides in zip(rows, sets):
        ok = row["status"] == "completed"
        cells = [
            str(row["job"]),
            row["status"],
            " ".join(o for o in overrides if o not in common),
            "" if row["best"] is None else f"{row['best']:.4f}",
            _blank(row["epochs"]),
            "" if row["wall_time_s"] is None else f"{row['wall_time_s']:.1f}s",
            _relative(row["run_dir"], path),
        ]
        table.add_row(*cells, *((row["error"] or "",) if failed else ()), style=None if ok else "red")
    console = rich.console.Console()
    if not console.is_terminal:  # a log file or CI: no terminal width to respect, keep rows on one line
        console = rich.console.Console(width=160)
    console.print(table)
    if failed:
        console.print(
            f"[red]{failed} of {len(rows)} jobs failed[/red] (the traceback is in each job's log); "
            f"the sweep exits with a non-zero status."
        )


class SweepSummary(Callback):
    """Hydra callback: records every multirun job in `<hydra.sweep.dir>/<filename>` and prints the table.

    `monitor_key` / `mode_key` name the config keys (read in each job's config) of the metric to rank by.
    Single runs are left alone.
    """

    def __init__(
        self,
        filename: str = "summary.csv",
        monitor_key: str = "monitor",
        mode_key: str = "monitor_mode",
    ) -> None:
        self.filename, self.monitor_key, self.mode_key = filename, monitor_key, mode_key
        self._path: Path | None = None
        self._started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._path = self._summary_path(config)
        with file_lock(self._path.with_name(f".{self._path.name}.lock")):
            self._path.unlink(missing_ok=True)  # a sweep dir given again: summarise this sweep only
        atexit.register(self._print)  # Hydra skips on_multirun_end when a job failed

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._print)
        self._print()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            record_job(self._summary_path(config), self._row(config, job_return))
        except Exception as e:  # a summary problem must never fail or stop the sweep
            log.warning(f"Could not record job {config.hydra.job.num} in {self.filename}: {e!r}")

    def _row(self, config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
        run_dir = Path(config.hydra.runtime.output_dir)
        ok = job_return.status == JobStatus.COMPLETED
        # A failed job's exception, not raised again (`return_value` would re-raise it and print it again).
        value = job_return_value(job_return)
        metrics = _read_json(run_dir / "metrics.json") if ok else {}
        return {
            "job": int(config.hydra.job.num),
            "status": job_return.status.name.lower(),
            "monitor": OmegaConf.select(config, self.monitor_key, default=None),
            "mode": OmegaConf.select(config, self.mode_key, default=None),
            "best": metrics.get("best_score"),
            "epochs": metrics.get("epochs"),
            "optimized_metric": _number(value) if ok else None,
            "wall_time_s": round(time.perf_counter() - self._started, 2),
            "run_dir": str(run_dir),
            "overrides": shlex.join(OmegaConf.to_container(config.hydra.overrides.task)),
            "error": None if ok else _first_line(value),
        }

    def _summary_path(self, config: DictConfig) -> Path:
        return Path(str(config.hydra.sweep.dir)).absolute() / self.filename

    def _print(self) -> None:
        if self._path is not None:
            print_summary(self._path)


def _number(value: Any) -> float | None:
    """A finite float from a number or a CSV cell; None for blanks, NaN, bools and anything else."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _relative(run_dir: str | None, summary: str | Path) -> str:
    """The job's folder relative to the sweep dir (the table's title names the sweep dir)."""
    try:
        return str(Path(run_dir or "").relative_to(Path(summary).parent))
    except ValueError:
        return run_dir or ""


def _blank(value: Any) -> str:
    return "" if value is None else str(value)


def _first_line(error: Any) -> str:
    """`Type: first line` of the root cause (Hydra wraps instantiation errors: the cause names the problem), or of
    the first ConfigError on the way (the task wrapper's one line for a setting, caused by what a library raised)."""
    while isinstance(error, BaseException) and not isinstance(error, ConfigError) and error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
