"""eval.py: its numbers are those of predict's answers; temperature scaling fits on the validation split only and
makes an over-confident model honest; the report and its pictures are written. In-process (run_task)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_task
from sklearn.metrics import f1_score

from imgcls.deploy.calibrate import calibration_path
from imgcls.utils.errors import ConfigError

pytestmark = pytest.mark.slow
QUIET = ("loader.num_workers=0",)


def test_eval_equals_what_predict_answers(deploy_runs, tmp_path):
    run = deploy_runs["cnn"]
    ckpt = run / "checkpoints" / "best.ckpt"
    result = run_task("eval", f"ckpt_path={ckpt}", "split=test", *QUIET, run_dir=tmp_path / "eval").value
    run_task("predict", f"ckpt_path={ckpt}", f"input={run / 'split.csv'}", "split=test", *QUIET, run_dir=tmp_path / "p")
    preds = pd.read_csv(tmp_path / "p" / "predictions.csv")
    metrics = result["metrics"]
    assert metrics["n"] == len(preds) == 18
    assert metrics["acc"] == pytest.approx((preds["pred"] == preds["label"]).mean())
    assert metrics["f1"] == pytest.approx(f1_score(preds["label"], preds["pred"], average="macro", labels=[0, 1, 2]))
    assert np.asarray(metrics["confusion"]).sum() == 18 and metrics["top5_acc"] == 1.0  # 3 classes: all in the top 5
    assert [c["support"] for c in metrics["per_class"]] == preds["label"].value_counts().sort_index().tolist()
    # the ECE is the reliability diagram's: sum over bins of share x |accuracy - confidence|
    bins = metrics["reliability"]
    assert metrics["ece"] == pytest.approx(sum(b["fraction"] * abs(b["accuracy"] - b["confidence"]) for b in bins))
    wrong = (preds["pred"] != preds["label"]).sum()
    assert len(result["mistakes"]) == min(16, wrong)
    probs = [m["prob"] for m in result["mistakes"]]
    assert probs == sorted(probs, reverse=True)  # the surest mistakes first
    for name in ("report.md", "eval.json", "confusion.png", "reliability.png", "predictions.csv"):
        assert (tmp_path / "eval" / name).is_file(), name
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "top-1 accuracy" in report and "![reliability diagram](reliability.png)" in report


def test_a_multi_task_model_reports_its_sub_task_f1s(deploy_runs, tmp_path):
    ckpt = deploy_runs["multi"] / "checkpoints" / "best.ckpt"
    metrics = run_task("eval", f"ckpt_path={ckpt}", *QUIET, run_dir=tmp_path / "e").value["metrics"]
    assert {"f1_mask", "f1_gender", "f1_age"} <= set(metrics) and len(metrics["per_class"]) == 18


def _over_confident_copy(run, tmp_path, factor=1000.0):
    """The run with its classifier's weights scaled: the same answers, far too sure of them."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "checkpoints" / "best.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for key in [k for k in ckpt["state_dict"] if k.startswith("model.fc.")]:
        ckpt["state_dict"][key] = ckpt["state_dict"][key] * factor
    torch.save(ckpt, path)
    return path


def test_temperature_scaling_makes_an_over_confident_model_honest(deploy_runs, tmp_path):
    ckpt = _over_confident_copy(deploy_runs["cnn"], tmp_path)
    result = run_task("eval", f"ckpt_path={ckpt}", "split=test", "calibrate=true", *QUIET, run_dir=tmp_path / "e").value
    cal = result["calibration"]
    val_rows = (pd.read_csv(ckpt.parents[1] / "split.csv")["split"] == "val").sum()
    assert cal["fitted_on"] == "val" and cal["n"] == val_rows  # fitted on the val split, evaluated on test
    assert cal["temperature"] > 10 and cal["nll_after"] < cal["nll_before"]  # softened: T > 1
    record = json.loads(calibration_path(ckpt).read_text())
    assert record["temperature"] == pytest.approx(cal["temperature"])
    # stored: the next eval (and predict, export) of this checkpoint uses it
    again = run_task("eval", f"ckpt_path={ckpt}", "split=test", *QUIET, run_dir=tmp_path / "again").value
    assert again["temperature"] == pytest.approx(cal["temperature"])
    assert again["metrics"]["nll"] == pytest.approx(cal["nll_after"], abs=1e-4)
    assert "## Calibration" in (tmp_path / "e" / "report.md").read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["split=train"], r"split='train': evaluate one of val, test"),
        (["calibrate=true"], r"calibrate=true: \d+ evaluated images are in the calibration split \(val\)"),
        (["split=test", "calibration_split=test", "calibrate=true"], r"evaluated images are in the calibration split"),
        (["bins=0"], r"bins=0: use an integer >= 1"),
        (["mistakes=-1"], r"mistakes=-1: use an integer >= 0"),
        (["split=test", "calibrate=true", "tta=[hflip]"], r"calibrate=true with tta=\['hflip'\]: .* drop tta="),
    ],
)
def test_wrong_settings_end_in_one_line(deploy_runs, tmp_path, overrides, message):
    ckpt = deploy_runs["cnn"] / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match=message) as info:
        run_task("eval", f"ckpt_path={ckpt}", *overrides, *QUIET, run_dir=tmp_path / "e")
    assert "\n" not in str(info.value)
    assert not calibration_path(ckpt).exists()  # nothing fitted


