"""Predict: checkpoint -> model + pre-processing (from the checkpoint, not the config) -> predictions CSV."""

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

from imgcls.data.dataset import ImageDataset
from imgcls.data.inputs import read_inputs
from imgcls.data.loaders import make_loader
from imgcls.data.transforms import build_eval_transform
from imgcls.models.checkpoint import load_classifier
from imgcls.utils import atomic_write_text, get_logger, write_json_atomic
from imgcls.utils.task_wrapper import task_wrapper

log = get_logger(__name__)


def predictions_table(paths: list[str], probs: np.ndarray, class_names: list[str], top_k: int = 1) -> pd.DataFrame:
    """`path,pred,pred_name,prob`, then `pred_2,pred_name_2,prob_2`... for top-k > 1."""
    order = np.argsort(-probs, axis=1)[:, :max(1, top_k)]
    out = pd.DataFrame({"path": paths})
    for rank in range(order.shape[1]):
        suffix = "" if rank == 0 else f"_{rank + 1}"
        idx = order[:, rank]
        out[f"pred{suffix}"] = idx
        out[f"pred_name{suffix}"] = [class_names[i] for i in idx]
        out[f"prob{suffix}"] = probs[np.arange(len(idx)), idx].round(6)
    return out


@task_wrapper
def predict(cfg: DictConfig) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    log.info(f"Loading checkpoint {cfg.ckpt_path}")
    model = load_classifier(cfg.ckpt_path)
    spec = model.hparams.data_spec
    log.info(f"Model {model.hparams.name}: {len(spec['class_names'])} classes, input {spec['image_size']}")

    crop = spec.get("crop") or {}
    table = read_inputs(cfg.input, spec["class_names"], split=cfg.get("split"), path_column=cfg.path_column,
                        bbox_columns=list(crop.get("columns") or []) if crop.get("mode") == "bbox" else None)
    log.info(f"Predicting {len(table)} images from {cfg.input}")
    dataset = ImageDataset(table, build_eval_transform(spec["image_size"]), spec["channels"], spec["crop"],
                           decode_size=spec["image_size"])
    loader = make_loader(dataset, cfg.loader, train=False, pin_memory=torch.cuda.is_available())

    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[RichProgressBar()])
    if trainer.world_size > 1:  # each rank would only see its share of the rows
        raise ValueError("predict runs in one process: use trainer.devices=1 (and a non-DDP trainer)")
    batches = trainer.predict(model, dataloaders=loader)
    index = torch.cat([b["index"].cpu() for b in batches]).numpy()
    probs = torch.cat([b["probs"].cpu() for b in batches]).numpy()
    if sorted(index.tolist()) != list(range(len(table))):
        raise RuntimeError(f"predict produced {len(index)} rows for {len(table)} inputs")
    ordered = np.empty_like(probs)
    ordered[index] = probs  # rows back in input order, whatever order batches arrived in

    result = predictions_table(table["path"].tolist(), ordered, spec["class_names"], int(cfg.top_k))
    output = Path(cfg.output) if cfg.get("output") else output_dir / "predictions.csv"
    atomic_write_text(output, result.to_csv(index=False))
    log.info(f"Wrote {len(result)} predictions to {output}")

    metrics: dict[str, Any] = {"n": len(result), "output": str(output)}
    if "label" in table:
        metrics["acc"] = float((result["pred"].to_numpy() == table["label"].to_numpy()).mean())
        log.info(f"Accuracy against the input's labels: {metrics['acc']:.4f}")
    write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics
