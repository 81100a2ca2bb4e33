"""Eval: checkpoint(s) -> probabilities on labelled rows (a split of the checkpoint's run, or input=) ->
metrics, calibration (optional temperature fit on the validation split), pictures -> eval.json + report.md.

Loading, ensembles, TTA, DDP and exported files are predict's (tasks/predict.py), so eval measures exactly what
predict answers; the numbers come from evaluation/metrics.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from imgcls.cli.wrapper import task_wrapper
from imgcls.data.bad_images import readable_inputs
from imgcls.data.inputs import read_rows
from imgcls.data.labels import multi_hot
from imgcls.data.sources import DataConfigError
from imgcls.deploy.batches import eval_batches
from imgcls.deploy.calibrate import fit_temperature, nll, save_temperature, softmax
from imgcls.deploy.files import DeployedModel
from imgcls.evaluation.explain import explain, overlay
from imgcls.evaluation.metrics import classification_metrics, expected_calibration_error, reliability
from imgcls.evaluation.multilabel import evaluate_multilabel, write_multilabel_report
from imgcls.evaluation.report import mistakes_table, save_pictures, write_report
from imgcls.feeding.loaders import resolve_num_workers
from imgcls.models.checkpoint import run_dir_of
from imgcls.tasks.predict import (
    check_explainable,
    data_spec,
    describe,
    ensemble_probabilities,
    load_models,
    model_name,
    predictions_table,
    thresholds_of,
)
from imgcls.utils import atomic_write_text, get_logger, write_json_atomic
from imgcls.utils.errors import ConfigError
from imgcls.utils.plots import image_grid, save_figure

log = get_logger(__name__)
SPLITS = ("val", "test")


def _run_split(model: Any, ckpt: str) -> Path:
    """The training run's split.csv (an exported file names the checkpoint it came from)."""
    origin = model.meta["imgcls.checkpoint"] if isinstance(model, DeployedModel) else ckpt
    return run_dir_of(origin) / "split.csv"


def labelled_rows(
    cfg: DictConfig, model: Any, ckpt: str, output_dir: Path, split: str | None, key: str = "split"
) -> pd.DataFrame:
    """`input=` (a labelled CSV or a folder of class folders), else the rows of `split` in the checkpoint's run's
    split.csv (`key` names the setting that chose it); unreadable images skipped and listed (or an error)."""
    spec = data_spec(model)
    if cfg.get("input") and split is None:
        source, which = str(cfg.input), cfg.get("input_split")
    else:
        source, which = str(_run_split(model, ckpt)), split
        if not Path(source).is_file():
            raise DataConfigError(
                f"{key}={split}: the checkpoint's run has no split.csv at {source}: pass input=<labelled CSV or "
                "folder of class folders>"
            )
    table = read_rows(source, spec, which, cfg.path_column)
    if "label" not in table and "labels" not in table:
        raise DataConfigError(
            f"input='{source}' has no labels: eval needs a CSV with a label_name (or label) column of class names, "
            "or a folder of class folders (multi-label: a labels or label column of sets, or a 0/1 column per class)"
        )
    workers = resolve_num_workers(cfg.loader.get("num_workers"))
    return readable_inputs(table.reset_index(drop=True), spec, cfg.on_bad_image, workers, output_dir)


def check_settings(cfg: DictConfig, ckpts: list[str], models: list[Any]) -> None:
    """What cannot work, said before anything is predicted."""
    for key, low in (("bins", 1), ("mistakes", 0)):
        if int(cfg[key]) < low:
            raise ConfigError(f"{key}={cfg[key]}: use an integer >= {low} (see configs/eval.yaml)")
    if cfg.calibrate and (len(ckpts) > 1 or isinstance(models[0], DeployedModel)):
        raise ConfigError(
            "calibrate=true fits the temperature of one checkpoint (.ckpt): an ensemble or an exported file "
            "(its temperature is inside) cannot be calibrated; pass ckpt_path=<one .ckpt>"
        )
    if cfg.calibrate and cfg.tta:
        raise ConfigError(
            f"calibrate=true with tta={list(cfg.tta)}: the temperature scales each view's logits, so it is fitted "
            "without TTA; drop tta= (predict applies it to every view)"
        )
    if cfg.explain:
        check_explainable(models)
    if thresholds_of(models) is not None and cfg.calibrate:
        raise ConfigError(
            "calibrate=true fits one softmax temperature; a multi-label model's per-class thresholds are tuned on "
            "validation by training already: drop calibrate=true"
        )


def calibrate(
    cfg: DictConfig, ckpts: list[str], models: list[Any], table: pd.DataFrame, output_dir: Path
) -> tuple[float, int]:
    """The temperature fitted on the validation split (never on the evaluated rows) and how many images it saw;
    the model then predicts at T = 1 (eval tempers its probabilities: the same numbers, one pass)."""
    fit_rows = labelled_rows(
        cfg, models[0], ckpts[0], output_dir / "calibration", cfg.calibration_split, "calibration_split"
    )
    shared = {str(Path(p).resolve()) for p in fit_rows["path"]} & {str(Path(p).resolve()) for p in table["path"]}
    if shared:
        raise ConfigError(
            f"calibrate=true: {len(shared)} evaluated images are in the calibration split "
            f"({cfg.calibration_split}), e.g. {sorted(shared)[0]}: evaluate split=test or another input= "
            "(a temperature is never fitted on the evaluated images)"
        )
    models[0].temperature = 1.0  # fit from the model's own probabilities, not an earlier fit
    log_probs = log_probabilities(cfg, models, fit_rows, output_dir)
    if log_probs is None:  # a re-launched DDP rank: rank 0 fits (and reports)
        return 1.0, len(fit_rows)
    temperature = fit_temperature(log_probs, fit_rows["label"].to_numpy())
    log.info(f"Temperature {temperature:.4f} fitted on {len(fit_rows)} {cfg.calibration_split} images")
    return temperature, len(fit_rows)


def log_probabilities(cfg: DictConfig, models: list[Any], table: pd.DataFrame, output_dir: Path) -> np.ndarray | None:
    """predict's probabilities as logs: straight from the model for one checkpoint (exact where float32
    probabilities underflow to 0), the log of the averaged probabilities for an ensemble or exported file."""
    single = len(models) == 1 and not isinstance(models[0], DeployedModel)
    if single:
        models[0].log_space = True
    try:
        values = ensemble_probabilities(cfg, models, table, output_dir)
    finally:
        if single:
            models[0].log_space = False
    if values is None or single:
        return values
    return np.log(np.maximum(values, np.finfo(np.float32).tiny))


def explanations(
    models: list[Any],
    spec: dict[str, Any],
    table: pd.DataFrame,
    probs: np.ndarray,
    mistakes: pd.DataFrame,
    mistake_images: list[np.ndarray],
    cfg: DictConfig,
    output_dir: Path,
) -> dict[str, Path]:
    """`explain=true`: Grad-CAM overlays of the most confident mistakes and of one image per class, each for the
    class the model answered (why it said that)."""
    names, preds = spec["class_names"], probs.argmax(1)
    first = table.reset_index(drop=True).groupby("label").head(1).index.tolist()  # one image per true class
    samples = _mistake_images(spec, table, first, cfg.loader)
    out: dict[str, Path] = {}
    for title, rows, images, file in (
        ("Why: the most confident mistakes", mistakes["row"].tolist(), mistake_images, "explain_mistakes.png"),
        ("Why: one image per class", first, samples, "explain_classes.png"),
    ):
        if not rows:
            continue
        chw = np.stack(images).transpose(0, 3, 1, 2)
        maps = explain(models[0], chw, preds[rows])
        blended = [overlay(img, m) for img, m in zip(images, maps)]
        captions = [f"{names[table['label'].iloc[r]]} → {names[preds[r]]}" for r in rows]
        out[title.removeprefix("Why: ")] = save_figure(image_grid(blended, captions, title=title), output_dir / file)
    return out


