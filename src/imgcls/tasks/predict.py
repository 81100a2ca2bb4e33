"""Predict: checkpoint(s) -> model + pre-processing (from each checkpoint, not the config) -> predictions CSV.

Several checkpoints (a list or a glob, e.g. the k folds) are an ensemble: their probabilities are averaged.
Under DDP (`trainer=ddp_cpu`, `trainer=ddp`) every rank predicts its share and every row is written once.
With `data=<a source that has a submission template>` (data=mask), the output is the filled-in template.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, ListConfig

from imgcls.cli.wrapper import task_wrapper
from imgcls.data.bad_images import check_policy, drop_unreadable, find_unreadable
from imgcls.data.dataset import ImageDataset
from imgcls.data.inputs import read_inputs
from imgcls.data.sources import DataConfigError
from imgcls.data.transforms import build_eval_transform
from imgcls.distributed.prediction_writer import RankPredictionWriter
from imgcls.extras.competition.mask import Submission
from imgcls.feeding.loaders import make_loader, resolve_num_workers
from imgcls.models.checkpoint import load_classifier
from imgcls.models.factory import ModelConfigError
from imgcls.utils import atomic_write_text, get_logger, write_json_atomic

log = get_logger(__name__)


def predictions_table(paths: list[str], probs: np.ndarray, class_names: list[str], top_k: int = 1) -> pd.DataFrame:
    """`path,pred,pred_name,prob`, then `pred_2,pred_name_2,prob_2`... for top-k > 1."""
    order = np.argsort(-probs, axis=1)[:, : max(1, top_k)]
    out = pd.DataFrame({"path": paths})
    for rank in range(order.shape[1]):
        suffix = "" if rank == 0 else f"_{rank + 1}"
        idx = order[:, rank]
        out[f"pred{suffix}"] = idx
        out[f"pred_name{suffix}"] = [class_names[i] for i in idx]
        out[f"prob{suffix}"] = probs[np.arange(len(idx)), idx].round(6)
    return out


def checkpoint_paths(value: Any) -> list[str]:
    """`ckpt_path`: one file, a glob (e.g. every fold's best.ckpt) or a list of either; sorted, de-duplicated."""
    patterns = [str(v) for v in value] if isinstance(value, (list, tuple, ListConfig)) else [str(value)]
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(os.path.expanduser(pattern))) if glob.has_magic(pattern) else [pattern]
        if not found:
            raise ModelConfigError(f"ckpt_path='{pattern}' matches no file: check the run dir or quote the glob")
        paths += [p for p in found if p not in paths]
    return paths


def _classes(names: list[str]) -> str:
    """`3 classes ['bar', 'circle', 'square']`, shortened after 4 names."""
    names = [str(n) for n in names]
    return f"{len(names)} classes {names if len(names) <= 4 else names[:3] + ['...']}"


def _inputs(cfg: DictConfig, spec: dict[str, Any], ckpt: str) -> tuple[pd.DataFrame, Submission | None]:
    """The rows to predict: `data=<competition source>` -> its submission template, else `input=`."""
    if cfg.get("data") is not None:
        log.info(f"Instantiating data source <{cfg.data.source._target_}>")
        source = hydra.utils.instantiate(cfg.data.source)
        if not hasattr(source, "submission"):
            raise DataConfigError(f"data={cfg.data.source._target_} has no submission template: use input= instead")
        if list(source.class_names) != list(spec["class_names"]):
            raise DataConfigError(
                f"ckpt_path='{ckpt}' was trained on {_classes(spec['class_names'])}, but "
                f"data.root='{cfg.data.get('root')}' has {_classes(source.class_names)}: predict "
                "this data with a checkpoint trained on it, or pass input= instead of data="
            )
        submission = source.submission()
        return submission.table, submission
    if cfg.get("input") is None:
        raise DataConfigError(
            "nothing to predict: pass input=<image|folder|csv> or data=<competition data> data.root=..."
        )
    crop = spec.get("crop") or {}
    return read_inputs(
        cfg.input,
        spec["class_names"],
        split=cfg.get("split"),
        path_column=cfg.path_column,
        bbox_columns=list(crop.get("columns") or []) if crop.get("mode") == "bbox" else None,
    ), None


