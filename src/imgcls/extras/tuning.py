"""`tune=lr_find|batch_size`: Lightning's Tuner before training, its findings written to the run dir.

`batch_size` (Lightning's `scale_batch_size`) doubles `loader.batch_size` for a few steps each until a trial runs
out of memory (or `max_trials`, or the dataset's size), and trains with the largest that worked; it goes first
when both are asked for (the lr suits a batch size). `lr_find`, the learning-rate range test, trains
`num_training` steps at exponentially rising learning rates and suggests the one where the loss falls fastest.
Lightning's own `update_attr` looks for a `lr` attribute, which a `_partial_` optimizer config does not have, so
the suggestion goes into the model's optimizer factory here (and its hyper-parameter record, so the checkpoint
says which lr trained it). Lightning puts the weights back after each: training starts fresh.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from lightning.pytorch.tuner import Tuner

from imgcls.utils import atomic_write_text, get_logger
from imgcls.utils.errors import ConfigError
from imgcls.utils.plots import save_figure

log = get_logger(__name__)
TUNE_CHOICES = ("batch_size", "lr_find")  # the order they run in


def check_tune(value: Any) -> list[str]:
    """`tune`: null, one of TUNE_CHOICES or a list of them -> the ones to run, in TUNE_CHOICES order; anything
    else is a one-line error."""
    asked = [] if value is None else [value] if isinstance(value, str) else list(value)
    unknown = [v for v in asked if v not in TUNE_CHOICES]
    if unknown:
        shown = value if isinstance(value, str) else asked
        raise ConfigError(
            f"tune={shown!r}: use tune=lr_find, tune=batch_size or tune=[batch_size,lr_find] (or null, no tuning)"
        )
    return [name for name in TUNE_CHOICES if name in asked]


def _one_process(trainer: Any, name: str) -> None:
    """The Tuner runs its trials in this process only: under DDP each rank would tune on its own."""
    if trainer.world_size > 1:
        raise ConfigError(f"tune={name} runs in one process: tune with trainer=default, then train with DDP")


def find_batch_size(trainer: Any, model: Any, datamodule: Any, output_dir: Path, settings: dict[str, Any]) -> int:
    """Lightning's `scale_batch_size` on `loader.batch_size` (the DataModule's `batch_size`); the result is what
    the run trains with, and is recorded in batch_size_find.json."""
    _one_process(trainer, "batch_size")
    start = datamodule.batch_size
    found = Tuner(trainer).scale_batch_size(model, datamodule=datamodule, batch_arg_name="batch_size", **settings)
    if found is None:  # Lightning skips it under fast_dev_run
        return start
    datamodule.batch_size = datamodule.tuned_batch_size = int(found)
    atomic_write_text(output_dir / "batch_size_find.json", json.dumps({"start": start, "batch_size": int(found)}))
    log.info(f"Batch-size finder: loader.batch_size={found} (from {start}); training with it")
    return int(found)


def find_lr(trainer: Any, model: Any, datamodule: Any, output_dir: Path, settings: dict[str, Any]) -> float | None:
    """Run the range test; save lr_find.png and lr_find.json; train at the suggestion (None: no suggestion)."""
    _one_process(trainer, "lr_find")
    if not hasattr(getattr(model, "optimizer_factory", None), "keywords"):
        raise ConfigError("tune=lr_find needs a `_partial_` model.optimizer config with an lr to set")
    # The test stops at trainer.max_epochs too: with a few batches per epoch it would end after a handful of steps.
    max_epochs, trainer.fit_loop.max_epochs = trainer.fit_loop.max_epochs, max(1, int(settings["num_training"]))
    try:
        finder = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False, **settings)
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    if finder is None:  # Lightning skips the test under fast_dev_run
        return None
    suggestion = finder.suggestion()
    save_figure(finder.plot(suggest=suggestion is not None), output_dir / "lr_find.png")
    record = {"suggestion": suggestion, "lr": finder.results["lr"], "loss": finder.results["loss"]}
    atomic_write_text(output_dir / "lr_find.json", json.dumps(record, indent=1))
    if suggestion is None:
        log.warning("The LR finder found no clear slope (see lr_find.png): training at the configured lr")
        return None
    factory = model.optimizer_factory
    model.optimizer_factory = functools.partial(factory.func, *factory.args, **{**factory.keywords, "lr": suggestion})
    model.hparams["optimizer"] = {**model.hparams["optimizer"], "lr": suggestion}
    log.info(f"LR finder suggests lr={suggestion:.3g} (plot: {output_dir / 'lr_find.png'}); training with it")
    return suggestion
