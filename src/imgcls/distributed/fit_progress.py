"""How far fit got (epochs, steps, best score), readable in the process that called `trainer.fit`.

Under `ddp_spawn` the loop runs in spawned processes; Lightning sends back the checkpoint path and the
callback metrics, but not the loop's progress, so the main process's trainer would report 0 epochs. Rank 0
puts the figures into the callback metrics at the end of fit, which travel back with the rest.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

PREFIX = "fit/"


class FitProgress(Callback):
    """`best` is the checkpoint callback that keeps the best model (None: none is kept)."""

    def __init__(self, best: ModelCheckpoint | None = None) -> None:
        self.best = best

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        best = self.best.best_model_score if self.best is not None else None
        values = {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "best_score": float("nan") if best is None else float(best),
        }
        trainer.callback_metrics.update({PREFIX + k: torch.tensor(float(v)) for k, v in values.items()})

    @staticmethod
    def read(trainer: Any) -> dict[str, Any]:
        """{'epochs', 'global_step', 'best_score'} from the callback metrics (None where fit did not get there)."""
        metrics = trainer.callback_metrics
        out: dict[str, Any] = {}
        for key in ("epochs", "global_step", "best_score"):
            value = metrics.get(PREFIX + key)
            value = None if value is None or torch.isnan(value) else float(value)
            out[key] = int(value) if value is not None and key != "best_score" else value
        return out
