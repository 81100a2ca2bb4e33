"""Predict round trip: the checkpoint alone rebuilds model and pre-processing; results match training.

`folder_run` is conftest.py's shared trained run. Everything runs in-process: predict.py's own main()
(tests/helpers.py's `run_main`) or the task (`run_task`); the DDP run's two ranks are spawned processes.
"""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import read_metrics, run_main, run_task


@pytest.mark.slow
def test_predictions_on_val_agree_with_training(folder_run, tmp_path):
    """As `python predict.py` would (its main(), in-process)."""
    out = tmp_path / "preds.csv"
    proc = run_main(
        "predict.py",
        f"ckpt_path={folder_run / 'checkpoints' / 'best.ckpt'}",
        f"input={folder_run / 'split.csv'}",
        "split=val",
        f"output={out}",
        "top_k=2",
        "loader.num_workers=0",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = pd.read_csv(out)
    split = pd.read_csv(folder_run / "split.csv")
    val = split[split["split"] == "val"].reset_index(drop=True)
    columns = ["path", "label", "label_name", "pred", "pred_name", "prob", "pred_2", "pred_name_2", "prob_2"]
    assert list(preds.columns) == columns  # labelled input: the truth beside each answer
    assert preds["path"].tolist() == val["path"].tolist()  # every row once, input order
    assert preds["label_name"].astype(str).tolist() == val["label_name"].astype(str).tolist()
    acc = (preds["pred_name"].astype(str) == val["label_name"].astype(str)).mean()
    trained = read_metrics(folder_run)["final"]["val/acc"]  # one epoch: best checkpoint == final weights
    assert acc == pytest.approx(trained, abs=1e-6)
    assert read_metrics(tmp_path / "run")["acc"] == pytest.approx(trained, abs=1e-6)
    assert ((preds["prob"] >= preds["prob_2"]) & (preds["prob"] <= 1)).all()


@pytest.mark.slow
def test_predict_folder_and_single_image(folder_run, image_tree, tmp_path):
    ckpt = folder_run / "checkpoints" / "best.ckpt"
    run_task("predict", f"ckpt_path={ckpt}", f"input={image_tree}", "loader.num_workers=0", run_dir=tmp_path / "a")
    preds = pd.read_csv(tmp_path / "a" / "predictions.csv")
    assert len(preds) == 60  # hidden `._` file skipped
    # a folder of class folders is labelled input: each row's label is its folder's name
    assert (preds["label_name"] == preds["path"].map(lambda p: p.split("/")[-2])).all()
    assert read_metrics(tmp_path / "a")["acc"] == pytest.approx((preds["label"] == preds["pred"]).mean())
    one = next((image_tree / "circle").glob("0*.png"))
    run_task("predict", f"ckpt_path={ckpt}", f"input={one}", "top_k=5", run_dir=tmp_path / "b")
    one_row = pd.read_csv(tmp_path / "b" / "predictions.csv")
    assert one_row["pred_name"].isin(["bar", "circle", "square"]).all() and "label" not in one_row
    assert "pred_3" in one_row and "pred_4" not in one_row  # top_k=5 of 3 classes: all 3 (and a warning)


def test_predict_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(Exception, match="nope.ckpt' does not exist"):
        run_task("predict", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"input={tmp_path}", run_dir=tmp_path / "r")


@pytest.mark.slow
def test_bbox_crop_checkpoint_predicts_from_a_csv_with_boxes(tmp_path):
    """A model trained with crop.mode=bbox needs the boxes at predict time too: they come from the CSV."""
    from helpers import FAST, make_manifest

    csv = make_manifest(tmp_path / "data", per_class=6)
    boxed = pd.read_csv(csv).assign(x0=0, y0=0, x1=30, y1=30)
    boxed.to_csv(csv, index=False)
    run_task(
        "train",
        "data=csv",
        f"data.root={tmp_path / 'data'}",
        "data.crop.mode=bbox",
        "data.crop.columns=[x0,y0,x1,y1]",
        "data.val_fraction=0.5",
        *FAST,
        run_dir=tmp_path / "run",
    )
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    run_task("predict", f"ckpt_path={ckpt}", f"input={csv}", run_dir=tmp_path / "pred")
    assert len(pd.read_csv(tmp_path / "pred" / "predictions.csv")) == 18
    with pytest.raises(Exception, match="data.crop.mode=bbox"):
        run_task("predict", f"ckpt_path={ckpt}", f"input={tmp_path / 'data' / 'images'}", run_dir=tmp_path / "pred2")


@pytest.mark.slow
def test_predict_with_two_ddp_processes_writes_every_row_once_in_order(folder_run, image_tree, tmp_path):
    """37 rows over 2 ranks (uneven shares): exactly 37 rows, input order, same probabilities as one process."""
    files = sorted(str(p) for p in image_tree.rglob("[!.]*.*"))[:37]  # of 60 PNGs and JPEGs
    pd.DataFrame({"path": files[::-1]}).to_csv(tmp_path / "in.csv", index=False)  # not sorted: order must hold
    ckpt = folder_run / "checkpoints" / "best.ckpt"
    common = (f"ckpt_path={ckpt}", f"input={tmp_path / 'in.csv'}", "top_k=3")
    run_task("predict", *common, "loader.num_workers=0", run_dir=tmp_path / "one")
    # The DDP run uses loader workers too: each spawned rank must build its own batch-buffer pool.
    ddp = ("trainer=ddp_cpu", "loader.num_workers=1", "loader.persistent_workers=true")
    ran = run_task("predict", *common, *ddp, run_dir=tmp_path / "ddp")  # the two ranks are spawned processes
    assert "Gathered 37 rows predicted by 2 processes" in ran.log
    one, ddp = (pd.read_csv(tmp_path / n / "predictions.csv") for n in ("one", "ddp"))
    assert ddp["path"].tolist() == files[::-1]
    assert ddp[["pred", "pred_2", "pred_3"]].equals(one[["pred", "pred_2", "pred_3"]])
    assert (ddp["prob"] - one["prob"]).abs().max() < 1e-5
    assert not (tmp_path / "ddp" / ".predict_parts").exists()