def test_unlabelled_input_and_ensembles_are_refused(deploy_runs, image_tree, tmp_path):
    ckpt = deploy_runs["cnn"] / "checkpoints" / "best.ckpt"
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next((image_tree / "circle").glob("0*.png")), flat / "a.png")
    with pytest.raises(ConfigError, match="has no labels: eval needs a CSV with a label_name"):
        run_task("eval", f"ckpt_path={ckpt}", f"input={flat}", *QUIET, run_dir=tmp_path / "a")
    both = f"ckpt_path=[{ckpt},{deploy_runs['vit'] / 'checkpoints' / 'best.ckpt'}]"
    with pytest.raises(ConfigError, match="calibrate=true fits the temperature of one checkpoint"):
        run_task("eval", both, "split=test", "calibrate=true", *QUIET, run_dir=tmp_path / "b")
    # a labelled folder is evaluated as it is
    labelled = run_task("eval", f"ckpt_path={ckpt}", f"input={image_tree}", *QUIET, run_dir=tmp_path / "c").value
    assert labelled["metrics"]["n"] == 60


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_explanations_are_maps_over_the_image(deploy_runs, tmp_path, kind):
    """Grad-CAM (torchcam) at the last CNN stage or the ViT's last block (tokens -> patch grid)."""
    from imgcls.evaluation.explain import explain
    from imgcls.models.checkpoint import load_classifier

    ckpt = deploy_runs[kind] / "checkpoints" / "best.ckpt"
    classifier = load_classifier(ckpt)
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    maps = explain(classifier, images, [0, 1, 2])
    assert maps.shape == (3, 32, 32) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    # a map over the image, not one value: the CNN's last stage would be 1x1 at 32x32, so an earlier one is used
    assert any(m.std() > 0 for m in maps)  # (an untrained model may find no positive evidence on noise)
    run_task("eval", f"ckpt_path={ckpt}", "split=test", "explain=true", *QUIET, run_dir=tmp_path / "e")
    report = (tmp_path / "e" / "report.md").read_text()
    assert "![one image per class](explain_classes.png)" in report
    assert (tmp_path / "e" / "explain_classes.png").stat().st_size > 0
    run_task(
        "predict",
        f"ckpt_path={ckpt}",
        f"input={deploy_runs[kind] / 'split.csv'}",
        "split=test",
        "explain=true",
        "explain_limit=5",
        *QUIET,
        run_dir=tmp_path / "p",
    )
    written = sorted((tmp_path / "p" / "explain").glob("*.png"))
    assert len(written) == 5 and written[0].name.startswith("00000_")
    with pytest.raises(ConfigError, match="explain_limit=0: use an integer >= 1"):
        run_task(
            "predict",
            f"ckpt_path={ckpt}",
            f"input={deploy_runs[kind] / 'split.csv'}",
            "explain=true",
            "explain_limit=0",
            *QUIET,
            run_dir=tmp_path / "q",
        )


def test_a_temperature_is_applied_only_to_the_weights_it_was_fitted_for(deploy_runs, tmp_path):
    from imgcls.deploy.calibrate import load_temperature, save_temperature

    ckpt = tmp_path / "best.ckpt"
    shutil.copy(deploy_runs["cnn"] / "checkpoints" / "best.ckpt", ckpt)
    save_temperature(ckpt, 3.0, weights="ema")
    assert load_temperature(ckpt, "ema") == 3.0 and load_temperature(ckpt, "raw") == 1.0
    ckpt.write_bytes(ckpt.read_bytes() + b"changed")  # the checkpoint was overwritten since the fit
    assert load_temperature(ckpt, "ema") == 1.0
    calibration_path(ckpt).write_text("{not json")
    assert load_temperature(ckpt, "ema") == 1.0


def test_the_overlay_shows_the_map_where_it_is_hot():
    from imgcls.evaluation.explain import overlay

    heat = np.zeros((16, 16), np.float32)
    heat[:4, :4] = 1.0  # hot top-left corner
    blended = overlay(np.full((16, 16, 1), 128, np.uint8), heat).astype(int)
    hot, cold = blended[1, 1], blended[14, 14]
    assert hot[0] > cold[0] + 40 and cold[2] > cold[0]  # jet: red where hot, blue where cold


def test_an_unreadable_image_is_skipped_and_listed_or_stops_eval_and_export(deploy_runs, image_tree, tmp_path):
    """eval and export's check read images with predict's policy (`on_bad_image`)."""
    from imgcls.data.bad_images import BadImageError

    tree = tmp_path / "tree"
    shutil.copytree(image_tree, tree)
    bad = tree / "circle" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # a truncated file with an image's name
    ckpt = deploy_runs["cnn"] / "checkpoints" / "best.ckpt"
    result = run_task("eval", f"ckpt_path={ckpt}", f"input={tree}", *QUIET, run_dir=tmp_path / "e").value
    assert result["metrics"]["n"] == 60
    assert pd.read_csv(tmp_path / "e" / "bad_images.csv")["path"].tolist() == [str(bad)]
    with pytest.raises(BadImageError, match="cannot read image .*broken.png.*on_bad_image=skip") as info:
        run_task("eval", f"ckpt_path={ckpt}", f"input={tree}", "on_bad_image=error", *QUIET, run_dir=tmp_path / "s")
    assert "\n" not in str(info.value)
    exported = run_task(
        "export", f"ckpt_path={ckpt}", f"check_input={tree}", "check_images=100", *QUIET, run_dir=tmp_path / "x"
    ).value
    assert exported["check"][1]["n"] == 60 and (tmp_path / "x" / "bad_images.csv").is_file()
