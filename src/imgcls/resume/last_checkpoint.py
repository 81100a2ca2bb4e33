"""`checkpoints/last.ckpt`: the newest state to resume from, written only where a resume is exact.

Lightning's ModelCheckpoint(monitor=None) as `last.ckpt` has three traps for resuming (Lightning 2.6):
- `save_last` of the monitored checkpoint is refreshed only in epochs that improved the metric: stale;
- a step checkpoint (`every_n_train_steps`) falling on an epoch's last batch is written *before* that epoch's
  validation, and skips the epoch-end save (same global step); a resumed run then treats the epoch as done and
  never validates it (its best score, EarlyStopping check and epoch scheduler step are lost);
- whenever validation is not exactly once per epoch it saves at validation end instead, i.e. not every epoch
  (`check_val_every_n_epoch`) or mid-epoch, possibly inside a gradient-accumulation window (`val_check_interval`).
So this one saves at every epoch's end (after validation and the other epoch-end hooks) and, with
`every_n_train_steps`, at steps inside an epoch, never at its last batch.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from imgcls.utils.compat import epoch_last_batch_reached, save_checkpoint_now


class LastCheckpoint(ModelCheckpoint):
    def __init__(self, dirpath: str, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
            every_n_train_steps=every_n_train_steps,
            save_on_train_epoch_end=True,
            **kwargs,
        )

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        if epoch_last_batch_reached(trainer):  # the epoch's last batch: validation to come
            return
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        save_checkpoint_now(self, trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        pass  # mid-epoch or every few epochs: not a resumable point (see the module docstring)
