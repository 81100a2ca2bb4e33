"""Training: seed -> data -> model -> callbacks -> loggers -> trainer -> (tuners) -> fit -> test -> metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from imgcls.cli.wrapper import task_wrapper
from imgcls.distributed import fit_progress
from imgcls.distributed.fit_progress import FitProgress
from imgcls.distributed.spawned import SpawnedLogging
from imgcls.extras.tuning import check_tune, find_batch_size, find_lr
from imgcls.models.checkpoint import read_checkpoint
from imgcls.resume import AtomicCheckpointIO, ResumeState, StepSeeds, continue_logs, resumed_data
from imgcls.utils import get_logger, write_json_atomic
from imgcls.utils.compat import wandb_logger_offline
from imgcls.utils.env_report import write_env_report
from imgcls.utils.instantiators import instantiate_group
from imgcls.utils.rich_utils import print_config_tree

log = get_logger(__name__)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in sorted(metrics.items())
        if getattr(v, "numel", lambda: 1)() == 1 and not k.startswith(fit_progress.PREFIX)
    }


@task_wrapper
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) one model; returns the metrics, including `cfg.optimized_metric` for sweepers."""
    output_dir = Path(cfg.paths.output_dir)
    tune = check_tune(cfg.get("tune"))
    print_config_tree(cfg, save_to=output_dir / "config_tree.log", show=bool(cfg.get("print_config")))

    env = write_env_report(output_dir)
    log.info(
        f"Environment: torch {env['torch']}, CUDA available: {env['cuda_available']}, GPUs: {env['gpus'] or 'none'}"
        f" (details in env.txt)"
    )

    log.info(f"Seeding everything with seed={cfg.seed}")
    L.seed_everything(cfg.seed, workers=True)

    checkpoint = read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule = hydra.utils.instantiate(cfg.data, **resumed_data(checkpoint))
    log.info(f"Classes ({datamodule.num_classes}): {datamodule.class_names}")

    log.info(f"Instantiating model <{cfg.model._target_}> ({cfg.model.name})")
    # A resumed run's weights come from its checkpoint: no hub or weights file is needed again.
    fresh = {"pretrained": False, "pretrained_path": None} if cfg.get("ckpt_path") else {}
    model = hydra.utils.instantiate(cfg.model, data_spec=datamodule.spec, mixup=cfg.augment.get("mixup"), **fresh)

    configured = instantiate_group(cfg.get("callbacks"), "callback")
    # The best model is the `callbacks.model_checkpoint` entry (none when it is switched off). It goes first: under
    # ddp_spawn Lightning hands the best path back to `trainer.checkpoint_callback`, the first ModelCheckpoint.
    best_checkpoint = configured.pop("model_checkpoint", None)
    # StepSeeds + ResumeState: every draw depends on the step, the checkpoint carries the rest (exact resume).
    callbacks = [
        SpawnedLogging(),  # under ddp_spawn: rank 0 logs to the run's log too
        *filter(None, [best_checkpoint]),
        *configured.values(),
        FitProgress(best_checkpoint),
        StepSeeds(cfg.seed),
        ResumeState(),
    ]
    continue_logs(cfg, output_dir, checkpoint)
    del checkpoint  # its weights: Lightning reads the file again in fit
    loggers = list(instantiate_group(cfg.get("logger"), "logger").values())
    if not loggers:  # Lightning refuses an LR monitor without a logger; with logger=none there is nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]

    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    # Checkpoints written to a temp name and renamed: a kill mid-save never leaves a truncated last.ckpt.
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    for lg in loggers:
        lg.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "env": env})

    resumed = bool(cfg.get("ckpt_path"))  # a resumed run keeps the batch size and lr it was tuned to
    if "batch_size" in tune and not resumed:
        log.info("Running the batch-size finder (tune=batch_size)")
        find_batch_size(
            trainer, model, datamodule, output_dir, OmegaConf.to_container(cfg.batch_size_find, resolve=True)
        )
    if "lr_find" in tune and not resumed:
        log.info("Running the learning-rate range test (tune=lr_find)")
        find_lr(trainer, model, datamodule, output_dir, OmegaConf.to_container(cfg.lr_find, resolve=True))

    log.info("Starting training" + (f" from checkpoint {cfg.ckpt_path}" if cfg.get("ckpt_path") else ""))
    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    final = _scalars(trainer.callback_metrics)
    progress = FitProgress.read(trainer)  # epochs, global_step, best_score (also under ddp_spawn)
    if progress["best_score"] is not None:  # `<monitor>_best` (what sweeps optimise) for any monitor; the model
        final.setdefault(f"{cfg.monitor}_best", progress["best_score"])  # logs val/f1_best, val/acc_best itself

    best_path = best_checkpoint.best_model_path if best_checkpoint is not None else ""
    tested: dict[str, float] = {}
    if cfg.get("test") and datamodule.has_test:
        log.info("Testing the best checkpoint" if best_path else "Testing the final weights")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best_path or None)
        tested = {k: v for k, v in _scalars(trainer.callback_metrics).items() if k.startswith(("test/", "test_ema/"))}

    metrics = {
        "final": final,
        "best": {k: v for k, v in final.items() if k.endswith("_best")},
        "test": tested,
        "best_checkpoint": best_path or None,
        **progress,
    }
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "metrics.json", metrics)
    _report(output_dir, best_path, loggers)
    return {**final, **tested}


def _report(output_dir: Path, best_path: str, loggers: list) -> None:
    log.info("Done. Outputs:")
    for name, path in (
        ("run dir", output_dir),
        ("metrics", output_dir / "metrics.json"),
        ("metrics log", output_dir / "metrics.csv"),
        ("split", output_dir / "split.csv"),
        ("lr finder", output_dir / "lr_find.png"),
        ("batch size", output_dir / "batch_size_find.json"),
        ("skipped images", output_dir / "bad_images.csv"),
        ("best checkpoint", best_path),
        ("confusion matrix", output_dir / "confusion_matrix.png"),
        ("per-class scores", output_dir / "per_class.csv"),
        ("environment", output_dir / "env.txt"),
        ("config", output_dir / ".hydra" / "config.yaml"),
    ):
        if path and Path(path).exists():
            log.info(f"  {name:16s} {path}")
    for lg in loggers:
        if isinstance(lg, WandbLogger) and wandb_logger_offline(lg) and lg.experiment is not None:
            run = Path(lg.experiment.dir).parent  # .../wandb/offline-run-<time>-<id>; a resumed run has one per part
            parts = sorted(run.parent.glob(f"offline-run-*-{lg.experiment.id}"))
            target = run if len(parts) <= 1 else run.parent / f"offline-run-*-{lg.experiment.id}"
            log.info(f"W&B ran offline (no credentials found). Upload later with: wandb sync {target}")
