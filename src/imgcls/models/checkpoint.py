"""Rebuild a trained classifier from its checkpoint alone (model name, classes, pre-processing, weights)."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from imgcls.models.classifier import Classifier
from imgcls.models.ema import CHECKPOINT_KEY as EMA_KEY
from imgcls.models.weights import ModelConfigError, load_tensors

_EXPECTED = "a .ckpt written by train.py (<run dir>/checkpoints/best.ckpt or last.ckpt)"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """`torch.load(weights_only=True)`: a checkpoint can't run code; Lightning's AttributeDict is allowed."""
    if not os.path.isfile(path):
        raise ModelConfigError(f"ckpt_path='{path}' does not exist: pass a .ckpt from <run dir>/checkpoints/")
    from lightning.fabric.utilities.data import AttributeDict

    ckpt = load_tensors(path, "ckpt_path", _EXPECTED, allowed=[AttributeDict])
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "data_spec" not in ckpt.get("hyper_parameters", {}):
        raise ModelConfigError(
            f"ckpt_path='{path}' is not an imgcls training checkpoint (no state_dict/data_spec); "
            "for plain timm weights use model.pretrained_path in training instead"
        )
    return ckpt


def load_classifier(path: str | os.PathLike, ema: bool = True) -> Classifier:
    """A `Classifier` in eval mode with the checkpoint's weights; its `hparams.data_spec` drives predict.

    `ema`: a run with `model.ema` saved its weight average too (models/ema.py); True loads that into the network.
    """
    ckpt = read_checkpoint(path)
    # The module's own hyper-parameter record rebuilds it; weights come from the file, never from a hub.
    hp = {**upgrade_hparams(ckpt["hyper_parameters"]), "pretrained": False, "pretrained_path": None, "compile": False}
    hp["ema"] = None  # the EMA weights are loaded below; predicting needs no averaging callback
    try:
        model = Classifier(**hp)
    except (ValueError, TypeError) as exc:  # ModelConfigError too: e.g. a model name this timm version does not have
        raise ModelConfigError(
            f"ckpt_path='{path}' cannot be rebuilt here ({exc}): predict with the timm and "
            "imgcls versions it was trained with"
        ) from exc
    mismatch = weights_mismatch(model.state_dict(), ckpt["state_dict"])
    if mismatch:
        raise ModelConfigError(
            f"ckpt_path='{path}': its weights do not fit the model it names ('{hp['name']}', "
            f"{len(model.class_names)} classes; {mismatch}): the file was edited or mixed from "
            f"two runs; use {_EXPECTED}"
        )
    model.load_state_dict(ckpt["state_dict"])
    use_ema = ema and EMA_KEY in ckpt
    if use_ema:
        model.model.load_state_dict(ckpt[EMA_KEY])
        if model.multilabel:  # the thresholds tuned on the EMA weights' own validation outputs
            model.thresholds = model.thresholds_ema.clone()
    model.loaded_weights = "ema" if use_ema else "raw"
    return model.eval()


# Checkpoints written before loss/head/class weights became `_target_` configs named them by string.
_LEGACY = {
    "head": {"single": "imgcls.models.heads.SingleHead", "multi": "imgcls.models.heads.MultiTaskHead"},
    "loss": {"ce": "imgcls.models.losses.CrossEntropy", "focal": "imgcls.models.losses.FocalLoss"},
    "class_weights": {"balanced": "imgcls.models.losses.balanced_weights"},
}


def upgrade_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyper-parameters in today's form: string switches -> `_target_` configs, keys no longer
    taken dropped (an old checkpoint has no optimizer record: predict does not need one)."""
    hp = dict(hparams)
    gamma = hp.pop("focal_gamma", None)
    for key, targets in _LEGACY.items():
        value = hp.get(key)
        if isinstance(value, str):
            hp[key] = {"_target_": targets[value], "_partial_": True} if value in targets else None
    if gamma is not None and isinstance(hp.get("loss"), dict) and hp["loss"]["_target_"].endswith("FocalLoss"):
        hp["loss"]["gamma"] = gamma
    return hp


def weights_mismatch(own: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str:
    """'' when `found` loads strictly into `own`, else a short account: counts and the first offender of each kind."""
    parts = []
    missing = [k for k in own if k not in found]
    if missing:
        parts.append(f"{len(missing)} tensors missing, first {missing[0]}")
    unexpected = [k for k in found if k not in own]
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, first {unexpected[0]}")
    reshaped = [k for k in own if k in found and tuple(getattr(found[k], "shape", ())) != tuple(own[k].shape)]
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape, first {k} {list(found[k].shape)} in the file vs {list(own[k].shape)}"
        )
    return "; ".join(parts)


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The training run a checkpoint belongs to (`<run dir>/checkpoints/<name>.ckpt`): its split.csv, metrics."""
    return Path(checkpoint).resolve().parents[1]


def checkpoint_paths(value: Any) -> list[str]:
    """`ckpt_path`: one file, a glob (e.g. every fold's best.ckpt) or a list of either; sorted, de-duplicated."""
    patterns = [str(v) for v in value] if isinstance(value, Sequence) and not isinstance(value, str) else [str(value)]
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(os.path.expanduser(pattern))) if glob.has_magic(pattern) else [pattern]
        if not found:
            raise ModelConfigError(f"ckpt_path='{pattern}' matches no file: check the run dir or quote the glob")
        paths += [p for p in found if p not in paths]
    return paths


def describe_classes(names: Sequence[Any]) -> str:
    """`3 classes ['bar', 'circle', 'square']`, shortened after 4 names."""
    names = [str(n) for n in names]
    return f"{len(names)} classes {names if len(names) <= 4 else names[:3] + ['...']}"


def load_ensemble(paths: Sequence[str], ema: bool = True) -> list[Classifier]:
    """One model per checkpoint; an ensemble's members must share their classes (their probabilities are averaged)."""
    models = [load_classifier(path, ema) for path in paths]
    first = models[0].hparams.data_spec["class_names"]
    for path, model in zip(paths, models):
        names = model.hparams.data_spec["class_names"]
        if names != first:
            raise ModelConfigError(
                f"ckpt_path='{path}' has {describe_classes(names)}, '{paths[0]}' {describe_classes(first)}: an "
                "ensemble must share its classes; list only checkpoints trained on the same data"
            )
    return models
