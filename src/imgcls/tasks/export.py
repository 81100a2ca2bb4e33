"""Export: checkpoint -> a self-contained ONNX/TorchScript file (uint8 in, probabilities out) -> checked against
the PyTorch model on real images -> (int8 copy) -> MODEL_CARD.md beside it.

The exported graph is deploy/model.py::Deployable; what it needs besides pixels is in its metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from imgcls.cli.wrapper import task_wrapper
from imgcls.data.bad_images import readable_inputs
from imgcls.data.inputs import read_rows
from imgcls.data.sources import DataConfigError
from imgcls.deploy.batches import eval_batches
from imgcls.deploy.calibrate import load_temperature
from imgcls.deploy.check import HEADER, Agreement, compare
from imgcls.deploy.files import FORMATS, export_onnx, export_torchscript, load_deployed
from imgcls.deploy.model import LAYOUTS, Deployable, example_input, metadata
from imgcls.deploy.model_card import write_model_card
from imgcls.deploy.quantize import quantize_onnx
from imgcls.models.checkpoint import checkpoint_paths, load_classifier, run_dir_of
from imgcls.models.classifier import Classifier
from imgcls.models.weights import ModelConfigError
from imgcls.utils import get_logger, write_json_atomic
from imgcls.utils.errors import ConfigError

log = get_logger(__name__)


class ExportCheckError(ConfigError):
    """The exported file does not compute what the checkpoint computes (named numbers, one line)."""


def _settings(cfg: DictConfig) -> tuple[str, str]:
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format!r} is not an export format: use one of {', '.join(FORMATS)}")
    if cfg.layout not in LAYOUTS:
        raise ConfigError(f"layout={cfg.layout!r}: use one of {', '.join(LAYOUTS)}")
    if cfg.quantize and cfg.format != "onnx":
        raise ConfigError("quantize=true quantises ONNX models (ONNX Runtime's dynamic int8): use format=onnx")
    if int(cfg.check_images) < 1 or float(cfg.tolerance) < 0:
        raise ConfigError(
            f"check_images={cfg.check_images}, tolerance={cfg.tolerance}: use check_images >= 1 and tolerance >= 0 "
            "(or check=false)"
        )
    ckpts = checkpoint_paths(cfg.ckpt_path)
    if len(ckpts) > 1:
        raise ConfigError(f"ckpt_path matches {len(ckpts)} checkpoints: export one at a time (ckpt_path=<one .ckpt>)")
    ckpt = ckpts[0]
    if Path(ckpt).suffix != ".ckpt":
        raise ModelConfigError(f"ckpt_path='{ckpt}' is not a .ckpt: export takes a checkpoint written by train.py")
    suffix = FORMATS[cfg.format]
    if cfg.get("output") and Path(cfg.output).suffix != suffix:
        raise ConfigError(
            f"output='{cfg.output}' for format={cfg.format}: name it *{suffix} (predict.py reads by suffix)"
        )
    return ckpt, str(cfg.format)


def check_images(cfg: DictConfig, classifier: Classifier, ckpt: str, output_dir: Path) -> pd.DataFrame:
    """Real images for the check: by default the checkpoint's own validation rows (its run's split.csv)."""
    spec = classifier.hparams.data_spec
    source = cfg.get("check_input") or run_dir_of(ckpt) / "split.csv"
    if cfg.get("check_input") and not Path(source).exists():
        raise DataConfigError(f"check_input='{source}' does not exist: give an image, a folder or a CSV")
    if not Path(source).exists():
        raise DataConfigError(
            f"check_input: the checkpoint's run has no split.csv at {source}: pass check_input=<images or CSV> "
            "(or check=false)"
        )
    split = cfg.get("check_split") if Path(source).suffix == ".csv" else None
    table = read_rows(str(source), spec, split)
    table = table.head(int(cfg.check_images)).reset_index(drop=True)
    return readable_inputs(table, spec, cfg.on_bad_image, 0, output_dir).reset_index(drop=True)


def reference_probabilities(classifier: Classifier, images: np.ndarray, temperature: float) -> np.ndarray:
    """The PyTorch model's probabilities by the training code's own path (Classifier.normalize/forward/head)."""
    with torch.no_grad():
        x = classifier.normalize(torch.from_numpy(np.ascontiguousarray(images)))
        return classifier.log_probs(classifier(x) / temperature).exp().double().numpy()


def _print(rows: list[Agreement]) -> None:
    table = Table(title="Exported model vs the PyTorch checkpoint (same uint8 images)")
    for column in HEADER:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(*row.row())
    Console().print(table)


@task_wrapper
def export(cfg: DictConfig) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    ckpt, fmt = _settings(cfg)
    classifier = load_classifier(ckpt, ema=bool(cfg.ema))
    temperature = load_temperature(ckpt, classifier.loaded_weights)
    spec = classifier.hparams.data_spec
    log.info(
        f"Exporting {classifier.hparams.name} ({len(spec['class_names'])} classes, input {spec['image_size']}, "
        f"{classifier.loaded_weights} weights, temperature {temperature:.3f}) to {fmt}, layout {cfg.layout}"
    )
    module = Deployable(classifier, temperature, cfg.layout).eval()
    meta = metadata(classifier, ckpt, temperature, cfg.layout)
    output = Path(cfg.output) if cfg.get("output") else output_dir / f"model{FORMATS[fmt]}"
    example = example_input(spec, cfg.layout)
    try:
        if fmt == "onnx":
            export_onnx(module, example, output, meta, int(cfg.opset))
        else:
            export_torchscript(module, example, output, meta)
    except (RuntimeError, ValueError, TypeError) as exc:  # torch's exporters: an op or construct they cannot write
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportCheckError(
            f"format={fmt} cannot export {classifier.hparams.name} ({first}): try "
            + ("another opset= or format=torchscript" if fmt == "onnx" else "format=onnx")
        ) from exc
    log.info(f"Wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")
    files = [output]
    if cfg.quantize:
        files.append(quantize_onnx(output, output.with_name(f"{output.stem}.int8.onnx")))
        log.info(f"Wrote {files[-1]} ({files[-1].stat().st_size / 1e6:.1f} MB, dynamic int8)")

    rows: list[Agreement] = []
    if cfg.check:
        table = check_images(cfg, classifier, ckpt, output_dir)
        labels = table["label"].to_numpy() if "label" in table else None
        deployed = [load_deployed(f) for f in files]
        reference = np.zeros((len(table), len(spec["class_names"])))
        outputs = [np.zeros_like(reference) for _ in deployed]
        for images, index in eval_batches(spec, table, cfg.loader):
            reference[index] = reference_probabilities(classifier, images, temperature)
            for model, out in zip(deployed, outputs):
                out[index] = model.probabilities(images)
        # multi-label: the label sets at the checkpoint's thresholds must be the same, not only the top class
        cut = classifier.thresholds.cpu().numpy() if classifier.multilabel else None
        rows = [compare("pytorch (checkpoint)", reference, reference, labels, cut)]
        rows += [compare(f.name, reference, out, labels, cut) for f, out in zip(files, outputs)]
        _print(rows)
        exported = rows[1]
        if exported.max_abs_diff > float(cfg.tolerance) or exported.decisions_agree < 1.0:
            for file in files:  # a file that fails its check is not left where a deployment would pick it up
                file.unlink(missing_ok=True)
            raise ExportCheckError(
                f"{output.name} differs from the checkpoint on {exported.n} images (max |Δprob| "
                f"{exported.max_abs_diff:.1e} > tolerance={cfg.tolerance} or the same answer on only "
                f"{exported.decisions_agree:.3f} of them): try format=torchscript or another opset=, and report it"
            )
    result = {
        "checkpoint": ckpt,
        "files": [str(f) for f in files],
        "format": fmt,
        "layout": cfg.layout,
        "temperature": temperature,
        "check": [vars(r) for r in rows],
        "check_images_from": str(cfg.get("check_input") or f"{run_dir_of(ckpt) / 'split.csv'} ({cfg.check_split})"),
    }
    card = write_model_card(output.with_name("MODEL_CARD.md"), classifier, ckpt, meta, result)
    log.info(f"Wrote {card}")
    write_json_atomic(output_dir / "export.json", result)
    return result
