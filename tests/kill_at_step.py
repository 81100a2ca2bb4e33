"""A training run that dies mid-flight: add `+callbacks.kill._target_=kill_at_step.KillAtStep` (tests/ on
PYTHONPATH) and set KILL_AT_STEP=N: SIGKILL right after optimizer step N, with no cleanup and no final
checkpoint, as a crash, an OOM kill or a pre-empted node leaves a run. The step comes from the environment so
the killed command and the resuming one have the same overrides (what `ckpt_path=last` matches on)."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        step = os.environ.get("KILL_AT_STEP")
        if step and trainer.global_step >= int(step):
            os.kill(os.getpid(), signal.SIGKILL)
