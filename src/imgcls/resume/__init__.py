"""Exact resume: `python train.py ... ckpt_path=last` continues a killed run as if it had never stopped.

The pieces, each behind one name (imported lazily, so `--help` does not pay for Lightning):
- `resolve_resume` (runs.py): `ckpt_path=last|<run dir>` -> that run's checkpoint and run dir, before Hydra starts;
- `EpochSampler` (sampler.py): every training draw a function of (seed, epoch, position);
- `StepSeeds` (step_seeds.py): process RNGs reseeded before every step (dropout, mixup);
- `ResumableDataLoader` (loader.py): a loader that begins mid-epoch;
- `ResumeState` (state.py): what the checkpoint carries beyond Lightning's state (data position, running bests);
  `resumed_data`: the pre-processing a run that began before `data.resize` keeps;
- `LastCheckpoint` (last_checkpoint.py): `last.ckpt` written only where a resume is exact;
- `AtomicCheckpointIO` (checkpoint_io.py): no truncated checkpoint after a kill;
- `CSVLogger`, `continue_logs` (csv_logger.py, logs.py): the resumed run's metrics.csv and W&B run continue.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AtomicCheckpointIO": "checkpoint_io",
    "CSVLogger": "csv_logger",
    "EpochSampler": "sampler",
    "LastCheckpoint": "last_checkpoint",
    "ResumableDataLoader": "loader",
    "ResumeState": "state",
    "StepSeeds": "step_seeds",
    "continue_logs": "logs",
    "resolve_resume": "runs",
    "resumed_data": "state",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'imgcls.resume' has no attribute '{name}'")
    return getattr(importlib.import_module(f"imgcls.resume.{_EXPORTS[name]}"), name)
