"""Tracking: offline W&B runs (one per multirun job), env.txt, and the pictures of a run."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


# wandb 0.31 has no Python reader for .wandb files; a logged metric is stored as an item whose nested key
# (protobuf field 2: 0x12, length) is followed by its JSON value (field 16: 0x82 0x01). Config values differ.
def _logged(run_file: bytes, key: str) -> bool:
    return b"\x12" + bytes([len(key)]) + key.encode() + b"\x82\x01" in run_file


def _offline_runs(folder):
    return sorted(folder.rglob("offline-run-*/run-*.wandb"))


def test_wandb_offline_without_credentials(wandb_run):
    """conftest.py's `wandb_run`: `logger=wandb` with no credentials and WANDB_MODE unset must go offline."""
    run_dir, proc, _ = wandb_run
    runs = _offline_runs(run_dir)
    assert len(runs) == 1
    assert runs[0].parents[1] == run_dir / "wandb"  # in the run dir's own wandb/ folder
    data = runs[0].read_bytes()
    for key in ("val/f1", "val/acc", "train/samples_per_sec", "train/data_wait_frac", "lr-AdamW/pg1"):
        assert _logged(data, key), key
    # tells the user how to upload later
    assert "W&B ran offline (no credentials found). Upload later with: wandb sync" in proc.stdout + proc.stderr
    assert (run_dir / "metrics.csv").exists()  # CSV stays on beside W&B


def test_run_pictures_and_reports(wandb_run):
    run_dir, _, _ = wandb_run
    for name in ("augmented_samples.png", "confusion_matrix.png", "worst_misclassified.png"):
        with Image.open(run_dir / name) as img:
            assert img.format == "PNG" and img.size[0] > 300, name
    per_class = pd.read_csv(run_dir / "per_class.csv")
    assert per_class["class"].tolist() == ["bar", "circle", "square"]
    assert per_class["support"].sum() == 6 and per_class[["precision", "recall", "f1"]].le(1).all().all()
    env = (run_dir / "env.txt").read_text()
    for key in ("python:", "torch:", "cuda_available:", "cudnn_version:", "gpus:", "cpus_available:", "timm=="):
        assert key in env, key


def test_multirun_jobs_are_separate_wandb_runs(wandb_run):
    """conftest.py's `wandb_run` is a two-job multirun: each job its own offline W&B run, in its own run dir."""
    run_dir, proc, _ = wandb_run
    sweep = run_dir.parent
    runs = _offline_runs(sweep)
    assert len(runs) == 2 and {r.relative_to(sweep).parts[0] for r in runs} == {"0", "1"}
    assert all(_logged(r.read_bytes(), "val/f1") for r in runs)
    assert (proc.stdout + proc.stderr).count("W&B ran offline (no credentials found)") == 2
