"""`tune=lr_find`: Lightning's learning-rate range test (its Tuner) before training, written to the run dir.

The test trains `num_training` steps at exponentially rising learning rates and suggests the one where the loss
falls fastest. Lightning's own `update_attr` looks for a `lr` attribute, which a `_partial_` optimizer config does
not have, so the suggestion goes into the model's optimizer factory here (and its hyper-parameter record, so the
checkpoint says which lr trained it). Lightning puts the weights back after the test: training starts fresh.
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
TUNE_CHOICES = ("lr_find",)


def check_tune(value: Any) -> str | None:
    """`tune`: null or one of TUNE_CHOICES; anything else is a one-line error."""
    if value is not None and value not in TUNE_CHOICES:
        raise ConfigError(f"tune={value!r}: use tune=lr_find (or tune=null, no tuning)")
    return value


def find_lr(trainer: Any, model: Any, datamodule: Any, output_dir: Path, settings: dict[str, Any]) -> float | None:
    """Run the range test; save lr_find.png and lr_find.json; train at the suggestion (None: no suggestion)."""
    if trainer.world_size > 1:
        raise ConfigError("tune=lr_find runs in one process: tune with trainer=default, then train with DDP")
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
