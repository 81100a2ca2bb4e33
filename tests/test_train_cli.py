"""`python train.py` end to end, as users run it (subprocesses; each takes seconds on a tiny model)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import FAST, read_metrics, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder_run(image_tree, tmp_path_factory):
    """One trained run on the generated image folder, shared by the checks below and the predict tests."""
    run_dir = tmp_path_factory.mktemp("folder_run")
    run_cli(
        "train.py",
        "data=folder",
        f"data.root={image_tree}",
        "data.test_fraction=0.2",
        *FAST,
        f"hydra.run.dir={run_dir}",
    )
    return run_dir


def test_folder_run_writes_everything(folder_run):
    for name in (
        "metrics.json",
        "metrics.csv",
        "split.csv",
        "config_tree.log",
        ".hydra/config.yaml",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "train.log",
    ):
        assert (folder_run / name).exists(), name
    metrics = read_metrics(folder_run)
    assert {"val/f1", "val/acc", "val/loss", "val/f1_best"} <= set(metrics["final"])
    assert {"test/acc", "test/f1"} <= set(metrics["test"])  # a test split exists, so it was evaluated
    assert metrics["best_checkpoint"].endswith("best.ckpt")


def test_throughput_telemetry_reaches_the_csv_log(folder_run):
    logged = pd.read_csv(folder_run / "metrics.csv")
    for key in ("train/samples_per_sec", "train/data_wait_frac", "train/step_time", "train/loss_step", "val/f1"):
        assert logged[key].notna().any(), key
    assert logged["train/data_wait_frac"].dropna().between(0, 1).all()


def test_split_csv_is_stratified_and_complete(folder_run, image_tree):
    split = pd.read_csv(folder_run / "split.csv")
    assert list(split.columns[:4]) == ["path", "label", "label_name", "split"]
    assert len(split) == 60 and split["path"].is_unique
    counts = split.groupby(["split", "label_name"]).size().unstack()
    assert (counts.loc["val"] == 2).all() and (counts.loc["test"] == 4).all()


def test_csv_data_with_groups(tmp_path):
    from helpers import make_manifest

    make_manifest(tmp_path / "data", per_class=12, groups=True)
    run_cli(
        "train.py",
        "data=csv",
        f"data.root={tmp_path / 'data'}",
        "data.val_fraction=0.25",
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert split.groupby("group")["split"].nunique().max() == 1  # no group on both sides


def test_strong_augment_with_two_workers_on_default_data(mnist_root, tmp_path):
    """The README's `python train.py augment=strong loader.num_workers=2 trainer.max_epochs=1`, on the real digits."""
    run_cli(
        "train.py",
        "augment=strong",
        "loader.num_workers=2",
        "trainer.max_epochs=1",
        f"paths.data_dir={mnist_root.parent}",
        "trainer.limit_train_batches=20",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={tmp_path}",
    )
    assert read_metrics(tmp_path)["final"]["val/acc"] > 0.2  # 10 classes: chance is 0.1 (20 strong steps: 0.28-0.52)


def test_default_run_learns_real_digits(mnist_root, tmp_path):
    """The default recipe (make train) on MNIST; 2 epochs instead of 10 keeps the suite fast."""
    run_cli(
        "train.py",
        "trainer.max_epochs=2",
        f"paths.data_dir={mnist_root.parent}",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = read_metrics(tmp_path)
    assert metrics["final"]["val/acc"] >= 0.95
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2


def test_fast_dev_run_debug_config(image_tree, tmp_path):
    run_cli("train.py", "debug=fdr", "data=folder", f"data.root={image_tree}", *FAST, f"hydra.run.dir={tmp_path}")


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (("data=folder",), "data.root"),
        (("data=folder", "data.root=/no/such/folder"), "data.root='/no/such/folder' does not exist"),
        (("model.name=resnet181",), "closest timm names: resnet18"),
        (("data.val_fraction=1.5",), "data.val_fraction=1.5 must be between 0 and 1"),
        (("augment=extreme",), "Could not find 'augment/extreme'"),
    ],
)
def test_config_errors_name_the_key(overrides, expected, mnist_root, tmp_path):
    proc = run_cli(
        "train.py",
        *overrides,
        "print_config=false",
        f"paths.data_dir={mnist_root.parent}",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr


def test_ddp_cpu_two_processes(image_tree, tmp_path):
    """trainer=ddp_cpu: 2 spawned processes (gloo). 15 validation images split 8 + 7 over the ranks, unpadded: the
    logged val/acc is exactly the single-process accuracy of the same weights on the same 15 images."""
    proc = run_cli(
        "train.py",
        "trainer=ddp_cpu",
        "data=folder",
        f"data.root={image_tree}",
        "data.val_fraction=0.25",
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr  # both processes joined the group
    metrics = read_metrics(tmp_path / "run")
    assert metrics["epochs"] == 1 and metrics["global_step"] > 0 and metrics["best_score"] is not None
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    run_cli(
        "predict.py",
        f"ckpt_path={metrics['best_checkpoint']}",
        f"input={tmp_path / 'run' / 'split.csv'}",
        "split=val",
        "loader.num_workers=0",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    predicted = read_metrics(tmp_path / "predict")
    assert predicted["n"] == 15
    assert metrics["final"]["val/acc"] == pytest.approx(predicted["acc"], abs=1e-6)


def test_multirun_of_ddp_cpu_jobs(image_tree, tmp_path):
    """ddp_spawn under Hydra multirun: each job spawns its own 2 processes and finishes (plain `ddp` would re-run
    the command line, which breaks under -m)."""
    run_cli(
        "train.py",
        "-m",
        "trainer=ddp_cpu",
        "data=folder",
        f"data.root={image_tree}",
        *FAST,
        "model.name=test_resnet,test_efficientnet",
        f"hydra.sweep.dir={tmp_path}",
        timeout=600,
    )
    runs = sorted(tmp_path.glob("*/metrics.json"))
    assert len(runs) == 2
    assert all(json.loads(r.read_text())["epochs"] == 1 for r in runs)