def _readable(table: pd.DataFrame, spec: dict[str, Any], cfg: DictConfig, output_dir: Path) -> pd.DataFrame:
    """The inputs without unreadable images (`on_bad_image=skip`, listed in <run dir>/bad_images.csv), or the
    error naming the first one. Checked before predicting (a reduced-size decode), not found half-way."""
    policy = check_policy(cfg.on_bad_image, "on_bad_image")
    workers = resolve_num_workers(cfg.loader.get("num_workers"))
    bad = find_unreadable(
        table.drop(columns="row", errors="ignore"), spec["channels"], spec.get("crop") or {}, None, workers
    )
    if bad.empty:
        return table
    listed = atomic_write_text(output_dir / "bad_images.csv", bad[["path", "reason"]].to_csv(index=False))
    return drop_unreadable(
        table,
        bad,
        policy,
        key="on_bad_image",
        source="input",
        listed=listed,
        what="input images",
        consequence="; they get no prediction",
    )


def _probabilities(
    model: Any, table: pd.DataFrame, cfg: DictConfig, trainer: L.Trainer, writer: RankPredictionWriter
) -> np.ndarray | None:
    """One model's class probabilities for every row, in input order, with its own pre-processing.

    Every rank predicts its share and writes it (see RankPredictionWriter); rank 0 gathers. Other ranks of a
    re-launched (`ddp`) run get None.
    """
    spec = model.hparams.data_spec
    dataset = ImageDataset(
        table, build_eval_transform(spec["image_size"]), spec["channels"], spec["crop"], decode_size=spec["image_size"]
    )
    loader = make_loader(dataset, cfg.loader, train=False, on_cuda=trainer.strategy.root_device.type == "cuda")
    trainer.predict(model, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()  # every rank's file is written (a no-op in ddp_spawn's main process)
    return writer.gather(len(table)) if trainer.is_global_zero else None


@task_wrapper
def predict(cfg: DictConfig) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    ckpts = checkpoint_paths(cfg.ckpt_path)
    log.info(f"Loading {len(ckpts)} checkpoint(s): {ckpts}")
    models = [load_classifier(path) for path in ckpts]
    spec = models[0].hparams.data_spec
    for path, model in zip(ckpts, models):
        if model.hparams.data_spec["class_names"] != spec["class_names"]:
            raise ModelConfigError(
                f"ckpt_path='{path}' has {_classes(model.hparams.data_spec['class_names'])}, "
                f"'{ckpts[0]}' {_classes(spec['class_names'])}: an ensemble must share its "
                "classes; list only checkpoints trained on the same data"
            )
        model.tta = list(cfg.tta or [])
    log.info(
        f"Model {models[0].hparams.name}: {len(spec['class_names'])} classes, input {spec['image_size']}"
        + (f", TTA {list(cfg.tta)}" if cfg.tta else "")
    )

    table, submission = _inputs(cfg, spec, ckpts[0])
    table = _readable(table.reset_index(drop=True), spec, cfg, output_dir)  # index = position in the inputs
    log.info(
        f"Predicting {len(table)} images"
        + (f" from {cfg.input}" if submission is None else f" for the submission template {submission.source}")
    )
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    writer = RankPredictionWriter(output_dir / ".predict_parts")
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[RichProgressBar(), writer])
    members = []
    for i, model in enumerate(models):
        writer.name = f"model{i}"
        members.append(_probabilities(model, table, cfg, trainer, writer))
    if not trainer.is_global_zero:  # a re-launched DDP rank: rank 0 writes the outputs
        return {}
    # The ensemble averages probabilities (not votes): confident members count for more, ties are rare.
    probs = np.mean(members, axis=0)

    result = predictions_table(table["path"].tolist(), probs, spec["class_names"], int(cfg.top_k))
    default = "submission.csv" if submission is not None else "predictions.csv"
    output = Path(cfg.output) if cfg.get("output") else output_dir / default
    if submission is not None:
        atomic_write_text(output_dir / "predictions.csv", result.to_csv(index=False))
        answers = pd.Series(result["pred"].to_numpy(), index=table.index).reindex(range(len(submission.template)))
        if answers.isna().any():  # a submission needs every row: skipped images get the most frequent answer
            fallback = int(result["pred"].mode().iloc[0])
            log.warning(
                f"{int(answers.isna().sum())} submission rows had unreadable images: answered {fallback} "
                "(the most frequent prediction); see bad_images.csv"
            )
            answers = answers.fillna(fallback)
        filled = submission.template.assign(**{submission.column: answers.astype(int).to_numpy()})
        atomic_write_text(output, filled.to_csv(index=False))
    else:
        atomic_write_text(output, result.to_csv(index=False))
    log.info(f"Wrote {len(result)} predictions to {output}")

    metrics: dict[str, Any] = {
        "n": len(result),
        "output": str(output),
        "checkpoints": ckpts,
        "tta": list(cfg.tta or []),
    }
    if "label" in table:
        metrics["acc"] = float((result["pred"].to_numpy() == table["label"].to_numpy()).mean())
        log.info(f"Accuracy against the input's labels: {metrics['acc']:.4f}")
    write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics
