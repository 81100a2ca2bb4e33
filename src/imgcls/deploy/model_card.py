"""MODEL_CARD.md beside every export: what the model is, what it was trained and measured on, what it takes in,
and how to run it without this repository. Every fact is read from the checkpoint, its run dir (split.csv,
metrics.json, .hydra/config.yaml) and the export's own check; what is not recorded is said so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from imgcls.data.labels import SEPARATOR
from imgcls.data.transforms import as_hw
from imgcls.deploy.calibrate import calibration_path
from imgcls.deploy.check import HEADER
from imgcls.models.checkpoint import run_dir_of
from imgcls.models.classifier import Classifier
from imgcls.utils import atomic_write_text
from imgcls.utils.markdown import markdown_table

_MODES = {
    "center": "resize (aspect kept) until it covers {fit}, take the centre {fit}, then the centre {size}",
    "squash": "resize to {fit} (aspect not kept), then take the centre {size}",
    "border": "resize the longer side to {fit} (aspect kept), pad with {fill} to {fit}, then take the centre {size}",
    "letterbox": "resize the longer side to fit {size} (aspect kept) and pad with {fill} to {size}",
    "stretch": "resize to {size} (aspect not kept)",
}


def _data(run: Path, class_names: list[str]) -> str:
    split = run / "split.csv"
    if not split.is_file():
        return f"{len(class_names)} classes: {', '.join(map(str, class_names))}. Split not recorded (no {split})."
    df = pd.read_csv(split, dtype=str, keep_default_na=False)
    images = df["split"].value_counts()
    what = "images per split"
    if "labels" in df:  # multi-label: an image counts once for each of its labels (`3|7`), none for an empty set
        df = df.assign(label_name=df["labels"].str.split(SEPARATOR)).explode("label_name")
        df = df[df["label_name"] != ""]
        what = "images per class and split (an image counts under each of its labels; total = images)"
    counts = df.groupby(["label_name", "split"]).size().unstack(fill_value=0)
    splits = [s for s in ("train", "val", "test") if s in images.index]
    rows = [
        [str(c)] + [str(int(counts.loc[str(c), s])) if str(c) in counts.index and s in counts else "0" for s in splits]
        for c in class_names
    ]
    rows.append(["**total**"] + [str(int(images[s])) for s in splits])
    return f"{len(class_names)} classes, {what} (`{split.name}` of the training run):\n\n" + markdown_table(
        ["class", *splits], rows
    )


def _recipe(run: Path, classifier: Classifier, ckpt: str) -> str:
    hp = classifier.hparams
    lines = [f"- model: `{hp.name}` (timm), {classifier.loaded_weights} weights of `{ckpt}`"]
    config = run / ".hydra" / "config.yaml"
    if config.is_file():
        cfg = OmegaConf.load(config)
        pick = lambda key: OmegaConf.select(cfg, key, default="not recorded")  # noqa: E731
        lines += [
            f"- pretrained: {pick('model.pretrained')} (path: {pick('model.pretrained_path')})",
            f"- augment: `{pick('augment.name')}`, epochs: {pick('trainer.max_epochs')}, "
            f"batch size {pick('loader.batch_size')}, optimizer `{pick('model.optimizer._target_')}` "
            f"lr {pick('model.optimizer.lr')}, seed {pick('seed')}",
            f"- data: `{pick('data.root')}` (`data.n_folds` {pick('data.n_folds')}, fold {pick('data.fold')})",
        ]
    else:
        lines.append(f"- training config not recorded (no {config})")
    return "\n".join(lines)


def _metrics(run: Path) -> str:
    path = run / "metrics.json"
    if not path.is_file():
        return f"Not recorded (no {path})."
    metrics = json.loads(path.read_text())
    final = {k: v for k, v in (metrics.get("final") or {}).items() if k.startswith(("val", "test"))}
    keep = [k for k in sorted(final) if any(k.endswith(s) for s in ("/acc", "/f1", "/loss")) or "/f1_" in k]
    rows = [[k, f"{final[k]:.4f}"] for k in keep if isinstance(final[k], int | float)]
    return f"At the end of training ({metrics.get('epochs')} epochs, `{path.name}`):\n\n" + markdown_table(
        ["metric", "value"], rows
    )


def _calibration(ckpt: str, temperature: float) -> str:
    path = calibration_path(ckpt)
    if temperature == 1.0 or not path.is_file():
        return (
            "Not calibrated (temperature 1): `python eval.py ckpt_path=... calibrate=true` fits one on the val split."
        )
    record = json.loads(path.read_text())
    extra = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith(("ece", "nll")))
    split = record.get("fitted_on", "?")
    return f"Temperature {temperature:.4f} fitted on the `{split}` split ({extra}); applied inside the file."


def _stat(buffer: Any) -> list[float]:
    """A Classifier's mean/std buffer (0..255 units) as the usual 0..1 values."""
    return [round(v / 255.0, 4) for v in buffer.flatten().tolist()]


def write_model_card(
    path: Path, classifier: Classifier, ckpt: str, meta: dict[str, str], result: dict[str, Any]
) -> Path:
    spec = classifier.hparams.data_spec
    run = run_dir_of(ckpt)
    shape = json.loads(meta["imgcls.input"])["shape"]
    size = "x".join(str(v) for v in as_hw(spec["image_size"]))
    resize = spec.get("resize") or {"mode": "stretch", "fitted": None, "interpolation": "bilinear", "fill": [0]}
    fitted = "x".join(str(v) for v in resize.get("fitted") or []) or size
    how = _MODES[resize["mode"]].format(size=size, fit=fitted, fill=resize.get("fill"))
    files = [Path(f).name for f in result["files"]]
    check = "Not run (check=false)."
    if result["check"]:
        rows = [
            [
                r["name"],
                str(r["n"]),
                f"{r['max_abs_diff']:.2e}",
                f"{r['decisions_agree']:.4f}",
                "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
            ]
            for r in result["check"]
        ]
        check = f"On the images of {result['check_images_from']}:\n\n" + markdown_table(HEADER, rows)
    nchw = result["layout"] == "nchw"
    colours = {3: "RGB", 1: "grayscale"}.get(spec["channels"], "as trained")
    bbox = (
        "; crop each image to its box first (data.crop.mode=bbox)"
        if (spec.get("crop") or {}).get("mode") == "bbox"
        else ""
    )
    if files[0].endswith(".onnx"):
        loader = (
            "import json, numpy as np, onnxruntime as ort\nfrom PIL import Image\n\n"
            f'session = ort.InferenceSession("{files[0]}", providers=["CPUExecutionProvider"])\n'
            'classes = json.loads(session.get_modelmeta().custom_metadata_map["imgcls.class_names"])'
        )
        call = 'probs = session.run(["probs"], {"image": np.ascontiguousarray(x)})[0]'
    else:
        loader = (
            "import json, numpy as np, torch\nfrom PIL import Image\n\n"
            'extra = {"imgcls.json": ""}\n'
            f'model = torch.jit.load("{files[0]}", _extra_files=extra)\n'
            'classes = json.loads(json.loads(extra["imgcls.json"])["imgcls.class_names"])'
        )
        call = "probs = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()"
    batch_of_one = "[None]" if spec["channels"] == 3 else "[None, ..., None]"
    text = f"""# Model card: {spec.get("name", "imgcls")} classifier ({classifier.hparams.name})

Written by `python export.py` (imgcls {meta["imgcls.version"]}) with {", ".join(f"`{f}`" for f in files)}.

## Data
{_data(run, spec["class_names"])}

## Training
{_recipe(run, classifier, ckpt)}

## Metrics
{_metrics(run)}

## Calibration
{_calibration(ckpt, result["temperature"])}

## Input and pre-processing
- input `image`: **uint8**, shape `{shape}` ({"N, channels, height, width" if nchw else "N, height, width, channels"}),
  {spec["channels"]} channel(s) ({colours}),
  any batch size N
- before the model (as validation did): {how}, {resize.get("interpolation")} interpolation (area averaging when
  shrinking){bbox}
- inside the model: `(x / 255 - mean) / std` (mean {_stat(classifier.mean)}, std {_stat(classifier.std)}),
  the network, {"the per-task heads combined into the classes, " if spec.get("tasks") else ""}the temperature
- output `probs`: float32 `[N, {len(spec["class_names"])}]` class probabilities in the order of the metadata
  `imgcls.class_names`; no test-time augmentation

## Export check
{check}

## Intended use and limitations
Classifying images like those it was trained on (the data above). It was measured only on its validation split:
on images from another source (camera, lighting, crop, population) expect lower accuracy and re-check before
relying on it; probabilities are only as calibrated as said above. It is not a detector: one label per image.

## Run it
```python
{loader}
image = Image.open("photo.jpg").convert("{"RGB" if spec["channels"] == 3 else "L"}")  # then: {how}
x = np.asarray(image, dtype=np.uint8){batch_of_one}  # N, H, W, C
{"x = x.transpose(0, 3, 1, 2)  # -> N, C, H, W" if nchw else "# the model takes N, H, W, C as it is"}
{call}
print(classes[int(probs[0].argmax())], float(probs[0].max()))
```
Or with this repository: `python predict.py ckpt_path={files[0]} input=<images>` (the exact pre-processing).
"""
    return atomic_write_text(path, text)
