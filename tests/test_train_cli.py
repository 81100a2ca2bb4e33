"""Training end to end: what a run writes, each data layout, the debug configs, errors, DDP.

In-process (tests/helpers.py's `run_task`: the config as the CLI composes it, then the task function) wherever no
process boundary is under test; real `python train.py` runs for the default recipe (the CLI smoke run, with the
network blocked, conftest.py's `default_run`) and for DDP under multirun (spawned processes).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import FAST, read_metrics, run_cli, run_task


@pytest.mark.slow  # trains (in-process): every training test is slow, test-fast trains nothing
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


@pytest.mark.slow
def test_throughput_telemetry_reaches_the_csv_log(folder_run):
    logged = pd.read_csv(folder_run / "metrics.csv")
    for key in ("train/samples_per_sec", "train/data_wait_frac", "train/step_time", "train/loss_step", "val/f1"):
        assert logged[key].notna().any(), key
    assert logged["train/data_wait_frac"].dropna().between(0, 1).all()


@pytest.mark.slow
def test_split_csv_is_stratified_and_complete(folder_run, image_tree):
    split = pd.read_csv(folder_run / "split.csv")
    assert list(split.columns[:4]) == ["path", "label", "label_name", "split"]
    assert len(split) == 60 and split["path"].is_unique
    counts = split.groupby(["split", "label_name"]).size().unstack()
    assert (counts.loc["val"] == 2).all() and (counts.loc["test"] == 4).all()


@pytest.mark.slow
def test_csv_data_with_groups(tmp_path):
    from helpers import make_manifest

    make_manifest(tmp_path / "data", per_class=12, groups=True)
    run_task(
        "train",
        "data=csv",
        f"data.root={tmp_path / 'data'}",
        "data.val_fraction=0.25",
        *FAST,
        run_dir=tmp_path / "run",
    )
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert split.groupby("group")["split"].nunique().max() == 1  # no group on both sides


@pytest.mark.slow
def test_strong_augment_with_two_workers_on_default_data(mnist_root, tmp_path):
    """The README's `python train.py augment=strong loader.num_workers=2 trainer.max_epochs=1`, on the real digits."""
    run_task(
        "train",
        "augment=strong",
        "loader.num_workers=2",
        "trainer.max_epochs=1",
        f"paths.data_dir={mnist_root.parent}",
        "trainer.limit_train_batches=20",
        "callbacks.progress_bar=null",
        run_dir=tmp_path,
    )
    assert read_metrics(tmp_path)["final"]["val/acc"] > 0.2  # 10 classes: chance is 0.1 (20 strong steps: 0.28-0.52)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the session's longest training: an epoch of 4,500 digits
def test_default_run_learns_real_digits(default_run):
    """The default recipe (make train) on MNIST as `python train.py` (conftest.py); 1 epoch instead of 10."""
    run_dir, _ = default_run
    metrics = read_metrics(run_dir)
    assert metrics["final"]["val/acc"] >= 0.95
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_fast_dev_run_debug_config(image_tree, tmp_path):
    run_task("train", "debug=fdr", "data=folder", f"data.root={image_tree}", *FAST, run_dir=tmp_path)


# `augment=extreme` (an unknown group option): tests/test_config_errors.py, with the options it lists.
@pytest.mark.parametrize(
    "overrides,expected",
    [
        (("data=folder",), "data.root"),
        (("data=folder", "data.root=/no/such/folder"), "data.root='/no/such/folder' does not exist"),
        (("model.name=resnet181",), "closest timm names: resnet18"),
        (("data.val_fraction=1.5",), "data.val_fraction=1.5 must be between 0 and 1"),
    ],
)
def test_config_errors_name_the_key(overrides, expected, mnist_root, tmp_path):
    with pytest.raises(Exception) as caught:
        run_task("train", *overrides, "print_config=false", f"paths.data_dir={mnist_root.parent}", run_dir=tmp_path)
    assert expected in str(caught.value)


