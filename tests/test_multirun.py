"""Multirun: every job in its own folder, `summary.csv` of the sweep (failed jobs too), distinct sweep dirs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from helpers import FAST, ROOT, read_metrics, run_cli

from imgcls.extras.sweep_summary import COLUMNS, read_summary, record_job, write_summary

# The sweeps below choose model.name themselves; one tiny batch per epoch keeps each job at a few seconds.
SWEEP_FAST = (
    *[o for o in FAST if not o.startswith("model.name=")],
    "trainer.limit_train_batches=2",
)


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_write_summary_sorts_best_first_failed_last(tmp_path):
    rows = [
        {"job": 0, "status": "completed", "mode": "max", "best": 0.5},
        {"job": 1, "status": "failed", "mode": "max", "error": "ValueError: boom"},
        {"job": 2, "status": "completed", "mode": "max", "best": 0.9},
        {"job": 3, "status": "completed", "mode": "max"},  # no monitored value (e.g. callbacks=none)
        {"job": 4, "status": "completed", "mode": "max", "best": 0.7},
    ]
    out = _csv(write_summary(tmp_path / "summary.csv", rows))
    assert [r["job"] for r in out] == ["2", "4", "0", "3", "1"]
    assert list(out[0]) == list(COLUMNS)
    assert out[-1]["status"] == "failed" and out[-1]["error"] == "ValueError: boom" and out[-1]["best"] == ""

    for row in rows:
        row["mode"] = "min"  # e.g. monitor=val/loss: lowest first
    assert [r["job"] for r in _csv(write_summary(tmp_path / "summary.csv", rows))] == ["0", "4", "2", "3", "1"]


def test_record_job_adds_and_replaces_rows(tmp_path):
    path = tmp_path / "summary.csv"
    record_job(path, {"job": 0, "status": "completed", "mode": "max", "best": 0.25, "epochs": 3})
    record_job(path, {"job": 1, "status": "completed", "mode": "max", "best": 0.75, "epochs": 3})
    record_job(path, {"job": 0, "status": "completed", "mode": "max", "best": 0.95, "epochs": 4})  # job 0 again
    rows = read_summary(path)
    assert [(r["job"], r["best"], r["epochs"]) for r in rows] == [(0, 0.95, 4), (1, 0.75, 3)]
    assert not list(tmp_path.glob(".summary.csv.*.tmp"))  # the atomic write left no temp file


@pytest.mark.slow
def test_grid_sweep_runs_every_job_and_summarises_them_failed_ones_too(image_tree, tmp_path):
    """A 3 x 2 grid whose first model does not exist: its two jobs fail, the four others still run, the summary
    ranks the completed ones (by val/loss, lower is better: distinct values, unlike val/f1 after one tiny epoch,
    so the order shows) and lists the failed ones last, and the exit status tells CI."""
    proc = run_cli(
        "train.py",
        "-m",
        "model.name=not_a_model,test_resnet,test_efficientnet",
        "augment=none,basic",
        "monitor=val/loss",
        "monitor_mode=min",
        "data=folder",
        f"data.root={image_tree}",
        *SWEEP_FAST,
        f"hydra.sweep.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3", "4", "5"]

    rows = _csv(tmp_path / "summary.csv")
    done, failed = rows[:4], rows[4:]
    assert len(rows) == 6 and all(r["status"] == "completed" and not r["error"] for r in done)
    bests = [float(r["best"]) for r in done]
    assert bests == sorted(bests) and len(set(bests)) == 4  # lowest loss first
    grid = set()
    for row in done:
        metrics = read_metrics(tmp_path / row["job"])
        assert row["run_dir"] == str(tmp_path / row["job"])
        assert row["monitor"] == "val/loss" and row["mode"] == "min"
        assert float(row["best"]) == pytest.approx(metrics["best_score"])
        # optimized_metric follows the monitor: `${monitor}_best`, the run's best val/loss (the best checkpoint's)
        assert float(row["optimized_metric"]) == pytest.approx(metrics["final"]["val/loss_best"])
        assert float(row["optimized_metric"]) == pytest.approx(metrics["best_score"])
        assert int(row["epochs"]) == metrics["epochs"] == 1 and float(row["wall_time_s"]) > 0
        assert (tmp_path / row["job"] / "checkpoints" / "best.ckpt").exists()
        overrides = row["overrides"].split()
        assert f"data.root={image_tree}" in overrides
        grid.add(tuple(o for o in overrides if o.startswith(("model.name=", "augment="))))
    assert grid == {
        (f"model.name={m}", f"augment={a}") for m in ("test_resnet", "test_efficientnet") for a in ("none", "basic")
    }
    assert sorted(r["job"] for r in failed) == ["0", "1"]
    for row in failed:
        assert row["status"] == "failed" and row["best"] == ""
        assert row["error"].startswith("ModelConfigError: model.name='not_a_model' is not a timm model")
        assert "model.name=not_a_model" in row["overrides"] and not (tmp_path / row["job"] / "metrics.json").exists()
    assert "Sweep summary" in proc.stdout and "best val/loss (min)" in proc.stdout
    assert "model.name=test_efficientnet augment=basic" in proc.stdout  # the table shows what varies
    assert "2 of 6 jobs failed" in proc.stdout


# Runs a script with Hydra's clock pinned to one second (microseconds stay real): two processes started this
# way are "started in the same second" however loaded the machine is.
_SAME_SECOND = """
import datetime, runpy, sys
import hydra.core.utils

class SameSecond(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.now(tz).replace(year=2030, month=1, day=2, hour=3, minute=4, second=5)

hydra.core.utils.datetime = SameSecond  # what Hydra's ${now:...} resolver calls
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_two_sweeps_started_in_the_same_second_get_their_own_dirs(image_tree, tmp_path):
    """The default sweep-dir pattern, two sweeps at once in the same second: neither overwrites the other."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", "IMGCLS_ROOT": str(tmp_path)}
    procs = []
    for seed in (1, 2):
        with open(tmp_path / f"out{seed}.txt", "w") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _SAME_SECOND,
                        str(ROOT / "train.py"),
                        "-m",
                        f"seed={seed}",
                        "model.name=test_resnet",
                        "data=folder",
                        f"data.root={image_tree}",
                        *SWEEP_FAST,
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    for seed, proc in zip((1, 2), procs):
        assert proc.wait(timeout=300) == 0, (tmp_path / f"out{seed}.txt").read_text()[-4000:]

    sweeps = sorted((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 2, [s.name for s in sweeps]
    assert all(s.name.startswith("2030-01-02_03-04-05") for s in sweeps)  # the pinned second
    seeds = set()
    for sweep in sweeps:
        (row,) = _csv(sweep / "summary.csv")  # one job each: nothing of the other sweep in it
        assert row["status"] == "completed" and row["run_dir"] == str(sweep / "0")
        assert (sweep / "0" / "metrics.json").exists()
        seed = next(o for o in row["overrides"].split() if o.startswith("seed="))
        assert f"- {seed}" in (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
        seeds.add(seed)
    assert seeds == {"seed=1", "seed=2"}
