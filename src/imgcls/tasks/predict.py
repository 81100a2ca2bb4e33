"""Predict: checkpoint(s) -> model + pre-processing (from each checkpoint, not the config) -> predictions CSV.

Several checkpoints (a list or a glob, e.g. the k folds) are an ensemble: their probabilities are averaged.
Under DDP (`trainer=ddp_cpu`, `trainer=ddp`) every rank predicts its share and every row is written once.
With `data=<a source that has a submission template>` (data=mask), the output is the filled-in template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig

from imgcls.cli.wrapper import task_wrapper
from imgcls.data.bad_images import readable_inputs
from imgcls.data.dataset import ImageDataset
from imgcls.data.inputs import read_rows
from imgcls.data.labels import join_names, multi_hot
from imgcls.data.sources import DataConfigError
from imgcls.data.transforms import spec_eval_transform
from imgcls.deploy.batches import eval_batches
from imgcls.deploy.calibrate import load_temperature
from imgcls.deploy.files import DEPLOYED_SUFFIXES, DeployedModel, load_deployed
from imgcls.distributed.prediction_writer import RankPredictionWriter
from imgcls.evaluation.explain import explain, overlay, png_bytes
from imgcls.extras.competition import Submission, load_submission
from imgcls.feeding.loaders import make_loader, resolve_num_workers
from imgcls.models.checkpoint import checkpoint_paths, load_ensemble
from imgcls.models.classifier import TTA
from imgcls.models.metrics import multilabel_scores
from imgcls.models.weights import ModelConfigError
from imgcls.utils import atomic_write_bytes, atomic_write_text, get_logger, write_json_atomic
from imgcls.utils.errors import ConfigError

log = get_logger(__name__)


def predictions_table(
    table: pd.DataFrame,
    probs: np.ndarray,
    class_names: list[str],
    top_k: int = 1,
    thresholds: np.ndarray | None = None,
) -> pd.DataFrame:
    """`path,pred,pred_name,prob`, then `pred_2,pred_name_2,prob_2`... for top-k > 1; labelled input (split.csv,
    a folder of class folders) gets `label,label_name` after the path: the truth beside each answer.

    A multi-label model (`thresholds` given): `path,labels,prob_<class>...`, `labels` = the classes at or above
    their threshold joined by `|` (empty = none); labelled input gets `true_labels` after the path."""
    if thresholds is not None:
        return multilabel_table(table, probs, class_names, thresholds)
    order = np.argsort(-probs, axis=1)[:, : max(1, top_k)]
    out = pd.DataFrame({"path": table["path"].tolist()})
    if "label" in table:
        out["label"] = table["label"].to_numpy()
        out["label_name"] = [class_names[i] for i in out["label"]]
    for rank in range(order.shape[1]):
        suffix = "" if rank == 0 else f"_{rank + 1}"
        idx = order[:, rank]
        out[f"pred{suffix}"] = idx
        out[f"pred_name{suffix}"] = [class_names[i] for i in idx]
        out[f"prob{suffix}"] = probs[np.arange(len(idx)), idx].round(6)
    return out


def multilabel_table(
    table: pd.DataFrame, probs: np.ndarray, class_names: list[str], thresholds: np.ndarray
) -> pd.DataFrame:
    out = pd.DataFrame({"path": table["path"].tolist()})
    if "labels" in table:
        out["true_labels"] = join_names(table["labels"], class_names)
    out["labels"] = join_names((np.flatnonzero(row) for row in probs >= thresholds[None, :]), class_names)
    for i, name in enumerate(class_names):
        out[f"prob_{name}"] = probs[:, i].round(6)
    return out


def thresholds_of(models: list[Any]) -> np.ndarray | None:
    """A multi-label model's per-class thresholds (an ensemble: their mean, as its probabilities are); None for
    single-label models."""
    found = [m.thresholds if isinstance(m, DeployedModel) else getattr(m, "thresholds", None) for m in models]
    if not getattr(models[0], "multilabel", False) and found[0] is None:
        return None
    return np.mean([np.asarray(torch.as_tensor(t).cpu(), dtype=np.float32) for t in found], axis=0)


def _inputs(cfg: DictConfig, spec: dict[str, Any], ckpt: str) -> tuple[pd.DataFrame, Submission | None]:
    """The rows to predict: `data=<competition source>` -> its submission template, else `input=`."""
    if cfg.get("data") is not None:
        submission = load_submission(cfg.data, spec["class_names"], ckpt)
        return submission.table, submission
    if cfg.get("input") is None:
        raise DataConfigError(
            "nothing to predict: pass input=<image|folder|csv> or data=<competition data> data.root=..."
        )
    return read_rows(cfg.input, spec, cfg.get("split"), cfg.path_column), None


def _probabilities(
    model: Any, table: pd.DataFrame, cfg: DictConfig, trainer: L.Trainer, writer: RankPredictionWriter
) -> np.ndarray | None:
    """One model's class probabilities for every row, in input order, with its own pre-processing.

    Every rank predicts its share and writes it (see RankPredictionWriter); rank 0 gathers. Other ranks of a
    re-launched (`ddp`) run get None.
    """
    spec = model.hparams.data_spec
    transform, fitted = spec_eval_transform(spec)
    dataset = ImageDataset(table, transform, spec["channels"], spec["crop"], decode_size=fitted)
    loader = make_loader(dataset, cfg.loader, train=False, on_cuda=trainer.strategy.root_device.type == "cuda")
    trainer.predict(model, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()  # every rank's file is written (a no-op in ddp_spawn's main process)
    return writer.gather(len(table)) if trainer.is_global_zero else None


def load_models(cfg: DictConfig) -> tuple[list[str], list[Any]]:
    """`ckpt_path` -> the checkpoints and their models (TTA and calibration temperature set), or one deployed
    `.onnx`/`.pt` file written by export.py (run by ONNX Runtime / TorchScript, see deploy/files.py)."""
    ckpts = checkpoint_paths(cfg.ckpt_path)
    deployed = [p for p in ckpts if Path(p).suffix in DEPLOYED_SUFFIXES]
    if deployed:
        if len(ckpts) > 1:
            raise ModelConfigError(
                f"ckpt_path: '{deployed[0]}' is an exported file; an ensemble must be .ckpt files only"
            )
        log.info(f"Loading the exported model {ckpts[0]}")
        model = load_deployed(ckpts[0])
        unknown = [n for n in cfg.tta or [] if n not in TTA]
        if unknown:
            raise ConfigError(f"tta={list(cfg.tta)}: unknown {unknown}; supported: {', '.join(TTA)}")
        model.tta = list(cfg.tta or [])
        return ckpts, [model]
    log.info(f"Loading {len(ckpts)} checkpoint(s): {ckpts}")
    models = load_ensemble(ckpts, ema=bool(cfg.ema))
    for path, model in zip(ckpts, models):
        model.tta = list(cfg.tta or [])
        model.temperature = load_temperature(path, model.loaded_weights)
    return ckpts, models


def describe(model: Any) -> str:
    spec = data_spec(model)
    if isinstance(model, DeployedModel):
        kind = f"{model.format} file"
    else:
        kind = f"{'EMA' if model.loaded_weights == 'ema' else 'trained'} weights"
    temperature = float(model.temperature)
    return (
        f"Model {model_name(model)}: {len(spec['class_names'])} classes, input {spec['image_size']}, {kind}"
        + (f", TTA {list(model.tta)}" if model.tta else "")
        + (f", temperature {temperature:.3f}" if temperature != 1.0 else "")
    )


def data_spec(model: Any) -> dict[str, Any]:
    return model.data_spec if isinstance(model, DeployedModel) else model.hparams.data_spec


def model_name(model: Any) -> str:
    return model.meta["imgcls.model"] if isinstance(model, DeployedModel) else model.hparams.name


def input_table(cfg: DictConfig, spec: dict[str, Any], ckpt: str, output_dir: Path) -> tuple[pd.DataFrame, Any]:
    """The readable rows to predict (unreadable ones skipped and listed, or an error: `on_bad_image`)."""
    table, submission = _inputs(cfg, spec, ckpt)
    workers = resolve_num_workers(cfg.loader.get("num_workers"))
    # index = position in the inputs (the submission's row)
    table = readable_inputs(table.reset_index(drop=True), spec, cfg.on_bad_image, workers, output_dir)
    log.info(
        f"Predicting {len(table)} images"
        + (f" from {cfg.input}" if submission is None else f" for the submission template {submission.source}")
    )
    return table, submission


def ensemble_probabilities(
    cfg: DictConfig, models: list[Any], table: pd.DataFrame, output_dir: Path
) -> np.ndarray | None:
    """The members' probabilities averaged (not votes: confident members count for more, ties are rare).
    None on a re-launched DDP rank (rank 0 writes the outputs)."""
    if isinstance(models[0], DeployedModel):
        return _deployed_probabilities(models[0], table, cfg)
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    writer = RankPredictionWriter(output_dir / ".predict_parts")
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[RichProgressBar(), writer])
    members = []
    for i, model in enumerate(models):
        writer.name = f"model{i}"
        members.append(_probabilities(model, table, cfg, trainer, writer))
    return np.mean(members, axis=0) if trainer.is_global_zero else None


def _deployed_probabilities(model: DeployedModel, table: pd.DataFrame, cfg: DictConfig) -> np.ndarray:
    """An exported file over the same pre-processed uint8 batches the checkpoint would see, TTA views averaged."""
    out = np.zeros((len(table), len(model.data_spec["class_names"])), dtype=np.float32)
    for images, index in eval_batches(model.data_spec, table, cfg.loader):
        batch = torch.from_numpy(images)  # NCHW, as the checkpoint's TTA views take them (models/classifier.py)
        views = [batch] + [TTA[name](batch) for name in model.tta]
        out[index] = np.mean([model.probabilities(v.numpy()) for v in views], axis=0)
    return out


@task_wrapper
def predict(cfg: DictConfig) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    ckpts, models = load_models(cfg)
    if cfg.get("explain"):
        check_explainable(models)
        if int(cfg.explain_limit) < 1:
            raise ConfigError(f"explain_limit={cfg.explain_limit}: use an integer >= 1 (inputs to explain)")
    spec = data_spec(models[0])
    log.info(describe(models[0]))
    top_k = check_top_k(int(cfg.top_k), len(spec["class_names"]))

    table, submission = input_table(cfg, spec, ckpts[0], output_dir)
    probs = ensemble_probabilities(cfg, models, table, output_dir)
    if probs is None:  # a re-launched DDP rank: rank 0 writes the outputs
        return {}

    thresholds = thresholds_of(models)
    if thresholds is not None and top_k > 1:
        log.warning(f"top_k={top_k} is for single-label models: a multi-label one writes every class's probability")
    result = predictions_table(table, probs, spec["class_names"], top_k, thresholds)
    default = "submission.csv" if submission is not None else "predictions.csv"
    output = Path(cfg.output) if cfg.get("output") else output_dir / default
    if submission is not None:
        atomic_write_text(output_dir / "predictions.csv", result.to_csv(index=False))
        filled = submission.fill(pd.Series(result["pred"].to_numpy(), index=table.index))
        atomic_write_text(output, filled.to_csv(index=False))
    else:
        atomic_write_text(output, result.to_csv(index=False))
    log.info(f"Wrote {len(result)} predictions to {output}")
    if cfg.get("explain"):
        write_explanations(models, table, probs.argmax(1), int(cfg.explain_limit), cfg.loader, output_dir / "explain")

    metrics: dict[str, Any] = {
        "n": len(result),
        "output": str(output),
        "checkpoints": ckpts,
        "tta": list(cfg.tta or []),
        "weights": [m.loaded_weights for m in models],
    }
    if "label" in table:
        metrics["acc"] = float((result["pred"].to_numpy() == table["label"].to_numpy()).mean())
        log.info(f"Accuracy against the input's labels: {metrics['acc']:.4f}")
    if "labels" in table:  # multi-label: subset accuracy (every label right) and macro-F1, at the thresholds
        metrics |= multilabel_scores(probs, multi_hot(table["labels"], len(spec["class_names"])), thresholds)
        log.info(f"Against the input's labels: subset accuracy {metrics['acc']:.4f}, macro-F1 {metrics['f1']:.4f}")
    write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics


def write_explanations(
    models: list[Any], table: pd.DataFrame, preds: np.ndarray, limit: int, loader: Any, out_dir: Path
) -> None:
    """`explain=true`: a Grad-CAM overlay per input (the first `explain_limit`), for the answered class:
    `<out_dir>/<row>_<image name>_<class>.png`, the image as the model saw it."""
    spec = data_spec(models[0])
    names = spec["class_names"]
    rows = table.iloc[:limit].reset_index(drop=True)
    for images, index in eval_batches(spec, rows, loader):
        maps = explain(models[0], images, preds[index])
        for i, image, heat in zip(index, images.transpose(0, 2, 3, 1), maps):
            name = f"{i:05d}_{Path(rows['path'].iloc[i]).stem}_{names[preds[i]]}.png"
            atomic_write_bytes(out_dir / name, png_bytes(overlay(image, heat)))
    log.info(f"Wrote {min(limit, len(table))} Grad-CAM overlays to {out_dir}")


def check_explainable(models: list[Any]) -> None:
    """explain=true needs the network's layers: one .ckpt (checked before anything is predicted)."""
    if len(models) > 1 or isinstance(models[0], DeployedModel):
        raise ConfigError("explain=true explains one checkpoint (.ckpt): pass ckpt_path=<one .ckpt>")


def check_top_k(top_k: int, num_classes: int) -> int:
    """`top_k` beyond the number of classes is said once and cut, not silently."""
    if top_k < 1:
        raise DataConfigError(f"top_k={top_k}: use 1 (the best class) up to {num_classes}")
    if top_k > num_classes:
        log.warning(f"top_k={top_k} but the model has {num_classes} classes: writing all {num_classes}")
    return min(top_k, num_classes)