@pytest.fixture(scope="session")  # session: built once per worker even if its tests are not run in a row
def ddp_sweep(manifest, tmp_path_factory):
    """`python train.py -m trainer=ddp_cpu data=csv data.task=multiclass,multilabel ...`: two jobs, each spawning
    its own 2 processes (gloo); the manifest's single labels read as one-label sets in the multi-label job. Job 0
    is also the plain `trainer=ddp_cpu` run checked below (one DDP training less)."""
    sweep = tmp_path_factory.mktemp("ddp_sweep")
    proc = run_cli(
        "train.py",
        "-m",
        "trainer=ddp_cpu",
        "data=csv",
        f"data.root={manifest.parent}",
        "data.val_fraction=0.25",
        *FAST,
        "data.task=multiclass,multilabel",
        "model.ema={decay:0.9,warmup:false}",  # each rank averages its own (identical) weights
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    return sweep, proc


@pytest.mark.slow
def test_ddp_cpu_two_processes(ddp_sweep, tmp_path):
    """trainer=ddp_cpu: 2 spawned processes (gloo). 15 validation images split 8 + 7 over the ranks, unpadded: the
    logged val/acc is exactly the single-process accuracy of the same weights on the same 15 images, and the
    EMA's val_ema/acc that of the EMA weights (what predict uses)."""
    sweep, proc = ddp_sweep
    assert (proc.stdout + proc.stderr).count("MEMBER: 2/2") == 2  # in each job, both processes joined the group
    run = sweep / "0"
    metrics = read_metrics(run)
    assert metrics["epochs"] == 1 and metrics["global_step"] > 0 and metrics["best_score"] is not None
    assert (run / "checkpoints" / "last.ckpt").exists()
    predict = (f"ckpt_path={metrics['best_checkpoint']}", f"input={run / 'split.csv'}", "split=val")
    run_task("predict", *predict, "loader.num_workers=0", run_dir=tmp_path / "predict")
    predicted = read_metrics(tmp_path / "predict")
    assert predicted["n"] == 15 and predicted["weights"] == ["ema"]
    assert metrics["final"]["val_ema/acc"] == pytest.approx(predicted["acc"], abs=1e-6)
    run_task("predict", *predict, "ema=false", "loader.num_workers=0", run_dir=tmp_path / "raw")
    assert metrics["final"]["val/acc"] == pytest.approx(read_metrics(tmp_path / "raw")["acc"], abs=1e-6)


@pytest.mark.slow
def test_ddp_multilabel_metrics_count_each_image_once(ddp_sweep, tmp_path):
    """The multi-label job: mAP, subset accuracy and the tuned-threshold F1 logged under DDP are those of the same
    weights on the same 15 validation images in one process (each image once, the thresholds tuned on all)."""
    sweep, _ = ddp_sweep
    metrics = read_metrics(sweep / "1")
    predict = (f"ckpt_path={metrics['best_checkpoint']}", f"input={sweep / '1' / 'split.csv'}", "split=val")
    run_task("predict", *predict, "ema=false", "loader.num_workers=0", run_dir=tmp_path / "raw")
    raw = read_metrics(tmp_path / "raw")
    assert raw["n"] == 15
    final = metrics["final"]
    assert final["val/map"] == pytest.approx(raw["map"], abs=1e-6)
    assert final["val/f1_tuned"] == pytest.approx(raw["f1"], abs=1e-6)
    run_task("predict", *predict, "loader.num_workers=0", run_dir=tmp_path / "ema")
    ema = read_metrics(tmp_path / "ema")  # the EMA weights at the thresholds tuned on their own outputs
    assert final["val_ema/map"] == pytest.approx(ema["map"], abs=1e-6)
    assert final["val_ema/f1_tuned"] == pytest.approx(ema["f1"], abs=1e-6)


@pytest.mark.slow
def test_multirun_of_ddp_cpu_jobs(ddp_sweep):
    """ddp_spawn under Hydra multirun: each job spawns its own 2 processes and finishes (plain `ddp` would re-run
    the command line, which breaks under -m)."""
    sweep, _ = ddp_sweep
    runs = sorted(sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    assert all(json.loads(r.read_text())["epochs"] == 1 for r in runs)
