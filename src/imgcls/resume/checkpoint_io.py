"""Lightning CheckpointIO that writes checkpoints atomically (temp file + fsync + rename).

Lightning's own `TorchCheckpointIO` opens the final path and writes into it: a kill or a full disk mid-write
leaves a truncated `last.ckpt` that the next `ckpt_path=...` would try to resume from. Here the previous
checkpoint stays intact until the new one is complete.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from imgcls.utils.io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())