def _mistake_images(spec: dict[str, Any], table: pd.DataFrame, rows: list[int], loader: Any) -> list[np.ndarray]:
    """The mistakes as the model saw them (its evaluation pre-processing), HxWxC uint8."""
    if not rows:
        return []
    out: list[np.ndarray] = []
    subset = table.iloc[rows].reset_index(drop=True)
    for images, _ in eval_batches(spec, subset, loader):
        out += list(images.transpose(0, 2, 3, 1))
    return out


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: evaluate one of {', '.join(SPLITS)} (or input=<labelled data>)")
    ckpts, models = load_models(cfg)
    check_settings(cfg, ckpts, models)
    spec, class_names = data_spec(models[0]), data_spec(models[0])["class_names"]
    log.info(describe(models[0]))
    table = labelled_rows(cfg, models[0], ckpts[0], output_dir, None if cfg.get("input") else cfg.split)
    evaluated = f"`{cfg.input}`" if cfg.get("input") else f"the {cfg.split} split"
    log.info(f"Evaluating {len(table)} labelled images ({evaluated})")

    fitted = calibrate(cfg, ckpts, models, table, output_dir) if cfg.calibrate else None
    log_probs = log_probabilities(cfg, models, table, output_dir)
    if log_probs is None:  # a re-launched DDP rank: rank 0 reports
        return {}
    thresholds = thresholds_of(models)
    if thresholds is not None:
        return _evaluate_multilabel(cfg, ckpts, models, table, np.exp(log_probs), thresholds, evaluated, output_dir)
    labels, bins = table["label"].to_numpy(), int(cfg.bins)
    probs, calibration = softmax(log_probs), None
    if fitted is not None:
        temperature, n_fit = fitted
        raw, probs = probs, softmax(log_probs, temperature)  # = predicting at T (deploy/calibrate.py)
        record = {
            "fitted_on": str(cfg.calibration_split),
            "weights": models[0].loaded_weights,  # ema or raw: the temperature is theirs
            "n": n_fit,
            "evaluated": evaluated,
            "ece_before": expected_calibration_error(raw, labels, bins),
            "ece_after": expected_calibration_error(probs, labels, bins),
            "nll_before": nll(raw, labels),
            "nll_after": nll(probs, labels),
        }
        file = save_temperature(ckpts[0], temperature, **record)
        calibration = {"temperature": temperature, **record, "file": str(file)}
        calibration["reliability_before"] = reliability(raw, labels, bins)
        log.info(
            f"Calibration on {evaluated}: ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}, "
            f"NLL {calibration['nll_before']:.4f} -> {calibration['nll_after']:.4f} (temperature saved to {file})"
        )

    metrics = classification_metrics(probs, labels, class_names, spec, bins)
    mistakes = mistakes_table(table, probs, labels, class_names, int(cfg.mistakes))
    result: dict[str, Any] = {
        "model": model_name(models[0]),
        "checkpoints": ckpts,
        "evaluated": evaluated,
        "tta": list(cfg.tta or []),
        "temperature": float(calibration["temperature"])
        if calibration
        else float(getattr(models[0], "temperature", 1.0)),
        "metrics": metrics,
        "calibration": calibration,
        "mistakes": mistakes.to_dict(orient="records"),
    }
    images = _mistake_images(spec, table, mistakes["row"].tolist(), cfg.loader)
    pictures = save_pictures(output_dir, result, class_names, images, mistakes)
    if cfg.explain:
        pictures |= explanations(models, spec, table, probs, mistakes, images, cfg, output_dir)
    rows = predictions_table(table, probs, class_names)  # predict's columns, at eval's temperature
    atomic_write_text(output_dir / "predictions.csv", rows.to_csv(index=False))
    write_json_atomic(output_dir / "eval.json", result)
    report = write_report(output_dir / "report.md", result, pictures, mistakes)
    log.info(
        f"acc {metrics['acc']:.4f}, top-5 {metrics['top5_acc']:.4f}, macro-F1 {metrics['f1']:.4f}, "
        f"ECE {metrics['ece']:.4f} on {metrics['n']} images: {report}"
    )
    return result


def _evaluate_multilabel(
    cfg: DictConfig,
    ckpts: list[str],
    models: list[Any],
    table: pd.DataFrame,
    probs: np.ndarray,
    thresholds: np.ndarray,
    evaluated: str,
    output_dir: Path,
) -> dict[str, Any]:
    spec, class_names = data_spec(models[0]), data_spec(models[0])["class_names"]
    target = multi_hot(table["labels"], len(class_names))

    def image_of(row: int) -> np.ndarray:
        return _mistake_images(spec, table, [row], cfg.loader)[0]

    metrics, pictures = evaluate_multilabel(
        probs, target, thresholds, class_names, image_of, int(cfg.mistakes), output_dir
    )
    result = {
        "model": model_name(models[0]),
        "checkpoints": ckpts,
        "evaluated": evaluated,
        "tta": list(cfg.tta or []),
        "thresholds": [float(t) for t in thresholds],
        "metrics": metrics,
    }
    rows = predictions_table(table, probs, class_names, thresholds=thresholds)
    atomic_write_text(output_dir / "predictions.csv", rows.to_csv(index=False))
    write_json_atomic(output_dir / "eval.json", result)
    report = write_multilabel_report(output_dir / "report.md", result, pictures)
    log.info(
        f"mAP {metrics['map']:.4f}, macro-F1 {metrics['f1']:.4f}, subset accuracy {metrics['acc']:.4f} on "
        f"{metrics['n']} images: {report}"
    )
    return result
