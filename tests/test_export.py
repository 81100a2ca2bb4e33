"""Export: the ONNX and TorchScript files alone reproduce the checkpoint's probabilities on real images (a CNN,
a ViT, a multi-task model), carry their metadata, take any batch size, and predict.py runs them into the same
CSV as the .ckpt. Every run is in-process (run_task)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from helpers import run_task

from imgcls.deploy.calibrate import save_temperature, softmax
from imgcls.deploy.files import load_deployed
from imgcls.utils.errors import ConfigError

pytestmark = pytest.mark.slow

QUIET = ("loader.num_workers=0",)


def _predict(ckpt, run, tmp_path, name, *extra):
    out = tmp_path / name
    run_task("predict", f"ckpt_path={ckpt}", f"input={run / 'split.csv'}", "split=val", *QUIET, *extra, run_dir=out)
    return pd.read_csv(out / "predictions.csv")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["cnn", "vit", "multi"])
def test_the_exported_file_reproduces_the_checkpoint(deploy_runs, tmp_path, kind, fmt):
    run = deploy_runs[kind]
    ckpt = run / "checkpoints" / "best.ckpt"
    result = run_task("export", f"ckpt_path={ckpt}", f"format={fmt}", *QUIET, run_dir=tmp_path / "export").value
    (exported,) = result["files"]
    check = result["check"][1]
    assert check["n"] > 0 and check["max_abs_diff"] <= 1e-4 and check["decisions_agree"] == 1.0
    # predict.py from the exported file writes the rows predict.py writes from the .ckpt
    from_ckpt, from_file = _predict(ckpt, run, tmp_path, "ckpt"), _predict(exported, run, tmp_path, "file")
    assert from_file.drop(columns="prob").equals(from_ckpt.drop(columns="prob"))
    assert np.abs(from_file["prob"] - from_ckpt["prob"]).max() <= 1e-4
    classes = 18 if kind == "multi" else 3  # the mask model's 3 + 2 + 3 heads combined inside the file
    assert from_file["pred"].between(0, classes - 1).all()
    assert (tmp_path / "export" / "MODEL_CARD.md").is_file()


def test_the_onnx_file_says_what_it_takes_and_takes_any_batch(deploy_runs, tmp_path):
    run = deploy_runs["multi"]
    result = run_task(
        "export", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "layout=nhwc", *QUIET, run_dir=tmp_path / "e"
    ).value
    path = result["files"][0]
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    spec = json.loads(meta["imgcls.data_spec"])
    assert json.loads(meta["imgcls.class_names"]) == spec["class_names"] and len(spec["class_names"]) == 18
    assert json.loads(meta["imgcls.input"]) == {
        "name": "image",
        "dtype": "uint8",
        "layout": "nhwc",
        "shape": ["N", 40, 32, 3],
    }
    assert meta["imgcls.model"] == "test_resnet" and meta["imgcls.version"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for n in (1, 5):
        probs = session.run(["probs"], {"image": np.zeros((n, 40, 32, 3), np.uint8)})[0]
        assert probs.shape == (n, 18) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # predict.py feeds an nhwc file its own layout: the rows predict writes from the .ckpt
    for i, tta in enumerate(("tta=[]", "tta=[hflip]")):  # the flipped view too: the same flip as the checkpoint's
        from_ckpt = _predict(run / "checkpoints" / "best.ckpt", run, tmp_path, f"ckpt{i}", tta)
        from_file = _predict(path, run, tmp_path, f"file{i}", tta)
        assert from_file["pred"].equals(from_ckpt["pred"])
        assert np.abs(from_file["prob"] - from_ckpt["prob"]).max() <= 1e-4
    card = (tmp_path / "e" / "MODEL_CARD.md").read_text()
    for part in (
        "## Data",
        "## Training",
        "## Metrics",
        "## Calibration",
        "## Input and pre-processing",
        "uint8",
        "['N', 40, 32, 3]",
        "## Export check",
        "## Intended use",
        "onnxruntime",
    ):
        assert part in card, part
    assert "val/f1_age" in card  # the sub-task F1s of a multi-task run


def test_a_calibrated_checkpoint_exports_its_temperature(deploy_runs, tmp_path):
    """eval.py calibrate=true's record beside a checkpoint: predict and export both apply it."""
    run = tmp_path / "copy"
    shutil.copytree(deploy_runs["cnn"], run)
    ckpt = run / "checkpoints" / "best.ckpt"
    before = _predict(ckpt, run, tmp_path, "before", "top_k=3")  # 3 classes: every probability of each row
    save_temperature(ckpt, 2.5, fitted_on="val")
    result = run_task("export", f"ckpt_path={ckpt}", *QUIET, run_dir=tmp_path / "e").value
    assert result["temperature"] == 2.5
    from_ckpt = _predict(ckpt, run, tmp_path, "ckpt", "top_k=3")
    from_file = _predict(result["files"][0], run, tmp_path, "file", "top_k=3")
    columns = ["prob", "prob_2", "prob_3"]
    expected = softmax(np.log(before[columns].to_numpy()), 2.5)  # the same order: T never changes the ranking
    assert np.abs(from_ckpt[columns].to_numpy() - expected).max() <= 1e-4
    assert np.abs(from_file[columns].to_numpy() - expected).max() <= 1e-4
    assert (from_file["pred"] == before["pred"]).all() and (from_file["prob"] < before["prob"]).all()
    assert "Temperature 2.5000" in (tmp_path / "e" / "MODEL_CARD.md").read_text()
    assert load_deployed(result["files"][0]).temperature == 2.5  # and the file says so


def test_int8_copy_is_checked_and_reported(deploy_runs, tmp_path):
    ckpt = deploy_runs["cnn"] / "checkpoints" / "best.ckpt"
    result = run_task("export", f"ckpt_path={ckpt}", "quantize=true", *QUIET, run_dir=tmp_path / "e").value
    names = [row["name"] for row in result["check"]]
    assert names == ["pytorch (checkpoint)", "model.onnx", "model.int8.onnx"]
    int8 = result["check"][2]
    assert int8["accuracy"] is not None and int8["max_abs_diff"] > 0  # int8 is close, not equal
    meta = {p.key: p.value for p in onnx.load(result["files"][1]).metadata_props}
    assert "imgcls.data_spec" in meta and "int8" in meta["imgcls.quantized"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["format=tflite"], r"format='tflite' is not an export format: use one of onnx, torchscript"),
        (["layout=chw"], r"layout='chw': use one of nchw, nhwc"),
        (["format=torchscript", "quantize=true"], r"quantize=true quantises ONNX models"),
        (["tolerance=0"], r"model.onnx differs from the checkpoint on \d+ images"),
        (["check_images=0"], r"check_images=0, tolerance=0.0001: use check_images >= 1 and tolerance >= 0"),
        (["output=model.bin"], r"output='model.bin' for format=onnx: name it \*.onnx"),
    ],
)
def test_wrong_settings_end_in_one_line(deploy_runs, tmp_path, overrides, message):
    ckpt = deploy_runs["cnn"] / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match=message) as info:
        run_task("export", f"ckpt_path={ckpt}", *overrides, *QUIET, run_dir=tmp_path / "e")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "e" / "model.onnx").exists()  # a file that failed its check is not left behind


def test_files_of_another_kind_are_named(deploy_runs, tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="is not a .ckpt: export takes a checkpoint written by train.py"):
        run_task("export", f"ckpt_path={onnx_file}", run_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="model.onnx' is not a readable ONNX model"):
        run_task("predict", f"ckpt_path={onnx_file}", f"input={tmp_path}", run_dir=tmp_path / "b")
    fake = tmp_path / "model.pt"
    fake.write_bytes(b"nor this")
    with pytest.raises(ConfigError, match="model.pt' is not a TorchScript model written by export.py"):
        run_task("predict", f"ckpt_path={fake}", f"input={tmp_path}", run_dir=tmp_path / "c")
    ckpt = deploy_runs["cnn"] / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match="check_input='.*none' does not exist: give an image, a folder or a CSV"):
        run_task("export", f"ckpt_path={ckpt}", f"check_input={tmp_path / 'none'}", run_dir=tmp_path / "d")
    elsewhere = tmp_path / "elsewhere" / "checkpoints"
    elsewhere.mkdir(parents=True)
    shutil.copy(ckpt, elsewhere / "best.ckpt")  # a checkpoint moved away from its run dir
    with pytest.raises(ConfigError, match="the checkpoint's run has no split.csv at .*: pass check_input="):
        run_task("export", f"ckpt_path={elsewhere / 'best.ckpt'}", run_dir=tmp_path / "f")
